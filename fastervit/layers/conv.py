"""Convolutional stages (chapter 3): the residual conv block and the downsampler."""

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.layers.drop import DropPath, layer_scale_parameter


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a feature map, at every pixel.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def fold_batchnorm(
    conv: nn.Conv2d, bn: nn.BatchNorm2d, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one convolution equal to ``scale * bn(conv(x))`` in eval mode.

    In eval mode a BatchNorm is a fixed per-channel affine map, ``bn(z) = (z - mean) * s + beta``
    with ``s = gamma / sqrt(var + eps)``, so the folded weight is ``W * s`` per output channel
    and the bias ``(b - mean) * s + beta``; a layer scale multiplies both. Differentiable.

    Shapes: ``-> (C_out, C_in / groups, k, k), (C_out,)``.
    """
    s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    bias = (
        (conv.bias - bn.running_mean) * s + bn.bias
        if conv.bias is not None
        else bn.bias - bn.running_mean * s
    )
    weight = conv.weight * s.view(-1, 1, 1, 1)
    if scale is not None:
        weight, bias = weight * scale.view(-1, 1, 1, 1), bias * scale
    return weight, bias


def folds_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` runs its BatchNorms folded into its convolutions: in eval mode,
    except while ``torch.jit.trace`` records it (FLOP counters trace the model as written)."""
    return not module.training and not torch.jit.is_tracing()


class ConvBlock(nn.Module):
    """Residual block ``x + DropPath(gamma * BN(conv(GELU(BN(conv(x))))))``.

    The input is added after the second BatchNorm. ``gamma`` (a per-channel layer scale) exists
    only when ``layer_scale`` is a number. In eval mode both BatchNorms and ``gamma`` are folded
    into the convolutions (:func:`fold_batchnorm`): the same numbers without two passes over
    the map.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale: float | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.gamma = layer_scale_parameter(dim, layer_scale)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if folds_batchnorm(self):
            w1, b1 = fold_batchnorm(self.conv1, self.norm1)
            w2, b2 = fold_batchnorm(self.conv2, self.norm2, self.gamma)
            return x + F.conv2d(self.act1(F.conv2d(x, w1, b1, padding=1)), w2, b2, padding=1)
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class Downsample(nn.Module):
    """Halve the resolution and double the width: LayerNorm2d, then conv3x3 stride 2.

    Shapes: ``(B, C, H, W) -> (B, 2C, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim)
        # A Sequential of one conv: the release's checkpoints name its weight reduction.0.weight.
        self.reduction = nn.Sequential(
            nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x))
