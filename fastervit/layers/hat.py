"""The hierarchical attention block (chapter 6).

Each block first lets the carrier tokens of all windows attend to each other, then runs
attention inside every window over that window's tokens *and* its carrier tokens, so that
information flows between windows through the carrier tokens at little cost.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.layers.attention import WindowAttention
from fastervit.layers.carrier_tokens import raster_to_windows, windows_to_raster
from fastervit.layers.drop import DropPath, layer_scale_parameter
from fastervit.layers.mlp import Mlp
from fastervit.layers.position import PositionEmbeddingMLP
from fastervit.layers.windows import Grid


def _scaled(gamma: nn.Parameter | None, x: torch.Tensor) -> torch.Tensor:
    return x if gamma is None else gamma * x


class HAT(nn.Module):
    """A transformer block over windows, with optional carrier tokens (hierarchical attention).

    Without carrier tokens this is a pre-norm transformer block in each window. With them,
    for carrier tokens ``ct`` and window tokens ``x``::

        ct = ct + pos(ct);  ct = ct + g1 * attn(norm(ct));  ct = ct + g2 * mlp(norm(ct))
        x  = [ct of the window, x];  x = x + g3 * attn(norm1(x));  x = x + g4 * mlp(norm2(x))

    and in the last block of a stage (``propagate``) the carrier tokens are upsampled to the
    window and added to its tokens.

    ``windows`` (``nh, nw``), the grid of windows the block is built for, creates the
    carrier-token modules and sets their buffers' shapes; None builds a plain window block.
    The forward pass uses carrier tokens when it is given some: the stage passes none where
    the actual map holds a single window, so any resolution works.

    Shapes: ``forward(x, ct, windows)``: x ``(B*nh*nw, w*w, C)``, ct ``(B, nh*nw*ct*ct, C)`` or
    None; returns both with the same shapes.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        windows: Grid | None = None,
        ct_size: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        propagate: bool = False,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.ct_size = ct_size
        self.propagate = propagate
        carrier = windows is not None
        # The bias buffer's size at the build resolution, where a single window has no carriers.
        num_carrier = ct_size**2 if carrier and windows[0] * windows[1] > 1 else 0
        attn_kwargs = dict(
            qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop, fused=fused_attn
        )
        hidden = int(dim * mlp_ratio)

        self.gamma3 = layer_scale_parameter(dim, layer_scale)
        self.gamma4 = layer_scale_parameter(dim, layer_scale)
        self.pos_embed = PositionEmbeddingMLP(dim, (window_size, window_size))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, (window_size, window_size), num_carrier, **attn_kwargs)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden, drop)
        if carrier:
            ct_grid = (windows[0] * ct_size, windows[1] * ct_size)
            self.gamma1 = layer_scale_parameter(dim, layer_scale)
            self.gamma2 = layer_scale_parameter(dim, layer_scale)
            self.hat_norm1 = nn.LayerNorm(dim)
            self.hat_norm2 = nn.LayerNorm(dim)
            self.hat_attn = WindowAttention(dim, num_heads, ct_grid, **attn_kwargs)
            self.hat_mlp = Mlp(dim, hidden, drop)
            self.hat_drop_path = DropPath(drop_path)
            self.hat_pos_embed = PositionEmbeddingMLP(dim, ct_grid)
        self.has_carrier_tokens = carrier

    def _carrier_attention(self, ct: torch.Tensor, windows: Grid) -> torch.Tensor:
        """Global attention among the carrier tokens, in raster order. ``(B, T, C) -> (B, T, C)``."""
        grid = (windows[0] * self.ct_size, windows[1] * self.ct_size)
        ct = self.hat_pos_embed(windows_to_raster(ct, windows, self.ct_size), grid)
        ct = ct + self.hat_drop_path(_scaled(self.gamma1, self.hat_attn(self.hat_norm1(ct), grid)))
        ct = ct + self.hat_drop_path(_scaled(self.gamma2, self.hat_mlp(self.hat_norm2(ct))))
        return raster_to_windows(ct, windows, self.ct_size)

    def forward(
        self, x: torch.Tensor, ct: torch.Tensor | None, windows: Grid
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.window_size
        B_, N, C = x.shape
        x = self.pos_embed(x, (w, w))
        num_carrier = 0
        if ct is not None:
            if not self.has_carrier_tokens:
                raise ValueError("this HAT block was built without carrier tokens (windows=None)")
            B, T, _ = ct.shape
            ct = self._carrier_attention(ct, windows)
            num_carrier = self.ct_size**2
            x = torch.cat((ct.reshape(B_, num_carrier, C), x), dim=1)  # (B*nh*nw, n + w*w, C)
        x = x + self.drop_path(_scaled(self.gamma3, self.attn(self.norm1(x), (w, w), num_carrier)))
        x = x + self.drop_path(_scaled(self.gamma4, self.mlp(self.norm2(x))))
        if ct is not None:
            ct_windows, x = x.split([num_carrier, N], dim=1)
            ct = ct_windows.reshape(B, T, C)
            if self.propagate:
                # Each carrier token covers a (w/ct x w/ct) patch of its window: nearest upsampling.
                image = ct_windows.transpose(1, 2).reshape(B_, C, self.ct_size, self.ct_size)
                image = F.interpolate(image, size=(w, w), mode="nearest").flatten(2).transpose(1, 2)
                # Scaled by gamma1, the carrier attention's layer scale: the release reuses it
                # here, so its checkpoints hold no parameter of the propagation's own.
                x = x + _scaled(self.gamma1, image)
        return x, ct
