"""Window attention (chapter 4): multi-head self-attention inside each window.

Every attention adds a continuous relative position bias to its logits; the bias comes from
:mod:`fastervit.layers.position`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.layers.linear import Linear
from fastervit.layers.position import ContinuousPositionBias
from fastervit.layers.windows import Grid


class WindowAttention(nn.Module):
    """Multi-head self-attention over the tokens of a window, with a continuous position bias.

    ``softmax(q k^T * scale + bias) v``, then an output projection. With ``fused=True`` the
    same product runs in :func:`torch.nn.functional.scaled_dot_product_attention` with the
    bias as its additive mask; ``fused=False`` spells it out (a test checks they agree).

    Shapes: ``forward(x, grid, num_carrier)``: ``(B', n + gh*gw, C) -> (B', n + gh*gw, C)``
    where the first ``n = num_carrier`` tokens carry no position bias.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: Grid,
        num_carrier: int = 0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.fused = fused
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # The release's name for the bias module: its checkpoints hold attn.pos_emb_funct.* keys.
        self.pos_emb_funct = ContinuousPositionBias(grid, num_heads, num_carrier)

    def forward(self, x: torch.Tensor, grid: Grid, num_carrier: int = 0) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        bias = self.pos_emb_funct(grid, num_carrier).to(q.dtype)  # (1, heads, N, N)
        if self.fused:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale + bias
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


def attention_modules(model: nn.Module) -> list[WindowAttention]:
    """Every :class:`WindowAttention` inside ``model``, e.g. to switch their ``fused`` flag."""
    return [m for m in model.modules() if isinstance(m, WindowAttention)]
