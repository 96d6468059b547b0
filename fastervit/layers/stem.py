"""The stem (chapter 2): two strided 3x3 convolutions take the image to 1/4 resolution."""

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.layers.conv import fold_batchnorm, folds_batchnorm


class Stem(nn.Module):
    """Image to feature map at stride 4.

    conv3x3/s2 (in_chans -> in_dim) -> BN -> ReLU -> conv3x3/s2 (in_dim -> dim) -> BN -> ReLU.
    The BatchNorms use eps=1e-4, as the released checkpoints expect, and the second one
    normalises the stem's output width ``dim``. In eval mode the BatchNorms are folded into
    the convolutions (:func:`~fastervit.layers.conv.fold_batchnorm`), and on the CPU the
    image is laid out channels-last first, which oneDNN convolves without reordering it; the
    layout carries through the conv stages (chapter 9 measures both).

    Shapes: ``(B, in_chans, H, W) -> (B, dim, H/4, W/4)`` for H, W divisible by 4.
    """

    def __init__(self, in_chans: int = 3, in_dim: int = 64, dim: int = 96) -> None:
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(in_dim, eps=1e-4),
            nn.ReLU(),
            nn.Conv2d(in_dim, dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(dim, eps=1e-4),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not folds_batchnorm(self):
            return self.conv_down(x)
        conv1, bn1, act1, conv2, bn2, act2 = self.conv_down
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x = act1(F.conv2d(x, *fold_batchnorm(conv1, bn1), stride=2, padding=1))
        return act2(F.conv2d(x, *fold_batchnorm(conv2, bn2), stride=2, padding=1))
