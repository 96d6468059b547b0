"""Scoring a segmentation (chapter 12): the confusion matrix and the intersection over union.

For ``K`` classes the confusion matrix ``M`` counts pixels: ``M[t, p]`` is the number of
pixels of true class ``t`` predicted as ``p``. For class ``c``:

    IoU_c = M[c, c] / (sum_p M[c, p] + sum_t M[t, c] - M[c, c])   (intersection / union)

The mean IoU (mIoU) averages ``IoU_c`` over the classes whose union is not empty (a class
neither present nor predicted says nothing). Pixels whose target is ``ignore_index`` are not
counted at all: datasets mark pixels whose class is ambiguous that way.
"""

import torch

IGNORE_INDEX = 255


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = IGNORE_INDEX
) -> torch.Tensor:
    """Pixel counts ``M[true, predicted]``.

    Shapes: pred and target ``(...)`` integer class maps of the same shape (e.g. ``(B, H, W)``)
    ``-> (num_classes, num_classes)`` int64. Targets equal to ``ignore_index`` are skipped;
    any other value outside ``[0, num_classes)`` raises.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, values in (("target", target), ("pred", pred)):
        if values.numel() and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} holds classes outside [0, {num_classes}) (found {int(values.min())} to "
                f"{int(values.max())}); pass the right num_classes or mark such pixels ignore_index"
            )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of every class, NaN where the class is neither present nor predicted.

    Shapes: ``(K, K) -> (K,)`` float64.
    """
    confusion = confusion.double()
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean of :func:`iou_per_class` over the classes with a non-empty union (NaN if none has one)."""
    return float(iou_per_class(confusion).nanmean())


def pixel_accuracy(confusion: torch.Tensor) -> float:
    """Fraction of (non-ignored) pixels whose class is right (NaN if no pixel was counted)."""
    total = confusion.sum()
    return float(confusion.diagonal().sum() / total) if total > 0 else float("nan")
