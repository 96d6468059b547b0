"""The feature-pyramid neck (chapter 12): one width and strong semantics at every stride.

Lin et al., "Feature Pyramid Networks for Object Detection" (CVPR 2017). A backbone's
stages get coarser and semantically stronger; an FPN gives every stage the semantics of
the deepest one:

* a *lateral* 1x1 convolution brings every stage ``C_i`` to the same width ``d``;
* a *top-down* pass walks from the coarsest map to the finest, upsampling the running map
  to the next finer size (nearest neighbour) and adding it to that level's lateral map;
* a 3x3 *output* convolution on every merged map smooths the aliasing the upsampling left.

With FasterViT's four stages at strides 4, 8, 16 and 32 the outputs ``P_2 ... P_5`` keep
those strides, all with ``d`` channels. The paper uses plain convolutions; segmentation
heads such as UperNet add BatchNorm and ReLU after each (``norm=True``).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvNormAct(nn.Sequential):
    """``conv -> BatchNorm -> ReLU``, the unit of segmentation heads (no conv bias: BN has one).

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H, W)`` (``padding = kernel_size // 2``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: bool) -> nn.Module:
    if norm:
        return ConvNormAct(in_channels, out_channels, kernel_size)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class FPN(nn.Module):
    """Feature pyramid over a backbone's maps, finest first.

    Args:
        in_channels: width of each input map, finest first (FasterViT-0: 64, 128, 256, 512).
        out_channels: the common width ``d`` of every output map.
        norm: conv-BN-ReLU units instead of plain convolutions (as in UperNet heads).

    Shapes: ``forward([(B, C_i, H_i, W_i) for each level]) -> [(B, d, H_i, W_i) for each
    level]``; each map may have any size (the top-down pass upsamples to the next map's size).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, norm: bool = False) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.lateral_convs = nn.ModuleList(_conv(c, out_channels, 1, norm) for c in in_channels)
        self.output_convs = nn.ModuleList(_conv(out_channels, out_channels, 3, norm) for _ in in_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.lateral_convs):
            raise ValueError(
                f"FPN built for {len(self.lateral_convs)} levels (widths {self.in_channels}), "
                f"got {len(features)} maps"
            )
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]  # each (B, d, H_i, W_i)
        for i in range(len(laterals) - 1, 0, -1):
            finer = laterals[i - 1]
            laterals[i - 1] = finer + F.interpolate(laterals[i], size=finer.shape[-2:], mode="nearest")
        return [conv(m) for conv, m in zip(self.output_convs, laterals)]
