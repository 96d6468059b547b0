"""Top-1 / top-5 accuracy and loss of a classifier over a data loader, across processes."""

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.train.distributed import Distributed


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> list[int]:
    """How many labels are among the ``k`` largest logits, for each ``k`` in ``ks``.

    Shapes: ``logits (B, K)``, ``labels (B,)`` -> one count per ``k``.
    """
    top = logits.topk(max(ks), dim=-1).indices  # (B, max k)
    hits = top == labels.unsqueeze(1)  # (B, max k), at most one True per row
    return [int(hits[:, :k].sum()) for k in ks]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    dist: Distributed,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy (in %) over every sample of ``loader``.

    Each process evaluates its share; counts are summed over processes, so every process
    returns the numbers for the whole dataset. Top-5 becomes top-K when there are K < 5
    classes.
    """
    was_training = model.training
    model.eval()
    device = dist.device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1, top-5, count
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, K)
        logits = logits.float()
        top1, top5 = topk_correct(logits, labels, (1, min(5, logits.shape[-1])))
        loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        totals += torch.tensor([float(loss_sum), top1, top5, len(labels)], dtype=torch.float64, device=device)
    model.train(was_training)
    loss_sum, top1, top5, count = dist.all_reduce_sum(totals).tolist()
    if count == 0:
        raise ValueError("evaluate: the loader yielded no samples; the validation split is empty.")
    return {
        "loss": loss_sum / count,
        "top1": 100.0 * top1 / count,
        "top5": 100.0 * top5 / count,
        "count": int(count),
    }
