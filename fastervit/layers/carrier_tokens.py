"""Carrier tokens (chapter 5): a few pooled tokens per window that summarise it.

A stage with hierarchical attention pools its (padded) feature map into a grid of
``ct_size x ct_size`` carrier tokens per window. The carrier tokens of all windows attend to
each other (global, but cheap: there are few of them), then travel with their window's
tokens through window attention. Two orders of the same tokens are used:

* window order ``(B, nh, nw, ct, ct, C)``: the tokens of each window are contiguous, as the
  window attention needs them;
* raster order ``(B, nh*ct, nw*ct, C)``: one image-like grid, as the carrier-token attention
  and its position embedding need them.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.layers.windows import Grid


def pooling_geometry(side: int, window_size: int, ct_size: int) -> tuple[int, int, int]:
    """Average-pooling ``(out, kernel, stride)`` that turns one side of a map into carrier tokens.

    ``out = ct_size * side / window_size`` tokens, ``stride = side // out`` and
    ``kernel = side - (out - 1) * stride``, so that the pooling windows tile the whole side
    (they overlap when ``window_size`` is not a multiple of ``ct_size``: at 224 px, stage 3
    pools a 14-pixel side with kernel 5 and stride 3 into 4 tokens).
    ``side`` must be a multiple of ``window_size`` (pad first).
    """
    out = ct_size * side // window_size
    stride = side // out
    return out, side - (out - 1) * stride, stride


def windows_to_raster(ct: torch.Tensor, windows: Grid, ct_size: int) -> torch.Tensor:
    """Reorder carrier tokens from window order to raster order.

    Shapes: ``(B, nh*nw*ct*ct, C) -> (B, nh*ct * nw*ct, C)``.
    """
    B, T, C = ct.shape
    nh, nw = windows
    ct = ct.view(B, nh, nw, ct_size, ct_size, C).permute(0, 1, 3, 2, 4, 5)  # (B, nh, ct, nw, ct, C)
    return ct.reshape(B, T, C)


def raster_to_windows(ct: torch.Tensor, windows: Grid, ct_size: int) -> torch.Tensor:
    """Reorder carrier tokens from raster order to window order (inverse of the above).

    Shapes: ``(B, nh*ct * nw*ct, C) -> (B, nh*nw*ct*ct, C)``.
    """
    B, T, C = ct.shape
    nh, nw = windows
    ct = ct.view(B, nh, ct_size, nw, ct_size, C).permute(0, 1, 3, 2, 4, 5)  # (B, nh, nw, ct, ct, C)
    return ct.reshape(B, T, C)


class TokenInitializer(nn.Module):
    """Initial carrier tokens: depthwise conv3x3 (a positional encoding), then average pooling.

    The same convolution is registered twice, as ``pos_embed`` and as
    ``to_global_feature.pos``: the released checkpoints hold both keys.

    Shapes: ``forward(x, window_size)``: ``(B, C, H, W) -> (B, nh*nw*ct*ct, C)`` in window
    order, for H, W multiples of ``window_size`` (``nh = H / window_size``).
    """

    def __init__(self, dim: int, ct_size: int) -> None:
        super().__init__()
        self.ct_size = ct_size
        self.pos_embed = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.to_global_feature = nn.Sequential()
        self.to_global_feature.add_module("pos", self.pos_embed)

    def forward(self, x: torch.Tensor, window_size: int) -> torch.Tensor:
        _, _, H, W = x.shape
        _, kernel_h, stride_h = pooling_geometry(H, window_size, self.ct_size)
        _, kernel_w, stride_w = pooling_geometry(W, window_size, self.ct_size)
        x = self.to_global_feature(x)
        x = F.avg_pool2d(x, kernel_size=(kernel_h, kernel_w), stride=(stride_h, stride_w))
        ct = x.flatten(2).transpose(1, 2)  # (B, nh*ct * nw*ct, C), raster order
        return raster_to_windows(ct, (H // window_size, W // window_size), self.ct_size)

    def extra_repr(self) -> str:
        return f"ct_size={self.ct_size}"
