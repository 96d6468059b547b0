"""Classification losses on soft targets: label smoothing, and the targets mixup produces.

Every loss here is the cross-entropy between the model's softmax and a target distribution
over the classes. The targets come from :mod:`fastervit.data.mixup`: label smoothing
(:func:`~fastervit.data.mixup.smooth_one_hot`) moves ``smoothing`` of the probability mass
from the true class to all classes evenly; mixup and cutmix blend two such distributions.
"""

import torch
import torch.nn.functional as F

from fastervit.data.mixup import smooth_one_hot


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets[k] log softmax(logits)[k]``.

    Shapes: ``logits (B, K)``, ``targets (B, K)`` rows summing to 1 -> scalar.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"soft_target_cross_entropy: expected targets shaped like logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}; turn integer labels into rows with smooth_one_hot."
        )
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def label_smoothing_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, smoothing: float
) -> torch.Tensor:
    """Cross-entropy against label-smoothed targets.

    Shapes: ``logits (B, K)``, ``labels (B,)`` integer -> scalar.
    """
    return soft_target_cross_entropy(logits, smooth_one_hot(labels, logits.shape[-1], smoothing))
