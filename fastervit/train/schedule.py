"""Learning-rate schedule per optimizer step: linear warmup, cosine decay, cooldown (chapter 10).

Three phases, as in timm's cosine scheduler, which the release trains with:

1. warmup: a straight line from ``warmup_lr`` up to the peak ``base_lr``;
2. cosine: half a cosine from ``base_lr`` down to ``min_lr``, reached on the last step of
   ``epochs``;
3. cooldown: ``cooldown_epochs`` more epochs at ``min_lr``. A run therefore lasts
   ``epochs + cooldown_epochs`` epochs (the release: 310 + 10).

The schedule is a function of the step alone, so resuming from a checkpoint only needs the
step counter (kept in the scheduler's ``state_dict``).
"""

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_lr(
    step: int, base_lr: float, warmup_steps: int, cosine_steps: int, min_lr: float, warmup_lr: float = 0.0
) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    * ``step < warmup_steps``: ``warmup_lr + (base_lr - warmup_lr) * (step + 1) / warmup_steps``,
      reaching ``base_lr`` on the last warmup step. Step 0 is one increment above
      ``warmup_lr``, as in the release, whose scheduler is advanced before every step;
    * then ``min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2`` with
      ``p = (step - warmup_steps) / (cosine_steps - warmup_steps - 1)``, so the first step
      after warmup uses ``base_lr`` and step ``cosine_steps - 1`` uses ``min_lr``;
    * every later step (the cooldown) uses ``min_lr``.
    """
    if step < warmup_steps:
        return warmup_lr + (base_lr - warmup_lr) * (step + 1) / warmup_steps
    decay_steps = max(cosine_steps - warmup_steps - 1, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ScheduleSteps:
    """The length of each phase, in optimizer steps.

    Attributes:
        warmup: steps of linear warmup.
        cosine: steps until the cosine reaches ``min_lr`` (warmup included).
        total: steps of the whole run, the cooldown at ``min_lr`` included.
    """

    warmup: int
    cosine: int
    total: int

    @classmethod
    def from_epochs(
        cls, steps_per_epoch: int, epochs: int, warmup_epochs: float, cooldown_epochs: int = 0
    ) -> "ScheduleSteps":
        """Phases of ``epochs`` (warmup + cosine) then ``cooldown_epochs``, in steps.

        ``warmup_epochs`` may be fractional; it is rounded to whole steps.
        """
        if steps_per_epoch < 1 or epochs < 1 or warmup_epochs < 0 or cooldown_epochs < 0:
            raise ValueError(
                f"Expected steps_per_epoch >= 1, epochs >= 1, warmup_epochs >= 0 and cooldown_epochs "
                f">= 0, got {steps_per_epoch}, {epochs}, {warmup_epochs} and {cooldown_epochs}."
            )
        steps = cls(
            warmup=round(warmup_epochs * steps_per_epoch),
            cosine=epochs * steps_per_epoch,
            total=(epochs + cooldown_epochs) * steps_per_epoch,
        )
        if steps.warmup >= steps.cosine:
            raise ValueError(
                f"Warmup ({warmup_epochs} epochs = {steps.warmup} steps) must be shorter than the "
                f"cosine ({epochs} epochs = {steps.cosine} steps); lower --warmup-epochs or raise --epochs."
            )
        return steps


class WarmupCosineLR(LRScheduler):
    """:func:`warmup_cosine_lr` for every parameter group, each from its own initial lr.

    Call ``step()`` after every optimizer step. ``state_dict()`` holds the step counter
    (``last_epoch``, which counts steps here) and the schedule's settings. Steps from
    ``cosine_steps`` on stay at ``min_lr``, so a cooldown needs nothing but more steps.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        cosine_steps: int,
        min_lr: float = 0.0,
        last_epoch: int = -1,
        *,
        warmup_lr: float = 0.0,
    ) -> None:
        if cosine_steps <= warmup_steps:
            raise ValueError(
                f"WarmupCosineLR: expected cosine_steps > warmup_steps, got cosine_steps="
                f"{cosine_steps}, warmup_steps={warmup_steps}; train longer or warm up less."
            )
        if warmup_steps < 0 or min_lr < 0 or warmup_lr < 0:
            raise ValueError(
                f"WarmupCosineLR: expected warmup_steps, min_lr and warmup_lr >= 0, got "
                f"{warmup_steps}, {min_lr} and {warmup_lr}."
            )
        self.warmup_steps = warmup_steps
        self.cosine_steps = cosine_steps
        self.min_lr = min_lr
        self.warmup_lr = warmup_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates of the current step, one per parameter group."""
        return [
            warmup_cosine_lr(
                self.last_epoch, base, self.warmup_steps, self.cosine_steps, self.min_lr, self.warmup_lr
            )
            for base in self.base_lrs
        ]
