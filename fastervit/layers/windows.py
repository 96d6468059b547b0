"""Grids, and splitting a feature map into non-overlapping windows and back (chapter 4)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Grid = tuple[int, int]  # (rows, columns): of pixels, of windows or of tokens


def as_grid(size: int | Sequence[int]) -> Grid:
    """``n`` as ``(n, n)``, a pair ``(h, w)`` as a tuple of ints (e.g. a resolution)."""
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"expected one size or a pair (height, width), got {list(size)}")
    height, width = size
    return int(height), int(width)


def pad_to_windows(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Zero-pad the right and bottom of a map so that both sides are multiples of the window.

    Shapes: ``(B, C, H, W) -> (B, C, ceil(H/w)*w, ceil(W/w)*w)``.
    """
    pad_b = -x.shape[2] % window_size
    pad_r = -x.shape[3] % window_size
    if pad_b or pad_r:
        x = F.pad(x, (0, pad_r, 0, pad_b))
    return x


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut a map into windows of ``w x w`` pixels, each a sequence of tokens.

    Windows are ordered row-major over the map, tokens row-major inside each window.

    Shapes: ``(B, C, H, W) -> (B * H/w * W/w, w*w, C)``; H and W must be multiples of w.
    """
    B, C, H, W = x.shape
    x = x.view(B, C, H // window_size, window_size, W // window_size, window_size)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, H/w, W/w, w, w, C)
    return x.flatten(0, 2).flatten(1, 2)  # (B*nh*nw, w*w, C); unlike a -1, fine for an empty batch


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Shapes: ``(B * H/w * W/w, w*w, C) -> (B, C, H, W)``.
    """
    C = windows.shape[-1]
    nh, nw = height // window_size, width // window_size
    B = windows.shape[0] // nh // nw  # spelled out: view's -1 is ambiguous for an empty batch
    x = windows.view(B, nh, nw, window_size, window_size, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, H/w, w, W/w, w)
    return x.reshape(B, C, height, width)
