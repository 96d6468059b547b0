"""A light UperNet head and the segmentation model around a FasterViT backbone (chapter 12).

Xiao et al., "Unified Perceptual Parsing for Scene Understanding" (ECCV 2018), semantic
segmentation branch:

1. a *pyramid pooling module* (PPM, from PSPNet) on the last stage: average-pool the map to
   ``s x s`` cells for each scale ``s`` (1, 2, 3, 6), project each with a 1x1 conv, upsample
   back (bilinear), concatenate with the map and fuse with a 3x3 conv; it gives the coarsest
   level an image-wide context;
2. an FPN (:mod:`fastervit.dense.fpn`) over the first three stages and the PPM's output;
3. every FPN level upsampled to stride 4 and concatenated, fused by a 3x3 conv, classified
   per pixel by a 1x1 conv; :class:`SegmentationModel` upsamples the logits to the input size.

All convolutions are conv-BN-ReLU (:class:`~fastervit.dense.fpn.ConvNormAct`) except the
classifier. "Light": one width ``channels`` everywhere (UperNet uses 512 on ResNets).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.dense.fpn import FPN, ConvNormAct
from fastervit.model import FasterViT


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """Pyramid pooling module: the map plus its average over ``s x s`` cells at each scale.

    In training mode the scale-1 branch normalises one value per channel and image, so it
    needs batches of at least two images (as any BatchNorm over a 1x1 map does).

    Shapes: ``(B, C_in, h, w) -> (B, channels, h, w)``.
    """

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvNormAct(in_channels, channels, 1)) for s in pool_scales
        )
        self.bottleneck = ConvNormAct(in_channels + len(self.pool_scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [_resize(stage(x), size) for stage in self.stages]  # each (B, channels, h, w)
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperNetHead(nn.Module):
    """PPM on the last stage, FPN over all four, fusion of the levels, per-pixel classifier.

    Args:
        in_channels: widths of the four backbone stages, finest first.
        channels: the head's width (every FPN level and the fused map).
        num_classes: classes per pixel (background included).
        pool_scales: grid sizes of the pyramid pooling.

    Shapes: ``forward([(B, C_i, H/2**(i+2), W/2**(i+2)) for i in 0..3]) -> (B, num_classes,
    H/4, W/4)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.fpn = FPN([*in_channels[:-1], channels], channels, norm=True)
        self.fuse = ConvNormAct(len(in_channels) * channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        levels = self.fpn([*features[:-1], self.ppm(features[-1])])  # each (B, channels, H_i, W_i)
        size = levels[0].shape[-2:]
        fused = torch.cat(
            [levels[0]] + [_resize(m, size) for m in levels[1:]], dim=1
        )  # (B, 4*channels, H/4, W/4)
        return self.classifier(self.fuse(fused))


class SegmentationModel(nn.Module):
    """A FasterViT backbone with an UperNet head: per-pixel class logits at the input size.

    The backbone's ``forward_intermediates(x, intermediates_only=True)`` gives the four stage
    maps; its final norm and classifier are not used (build it with ``num_classes=0`` to leave
    the classifier out).

    Args:
        backbone: a :class:`~fastervit.model.FasterViT`.
        num_classes: classes per pixel (background included).
        channels: width of the head.
        pool_scales: grid sizes of the pyramid pooling module.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes, H, W)`` for H and W divisible by 32.
    """

    def __init__(
        self,
        backbone: FasterViT,
        num_classes: int,
        channels: int = 128,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.decode_head = UperNetHead(backbone.dims, channels, num_classes, pool_scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_intermediates(x, intermediates_only=True)  # 4 maps, strides 4-32
        logits = self.decode_head(features)  # (B, K, H/4, W/4)
        return _resize(logits, x.shape[-2:])

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        """The backbone's exclusions from weight decay (its position MLPs)."""
        return self.backbone.no_weight_decay_keywords()
