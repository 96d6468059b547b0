"""Window attention with learned position biases (chapter 4).

Two small MLPs turn coordinates into position information:

* :class:`PositionEmbeddingMLP` maps the absolute coordinates of a token grid to an
  embedding that is added to the tokens (every transformer block has one);
* :class:`ContinuousPositionBias` maps the log-spaced relative offsets between tokens of a
  window to a per-head bias that is added to the attention logits (Swin V2's continuous
  relative position bias).

Both depend only on their weights and on the grid's size, so in inference they are computed
once and kept until the weights or the grid change.
"""

from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import nn

Grid = tuple[int, int]


def _mlp(out_features: int) -> nn.Sequential:
    """The coordinate MLP shared by both position modules: 2 -> 512 (ReLU) -> out, no last bias."""
    return nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, out_features, bias=False))


def _inference_cached(module: nn.Module, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Return ``compute()``, reusing the last result while nothing it depends on has changed.

    The cache is used only in inference (eval mode, no autograd, not while compiling or
    exporting). Its key holds the grid, the device, dtype and version counter of every
    parameter, so loading a checkpoint, an in-place update (EMA) or ``.to()`` invalidates it.
    """
    parameters = list(module.parameters())
    uncached = module.training or torch.is_grad_enabled() or torch.compiler.is_compiling()
    # Parameters created under torch.inference_mode() have no version counter to key on.
    if uncached or any(p.is_inference() for p in parameters):
        return compute()
    params = tuple((p.device, p.dtype, p._version) for p in parameters)
    full_key = (key, params)
    cache = module.__dict__.setdefault("_inference_cache", {})
    if full_key not in cache:
        cache.clear()
        cache[full_key] = compute()
    return cache[full_key]


def relative_coords_table(grid: Grid) -> torch.Tensor:
    """Log-spaced relative offsets between the cells of a ``gh x gw`` grid.

    Offsets ``d`` in ``[-(g-1), g-1]`` are normalised to ``[-8, 8]`` by ``8 d / (g-1)`` and
    mapped by ``sign(x) log2(1 + |x|) / log2(8)``, which stretches small offsets and
    compresses large ones.

    Shapes: ``-> (1, 2gh-1, 2gw-1, 2)``, the last axis holding (row, column) offsets.
    """
    tables = []
    for g in grid:
        offsets = torch.arange(-(g - 1), g, dtype=torch.float32) / max(g - 1, 1) * 8
        tables.append(torch.sign(offsets) * torch.log2(offsets.abs() + 1.0) / 3.0)
    table = torch.stack(torch.meshgrid(tables[0], tables[1], indexing="ij"), dim=-1)
    return table.unsqueeze(0)


def relative_position_index(grid: Grid) -> torch.Tensor:
    """For every pair of cells (i, j) of a grid, the flat index of their offset in the table.

    Shapes: ``-> (gh*gw, gh*gw)``, int64, values in ``[0, (2gh-1)(2gw-1))``.
    """
    gh, gw = grid
    coords = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (delta[0] + gh - 1) * (2 * gw - 1) + (delta[1] + gw - 1)


class GridBuffers(nn.Module):
    """A module whose buffers follow from its grid alone: they are recomputed, never loaded.

    A checkpoint saved at another resolution holds these buffers with other shapes; the
    keys must still be present for a strict load, but the module keeps its own values.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buffer in self.named_buffers(recurse=False):
            if prefix + name in state_dict:
                state_dict[prefix + name] = buffer
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ContinuousPositionBias(GridBuffers):
    """Per-head attention bias from relative token offsets inside a window.

    The bias is ``16 * sigmoid(MLP(table))`` gathered for every pair of window tokens, then
    zero-padded at the top-left for the ``num_carrier`` carrier tokens that precede the
    window tokens in hierarchical attention (pairs involving a carrier token get no bias).

    The buffers ``relative_coords_table``, ``relative_position_index`` and ``relative_bias``
    describe the grid the module was built for; they are part of the checkpoint format and
    recomputed rather than loaded; any other grid is computed on the fly.

    Shapes: ``forward(grid, num_carrier) -> (1, heads, n + gh*gw, n + gh*gw)``.
    """

    def __init__(self, grid: Grid, num_heads: int, num_carrier: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.num_heads = num_heads
        self.cpb_mlp = _mlp(num_heads)
        seq_length = grid[0] * grid[1] + num_carrier
        self.register_buffer("relative_coords_table", relative_coords_table(grid))
        self.register_buffer("relative_position_index", relative_position_index(grid))
        self.register_buffer("relative_bias", torch.zeros(1, num_heads, seq_length, seq_length))

    def _tables(self, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        if grid == self.grid:
            return self.relative_coords_table, self.relative_position_index
        table = relative_coords_table(grid).to(self.relative_coords_table)  # device and dtype
        return table, relative_position_index(grid).to(self.relative_position_index.device)

    def _compute(self, grid: Grid, num_carrier: int) -> torch.Tensor:
        table, index = self._tables(grid)
        n = grid[0] * grid[1]
        bias = self.cpb_mlp(table).view(-1, self.num_heads)  # ((2gh-1)(2gw-1), heads)
        bias = bias[index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        bias = 16 * torch.sigmoid(bias)
        return F.pad(bias, (num_carrier, 0, num_carrier, 0)).unsqueeze(0).contiguous()

    def forward(self, grid: Grid, num_carrier: int = 0) -> torch.Tensor:
        return _inference_cached(self, (grid, num_carrier), lambda: self._compute(grid, num_carrier))

    def extra_repr(self) -> str:
        return f"grid={self.grid}, num_heads={self.num_heads}"


def grid_coordinates(
    grid: Grid, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """Absolute coordinates of a grid's cells, centred: ``(i - g//2) / (g//2)`` per axis.

    Shapes: ``-> (1, gh*gw, 2)``, cells in row-major order, (row, column) on the last axis.
    """
    axes = [(torch.arange(g, dtype=dtype, device=device) - g // 2) / max(g // 2, 1) for g in grid]
    coords = torch.stack(torch.meshgrid(axes[0], axes[1], indexing="ij"))  # (2, gh, gw)
    return coords.flatten(1).transpose(0, 1).unsqueeze(0)


class PositionEmbeddingMLP(GridBuffers):
    """Absolute position embedding: an MLP of each token's grid coordinates, added to it.

    ``relative_bias`` is a buffer of the checkpoint format (the embedding for the grid the
    module was built for); the embedding is recomputed from the MLP, never loaded.

    Shapes: ``forward(x, grid)``: ``(B, gh*gw, C) -> (B, gh*gw, C)``.
    """

    def __init__(self, dim: int, grid: Grid) -> None:
        super().__init__()
        self.grid = grid
        self.cpb_mlp = _mlp(dim)
        self.register_buffer("relative_bias", torch.zeros(1, grid[0] * grid[1], dim))

    def embedding(self, grid: Grid) -> torch.Tensor:
        """Shapes: ``-> (1, gh*gw, C)``."""
        weight = self.cpb_mlp[0].weight
        return _inference_cached(
            self, grid, lambda: self.cpb_mlp(grid_coordinates(grid, weight.dtype, weight.device))
        )

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return x + self.embedding(grid).to(x.dtype)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


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
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
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
