"""Classification losses on soft targets: label smoothing, and the targets mixup produces.

Every loss here is the cross-entropy between the model's softmax and a target distribution
over the classes. Label smoothing moves ``smoothing`` of the probability mass from the true
class to all classes evenly; mixup and cutmix blend two such distributions.
"""

import torch
import torch.nn.functional as F


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Target distributions with label smoothing.

    Each row puts ``1 - smoothing + smoothing / K`` on the label and ``smoothing / K`` on
    every other class (``K = num_classes``), so rows sum to 1.

    Shapes: ``labels (B,)`` integer -> ``(B, K)`` float32.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smooth_one_hot: expected smoothing in [0, 1), got {smoothing}.")
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


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
