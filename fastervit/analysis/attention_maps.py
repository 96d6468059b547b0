"""Where a model's attention goes (chapters 4 to 6): the weights of every attention, recorded.

The fused attention kernel never forms its weights, so a forward pass alone cannot show them.
:func:`record_attention` hooks every :class:`~fastervit.layers.WindowAttention` of a model and
computes, from the very input each one receives, the weights it applies
(:meth:`~fastervit.layers.WindowAttention.attention_weights`). The model's outputs are
unchanged, fused kernel or not.
"""

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from fastervit.layers.attention import WindowAttention
from fastervit.layers.windows import Grid


@dataclass(frozen=True)
class AttentionRecord:
    """The attention weights of one module over the forward passes of a recording.

    Attributes:
        weights: ``(B', heads, N, N)``, softmax weights, each row summing to 1; ``B'`` counts
            windows (``B * nh * nw``) in a window attention and images in a carrier-token
            attention, over all passes concatenated.
        grid: the token grid the bias was computed for, ``(gh, gw)``; ``N = n + gh * gw``.
        num_carrier: ``n``, the carrier tokens that come first in each sequence (0 if none).
    """

    weights: torch.Tensor
    grid: Grid
    num_carrier: int


_SIGNATURE = inspect.signature(WindowAttention.forward)


@contextmanager
def record_attention(model: nn.Module) -> Iterator[dict[str, AttentionRecord]]:
    """Record the attention weights of every :class:`WindowAttention` inside ``model``.

    Use as ``with record_attention(model) as maps: model(images)``; afterwards ``maps`` holds
    one :class:`AttentionRecord` per module that ran, keyed by its name in the model (e.g.
    ``"levels.2.blocks.0.attn"`` and ``"levels.2.blocks.0.hat_attn"``). Several forward passes
    inside one recording concatenate along the first axis, so a test set can be fed in
    batches. The weights are detached and the hooks removed on exit.

    Raises:
        ValueError: if ``model`` holds no WindowAttention, or a module is called on two
            different grids within one recording (their weights would not stack).
    """
    modules = {name: m for name, m in model.named_modules() if isinstance(m, WindowAttention)}
    if not modules:
        raise ValueError(f"{type(model).__name__} holds no WindowAttention: nothing to record")
    weights: dict[str, list[torch.Tensor]] = {}
    layout: dict[str, tuple[Grid, int]] = {}

    def hook_for(name: str):
        def hook(module: WindowAttention, args: tuple, kwargs: dict) -> None:
            bound = _SIGNATURE.bind(module, *args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            x, grid, num_carrier = arguments["x"], tuple(arguments["grid"]), arguments["num_carrier"]
            if layout.setdefault(name, (grid, num_carrier)) != (grid, num_carrier):
                raise ValueError(
                    f"{name} ran on grid {grid} with {num_carrier} carrier tokens after "
                    f"{layout[name]}: record one input size at a time"
                )
            with torch.no_grad():
                weights.setdefault(name, []).append(module.attention_weights(x, grid, num_carrier))

        return hook

    records: dict[str, AttentionRecord] = {}
    handles = [m.register_forward_pre_hook(hook_for(name), with_kwargs=True) for name, m in modules.items()]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
        for name, parts in weights.items():
            grid, num_carrier = layout[name]
            records[name] = AttentionRecord(torch.cat(parts), grid, num_carrier)
