"""Learned position information from grid coordinates (chapter 4).

Two small MLPs turn coordinates into position information:

* :class:`PositionEmbeddingMLP` maps the absolute coordinates of a token grid to an
  embedding that is added to the tokens (every transformer block has one);
* :class:`ContinuousPositionBias` maps the log-spaced relative offsets between tokens of a
  window to a per-head bias that is added to the attention logits (Swin V2's continuous
  relative position bias).

Both depend only on their weights and on the grid's size, so in inference they are computed
once and kept until the weights or the grid change (:class:`GridBuffers`).
"""

from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.layers.windows import Grid


def _mlp(out_features: int) -> nn.Sequential:
    """The coordinate MLP shared by both position modules: 2 -> 512 (ReLU) -> out, no last bias."""
    return nn.Sequential(nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, out_features, bias=False))


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


def grid_coordinates(
    grid: Grid, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """Absolute coordinates of a grid's cells, centred: ``(i - g//2) / (g//2)`` per axis.

    Shapes: ``-> (1, gh*gw, 2)``, cells in row-major order, (row, column) on the last axis.
    """
    axes = [(torch.arange(g, dtype=dtype, device=device) - g // 2) / max(g // 2, 1) for g in grid]
    coords = torch.stack(torch.meshgrid(axes[0], axes[1], indexing="ij"))  # (2, gh, gw)
    return coords.flatten(1).transpose(0, 1).unsqueeze(0)


def _weight_state(p: torch.Tensor) -> tuple:
    """What identifies a tensor's current values, short of reading them."""
    return p.device, p.dtype, p.shape, p.stride(), p.data_ptr(), p._version


def _unchanged(parameters: list[nn.Parameter], snapshot: list[tuple]) -> bool:
    """Whether ``parameters`` are the tensors ``snapshot`` recorded, in the same state."""
    return len(parameters) == len(snapshot) and all(
        p is q and _weight_state(p) == state for p, (q, _, state) in zip(parameters, snapshot)
    )


class GridBuffers(nn.Module):
    """A module whose output and buffers follow from its weights and a grid alone.

    *Buffers.* They describe the grid the module was built for and are part of the checkpoint
    format, so a strict load needs their keys; a checkpoint saved at another resolution holds
    them with other shapes. They are therefore recomputed from the module's own grid on every
    load, never copied from the file (:meth:`grid_buffers`).

    *Inference cache.* In inference (eval mode, no autograd, not compiling or exporting)
    :meth:`cached` keeps the last output until the weights change. A weight counts as
    changed when it is another tensor object, has another storage, data pointer, shape,
    stride, device or dtype, or its version counter moved. That covers in-place updates
    (EMA, ``load_state_dict``), ``p.data = ...``, ``vector_to_parameters``, ``.to()`` and
    ``load_state_dict(assign=True)``. Writes that bypass the version counter (``p.data.copy_``)
    are invisible to any key short of the values: any switch of mode (``model.eval()``,
    ``model.train()``) empties the cache too.
    """

    def __init__(self) -> None:
        super().__init__()
        self._inference_cache: tuple | None = None

    def grid_buffers(self) -> dict[str, torch.Tensor]:
        """The buffers' values for the module's own grid, by name."""
        raise NotImplementedError

    def _register_grid_buffers(self) -> None:
        for name, value in self.grid_buffers().items():
            self.register_buffer(name, value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, value in self.grid_buffers().items():
            if prefix + name in state_dict:
                # Freshly computed rather than the current buffer, which may live on the meta
                # device (load_state_dict(assign=True) then takes the file's device and dtype).
                loaded = state_dict[prefix + name]
                state_dict[prefix + name] = value.to(device=loaded.device, dtype=loaded.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> "GridBuffers":
        self._inference_cache = None
        return super().train(mode)

    def cached(self, key: Hashable, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, reused in inference while ``key`` and the weights stay the same."""
        parameters = list(self.parameters())
        uncached = self.training or torch.is_grad_enabled() or torch.compiler.is_compiling()
        # Parameters created under torch.inference_mode() have no version counter to key on.
        if uncached or any(p.is_inference() for p in parameters):
            return compute()
        if self._inference_cache is not None:
            cached_key, snapshot, value = self._inference_cache
            if cached_key == key and _unchanged(parameters, snapshot):
                return value
        value = compute()
        # p.detach() keeps the cached weights' storage alive, so that no new tensor can reuse
        # its address while the entry exists (a data pointer alone could repeat).
        snapshot = [(p, p.detach(), _weight_state(p)) for p in parameters]
        self._inference_cache = (key, snapshot, value)
        return value


class ContinuousPositionBias(GridBuffers):
    """Per-head attention bias from relative token offsets inside a window.

    The bias is ``16 * sigmoid(MLP(table))`` gathered for every pair of window tokens, then
    zero-padded at the top-left for the ``num_carrier`` carrier tokens that precede the
    window tokens in hierarchical attention (pairs involving a carrier token get no bias).

    The buffers ``relative_coords_table``, ``relative_position_index`` and ``relative_bias``
    describe the grid the module was built for; any other grid is computed on the fly.
    ``relative_bias`` is a placeholder kept at zero: the release keeps a computed bias there,
    which follows from the MLP, so only its key (in every released checkpoint) matters.

    Shapes: ``forward(grid, num_carrier) -> (1, heads, n + gh*gw, n + gh*gw)``.
    """

    def __init__(self, grid: Grid, num_heads: int, num_carrier: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.num_heads = num_heads
        self.num_carrier = num_carrier
        self.cpb_mlp = _mlp(num_heads)
        self._register_grid_buffers()

    def grid_buffers(self) -> dict[str, torch.Tensor]:
        seq_length = self.grid[0] * self.grid[1] + self.num_carrier
        return {
            "relative_coords_table": relative_coords_table(self.grid),
            "relative_position_index": relative_position_index(self.grid),
            "relative_bias": torch.zeros(1, self.num_heads, seq_length, seq_length),
        }

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
        return self.cached((grid, num_carrier), lambda: self._compute(grid, num_carrier))

    def extra_repr(self) -> str:
        return f"grid={self.grid}, num_heads={self.num_heads}"


class PositionEmbeddingMLP(GridBuffers):
    """Absolute position embedding: an MLP of each token's grid coordinates, added to it.

    The buffer is named ``relative_bias`` although it holds an absolute embedding (for the
    grid the module was built for): the release reuses the name, and its checkpoints hold the
    key. The embedding is recomputed from the MLP, never loaded.

    Shapes: ``forward(x, grid)``: ``(B, gh*gw, C) -> (B, gh*gw, C)``.
    """

    def __init__(self, dim: int, grid: Grid) -> None:
        super().__init__()
        self.dim = dim
        self.grid = grid
        self.cpb_mlp = _mlp(dim)
        self._register_grid_buffers()

    def grid_buffers(self) -> dict[str, torch.Tensor]:
        return {"relative_bias": torch.zeros(1, self.grid[0] * self.grid[1], self.dim)}

    def embedding(self, grid: Grid) -> torch.Tensor:
        """Shapes: ``-> (1, gh*gw, C)``."""
        weight = self.cpb_mlp[0].weight
        return self.cached(grid, lambda: self.cpb_mlp(grid_coordinates(grid, weight.dtype, weight.device)))

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return x + self.embedding(grid).to(x.dtype)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"
