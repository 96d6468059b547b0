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

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values per head. Shapes: ``(B', N, C) -> 3 x (B', heads, N, head_dim)``."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def _softmax(self, q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T * scale + bias)``. Shapes: ``-> (B', heads, N, N)``."""
        return ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)

    def attention_weights(self, x: torch.Tensor, grid: Grid, num_carrier: int = 0) -> torch.Tensor:
        """The attention weights that :meth:`forward` applies to the same input.

        Row ``i`` says how much query ``i`` takes from every key; each row sums to 1. The
        fused kernel never forms these weights, so they are computed here the explicit way
        (chapters 4 to 6 look at them).

        Shapes: ``(B', n + gh*gw, C) -> (B', heads, n + gh*gw, n + gh*gw)``, carriers first.
        """
        q, k, _ = self._heads(x)
        return self._softmax(q, k, self.pos_emb_funct(grid, num_carrier).to(q.dtype))

    def forward(self, x: torch.Tensor, grid: Grid, num_carrier: int = 0) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self._heads(x)  # each (B, heads, N, head_dim)
        bias = self.pos_emb_funct(grid, num_carrier).to(q.dtype)  # (1, heads, N, N)
        if self.fused:
            drop = self.attn_drop.p if self.training else 0.0
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        else:
            x = self.attn_drop(self._softmax(q, k, bias)) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


def attention_modules(model: nn.Module) -> list[WindowAttention]:
    """Every :class:`WindowAttention` inside ``model``, e.g. to switch their ``fused`` flag."""
    return [m for m in model.modules() if isinstance(m, WindowAttention)]
