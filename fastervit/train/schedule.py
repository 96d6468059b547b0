"""Learning-rate schedule: linear warmup, then cosine decay to a floor, per optimizer step.

The schedule is a function of the step alone, so resuming from a checkpoint only needs the
step counter (kept in the scheduler's ``state_dict``).
"""

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    * ``step < warmup_steps``: ``base_lr * (step + 1) / warmup_steps``, reaching ``base_lr``
      on the last warmup step and never 0;
    * then ``min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2`` with
      ``p = (step - warmup_steps) / (total_steps - warmup_steps - 1)``, so the first step
      after warmup uses ``base_lr`` and step ``total_steps - 1`` uses ``min_lr``;
    * steps past the end stay at ``min_lr``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps - 1, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LRScheduler):
    """:func:`warmup_cosine_lr` for every parameter group, each from its own initial lr.

    Call ``step()`` after every optimizer step. ``state_dict()`` holds the step counter
    (``last_epoch``, which counts steps here) and the schedule's settings.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps <= warmup_steps:
            raise ValueError(
                f"WarmupCosineLR: expected total_steps > warmup_steps, got total_steps="
                f"{total_steps}, warmup_steps={warmup_steps}; train longer or warm up less."
            )
        if warmup_steps < 0 or min_lr < 0:
            raise ValueError(
                f"WarmupCosineLR: expected warmup_steps >= 0 and min_lr >= 0, got "
                f"{warmup_steps} and {min_lr}."
            )
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr = min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates of the current step, one per parameter group."""
        return [
            warmup_cosine_lr(self.last_epoch, base, self.warmup_steps, self.total_steps, self.min_lr)
            for base in self.base_lrs
        ]
