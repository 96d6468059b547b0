"""The stem (chapter 2): two strided 3x3 convolutions take the image to 1/4 resolution."""

import torch
from torch import nn


class Stem(nn.Module):
    """Image to feature map at stride 4.

    conv3x3/s2 (in_chans -> in_dim) -> BN -> ReLU -> conv3x3/s2 (in_dim -> dim) -> BN -> ReLU.
    The BatchNorms use eps=1e-4, as the released checkpoints expect, and the second one
    normalises the stem's output width ``dim``.

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
        return self.conv_down(x)
