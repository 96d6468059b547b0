"""Exponential moving average (EMA) of a model's weights (chapter 10).

After each optimizer step the averaged copy moves a little towards the live weights:

    ema = d ema + (1 - d) w,   d = min(decay, (1 + n) / (10 + n))

where ``n`` counts the updates so far. The warmup of ``d`` keeps the first few averages from
being dominated by the random initial weights. Buffers (BatchNorm statistics, cached tables)
are copied, not averaged. The averaged model is evaluated like any other: ``ema.module``.
"""

import copy

import torch
from torch import nn


class ModelEma:
    """An averaged, frozen copy of ``model``, kept in ``self.module`` (eval mode).

    Args:
        model: the model being trained (unwrapped: not DDP, not compiled).
        decay: the largest per-step decay ``d``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelEma: expected decay in [0, 1), got {decay}.")
        self.decay = decay
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """Decay used by the next :meth:`update`: ``min(decay, (1 + n) / (10 + n))``."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s parameters; copy its buffers."""
        d = self.current_decay()
        ema_params = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].lerp_(param.detach().to(ema_params[name].dtype), 1.0 - d)
        ema_buffers = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            ema_buffers[name].copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict:
        """Everything needed to resume: the averaged weights and the update count."""
        return {"module": self.module.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.module.load_state_dict(state["module"])
        self.num_updates = state["num_updates"]
        self.decay = state["decay"]
