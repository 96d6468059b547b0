"""Evaluating a classifier: accuracy and loss across processes, predictions, confusion matrix.

* :func:`evaluate`: mean cross-entropy and top-1/top-5 over a loader, every process its
  share (what the training loop runs after each epoch, and ``fastervit eval``);
* :func:`evaluate_run`: the same for a run's live weights and its EMA;
* :func:`predict`, :func:`confusion_matrix` and :func:`write_report`: the class
  probabilities of every image, which classes are taken for which, and a run's report files
  (``confusion.csv``, ``predictions.json``, ``predictions.csv``) of its final weights.
"""

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.amp import autocast
from fastervit.train.build import Run
from fastervit.train.distributed import Distributed


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> list[int]:
    """How many labels are among the ``k`` largest logits, for each ``k`` in ``ks``.

    Shapes: ``logits (B, K)``, ``labels (B,)`` -> one count per ``k``.
    """
    top = logits.topk(max(ks), dim=-1).indices  # (B, max k)
    hits = top == labels.unsqueeze(1)  # (B, max k), at most one True per row
    return [int(hits[:, :k].sum()) for k in ks]


def _batches(loader, device: torch.device, channels_last: bool):
    """``(images (B, C, H, W), labels (B,))`` of ``loader``, on ``device``."""
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, labels


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
    for images, labels in _batches(loader, device, channels_last):
        with autocast(device, amp_dtype):
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


def evaluate_run(run: Run) -> dict[str, float | None]:
    """Validation loss and top-1/top-5 of a run's live weights and of its EMA (None without).

    BatchNorm statistics are first averaged over processes, so that every replica evaluates
    (and later saves) the same model.
    """
    run.dist.average_batchnorm_statistics(run.model)
    if run.ema is not None:
        run.dist.average_batchnorm_statistics(run.ema.module)
    args = (run.data.val_loader, run.dist, run.amp_dtype, run.config.channels_last)
    live = evaluate(run.model, *args)
    ema = evaluate(run.ema.module, *args) if run.ema is not None else None
    return {
        "val_loss": live["loss"],
        "top1": live["top1"],
        "top5": live["top5"],
        "ema_val_loss": None if ema is None else ema["loss"],
        "ema_top1": None if ema is None else ema["top1"],
        "ema_top5": None if ema is None else ema["top5"],
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and labels of every sample of ``loader``, in its order, on the CPU.

    Shapes: ``-> probabilities (N, K)`` float32 (rows sum to 1), ``labels (N,)`` int64.
    """
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for images, target in _batches(loader, device, channels_last):
        with autocast(device, amp_dtype):
            logits = model(images)  # (B, K)
        probs.append(logits.float().softmax(-1).cpu())
        labels.append(target.cpu())
    model.train(was_training)
    return torch.cat(probs), torch.cat(labels)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs: row ``i`` holds the images of class ``i``.

    Shapes: ``predicted (N,)``, ``labels (N,)`` integer -> ``(K, K)`` int64; its trace over
    its sum is the top-1 accuracy.
    """
    pairs = labels.long() * num_classes + predicted.long()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _sample(index: int, probs: torch.Tensor, label: int) -> dict:
    top = probs.topk(min(3, probs.shape[-1]))
    return {
        "index": index,
        "label": label,
        "predicted": int(probs.argmax()),
        "top3": [[int(c), round(float(p), 4)] for p, c in zip(top.values, top.indices)],
    }


def write_report(
    probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], output: Path, samples: int = 16
) -> dict:
    """Write ``confusion.csv``, ``predictions.json`` and ``predictions.csv`` into ``output``;
    returns a summary.

    ``predictions.json`` holds the first ``samples`` images and the first ``samples``
    mistakes, each with its label, prediction and three most probable classes;
    ``predictions.csv`` the label and prediction of every image (``index,label,predicted``),
    against which shipped weights are re-checked.

    Args:
        probs, labels: what :func:`predict` returns, ``(N, K)`` and ``(N,)``.
        classes: the ``K`` class names, in label order.
    """
    predicted = probs.argmax(-1)
    confusion = confusion_matrix(predicted, labels, probs.shape[-1])
    with (output / "confusion.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, confusion.tolist()):
            writer.writerow([name, *row])
    wrong = (predicted != labels).nonzero().flatten().tolist()
    report = {
        "classes": list(classes),
        "first": [_sample(i, probs[i], int(labels[i])) for i in range(min(samples, len(labels)))],
        "first_wrong": [_sample(i, probs[i], int(labels[i])) for i in wrong[:samples]],
    }
    (output / "predictions.json").write_text(json.dumps(report, indent=1) + "\n")
    with (output / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "predicted"])
        writer.writerows(zip(range(len(labels)), labels.tolist(), predicted.tolist()))
    return {"images": len(labels), "top1": 100.0 * float(confusion.trace()) / max(len(labels), 1)}
