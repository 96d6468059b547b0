"""Training and scoring the segmentation model on pasted scenes (chapter 12).

The recipe reuses the classifier's pieces (:mod:`fastervit.train`): LAMB with weight decay
off for biases, norms and position MLPs, a per-step warmup-cosine schedule, and plain
per-pixel cross-entropy that skips ignored pixels.

Two sizes, one code path:

* reduced (the defaults): a tiny FasterViT on 64x64 canvases, 400 steps of 16 images; about
  half a minute on one CPU thread, which the chapter executes in CI;
* full (``scripts/train_dense_gpu.sh``): FasterViT-0's widths on larger canvases for
  thousands of steps on a GPU, canvases generated on the fly by data-loader workers.

``python -m fastervit segment --help`` lists the settings.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fastervit.amp import AMP_DTYPES, autocast
from fastervit.dense.metrics import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from fastervit.dense.scenes import SOURCES, PastedScenes, SceneConfig
from fastervit.dense.upernet import SegmentationModel
from fastervit.model import FasterViT
from fastervit.train.optim import Lamb, param_groups_weight_decay
from fastervit.train.schedule import WarmupCosineLR
from fastervit.variants import model_kwargs

# A FasterViT small enough to train on a CPU in seconds that still has every kind of stage:
# on a 64x64 canvas stage 3 is a 4x4 map of 2x2 windows with one carrier token each.
TINY_BACKBONE = {
    "dim": 16,
    "in_dim": 16,
    "depths": (1, 1, 2, 1),
    "num_heads": (1, 2, 4, 8),
    "window_size": (7, 7, 2, 2),
    "ct_size": 1,
    "mlp_ratio": 2,
}


@dataclass(frozen=True)
class DenseTrainConfig:
    """Every setting of a segmentation run (defaults: the reduced CPU run of the chapter).

    ``model`` is ``"tiny"`` (:data:`TINY_BACKBONE`) or a registered variant whose
    constructor arguments the backbone takes (e.g. ``faster_vit_0_224``), with one input
    channel and no classifier. ``amp`` is ``None`` (float32) or an autocast type of
    :data:`fastervit.amp.AMP_DTYPES` (``"float16"`` is trained with loss scaling).
    ``source`` is ``"fashion_mnist"`` or ``"digits"`` (:mod:`fastervit.dense.scenes`).
    Inconsistent settings raise a ValueError here, before any work.
    """

    model: str = "tiny"
    size: tuple[int, int] = (64, 64)
    items: tuple[int, int] = (1, 3)
    scale: tuple[float, float] = (0.4, 0.8)
    channels: int = 32
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-2
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 40
    drop_path: float = 0.0
    train_samples: int = 2048
    val_samples: int = 256
    eval_every: int = 0
    log_every: int = 25
    seed: int = 0
    device: str = "cpu"
    amp: str | None = None
    workers: int = 0
    source: str = "fashion_mnist"

    def __post_init__(self) -> None:
        height, width = self.size
        if height < 32 or width < 32 or height % 32 or width % 32:
            raise ValueError(
                f"canvas sides must be positive multiples of 32 (the model's stride), got {self.size}"
            )
        for name in ("channels", "steps", "batch_size", "val_samples", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_every", "workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.train_samples < self.batch_size:
            raise ValueError(
                f"train_samples ({self.train_samples}) must be at least batch_size ({self.batch_size}): "
                "every batch is drawn without repeats from the training canvases; raise "
                "--train-samples or lower --batch-size"
            )
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be at least 0 and below steps ({self.steps})"
            )
        if not 0 <= self.min_lr <= self.lr or self.lr <= 0:
            raise ValueError(f"expected 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.weight_decay < 0 or not 0 <= self.drop_path < 1:
            raise ValueError(
                f"expected weight_decay >= 0 and 0 <= drop_path < 1, got {self.weight_decay} and {self.drop_path}"
            )
        if self.amp is not None and self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be None or one of {tuple(AMP_DTYPES)}, got {self.amp!r}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown item source {self.source!r}; expected one of {SOURCES}")
        self.scene_config()  # checks items and scale

    def scene_config(self) -> SceneConfig:
        return SceneConfig(size=tuple(self.size), items=tuple(self.items), scale=tuple(self.scale))


def build_model(config: DenseTrainConfig, num_classes: int) -> SegmentationModel:
    """The backbone ``config.model`` (one input channel, no classifier) with an UperNet head."""
    kwargs = dict(TINY_BACKBONE) if config.model == "tiny" else model_kwargs(config.model)
    kwargs.update(in_chans=1, num_classes=0, resolution=tuple(config.size), drop_path_rate=config.drop_path)
    return SegmentationModel(FasterViT(**kwargs), num_classes, channels=config.channels)


def _batches(dataset: PastedScenes, config: DenseTrainConfig, generator: torch.Generator):
    """Endless shuffled training batches ``(images (B, 1, H, W), masks (B, H, W))``.

    Without workers every canvas is drawn once and kept in memory; with workers they are
    drawn on the fly, so the training set may be larger than the memory.
    """
    if config.workers == 0:
        images, masks = dataset.tensors()
        while True:
            order = torch.randperm(len(dataset), generator=generator)
            for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
                index = order[start : start + config.batch_size]
                yield images[index], masks[index]
    loader = torch.utils.data.DataLoader(
        dataset,
        config.batch_size,
        shuffle=True,
        generator=generator,
        drop_last=True,
        num_workers=config.workers,
        pin_memory=config.device.startswith("cuda"),
    )
    while True:
        yield from loader


@torch.no_grad()
def evaluate(
    model: SegmentationModel,
    dataset: PastedScenes,
    batch_size: int = 64,
    device: str = "cpu",
    amp: str | None = None,
) -> dict[str, Any]:
    """Score ``model`` on every canvas of ``dataset``: mIoU, pixel accuracy, IoU per class."""
    model.eval()
    confusion = torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.long)
    precision = autocast(torch.device(device), AMP_DTYPES.get(amp))
    for start in range(0, len(dataset), batch_size):
        pairs = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([image for image, _ in pairs]).to(device)
        masks = torch.stack([mask for _, mask in pairs])
        with precision:
            pred = model(images).argmax(1).cpu()
        confusion += confusion_matrix(pred, masks, dataset.num_classes, IGNORE_INDEX)
    ious = iou_per_class(confusion)
    return {
        "miou": _finite_or_none(mean_iou(confusion)),
        "pixel_accuracy": _finite_or_none(pixel_accuracy(confusion)),
        "iou_per_class": {name: _finite_or_none(float(v)) for name, v in zip(dataset.classes, ious)},
        "confusion": confusion.tolist(),
    }


def _finite_or_none(value: float) -> float | None:
    """A score for a JSON record: ``None`` where it is undefined (NaN: nothing was counted)."""
    return value if math.isfinite(value) else None


def train_segmentation(
    config: DenseTrainConfig, progress: Callable[[dict[str, Any]], None] | None = None
) -> tuple[SegmentationModel, dict[str, Any]]:
    """Train a segmentation model on pasted scenes; return it and a JSON-ready record.

    The record holds the final validation scores (``miou``, ``pixel_accuracy``,
    ``iou_per_class``), the mean training loss every ``log_every`` steps (``loss_curve``:
    ``[step, loss]``), the validation mIoU every ``eval_every`` steps (``miou_curve``), the
    parameter count, the wall time and the configuration. ``progress`` is called with each
    loss (and mIoU) entry as it is logged. On the CPU with one thread a run is deterministic.
    """
    torch.manual_seed(config.seed)
    scenes = config.scene_config()
    train_set = PastedScenes("train", config.train_samples, scenes, config.seed, config.source)
    val_set = PastedScenes("val", config.val_samples, scenes, config.seed, config.source)
    model = build_model(config, train_set.num_classes).to(config.device)
    optimizer = Lamb(param_groups_weight_decay(model, config.weight_decay), lr=config.lr)
    scheduler = WarmupCosineLR(optimizer, config.warmup_steps, config.steps, config.min_lr)
    batches = _batches(train_set, config, torch.Generator().manual_seed(config.seed))
    device = torch.device(config.device)
    # float16's small range needs the loss scaled so that small gradients survive; bfloat16 does not
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "float16")
    loss_curve, miou_curve, running = [], [], []
    start = time.perf_counter()
    model.train()
    for step in range(1, config.steps + 1):
        images, masks = next(batches)
        images, masks = (
            images.to(config.device, non_blocking=True),
            masks.to(config.device, non_blocking=True),
        )
        with autocast(device, AMP_DTYPES.get(config.amp)):
            logits = model(images)  # (B, K, H, W)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the training loss is {float(loss)} at step {step}: training diverged (try a lower "
                "--lr), or every pixel of the batch is ignored"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        running.append(loss.detach())
        if step % config.log_every == 0 or step == config.steps:
            loss_curve.append([step, float(torch.stack(running).mean())])
            running = []
            if progress:
                progress({"step": step, "loss": loss_curve[-1][1]})
        if config.eval_every and step % config.eval_every == 0 and step != config.steps:
            miou_curve.append([step, evaluate(model, val_set, device=config.device, amp=config.amp)["miou"]])
            model.train()
            if progress:
                progress({"step": step, "miou": miou_curve[-1][1]})
    train_seconds = time.perf_counter() - start
    scores = evaluate(model, val_set, device=config.device, amp=config.amp)
    miou_curve.append([config.steps, scores["miou"]])
    record = {
        **scores,
        "classes": list(train_set.classes),
        "source": train_set.source,
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        "loss_curve": loss_curve,
        "miou_curve": miou_curve,
        "config": asdict(config),
    }
    return model, record
