"""Random draws from an explicit ``torch.Generator``, shared by every augmentation.

Augmentations never touch a global random state: each draw comes from the generator they
are called with, which the datasets seed from the run seed, the epoch and the sample index,
so an augmented sample is reproducible from that seed alone.
"""

import torch


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """A float in ``[low, high)``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def randint(generator: torch.Generator, high: int) -> int:
    """An integer in ``[0, high)``."""
    return int(torch.randint(high, (1,), generator=generator))
