"""Training and scoring the segmentation model on pasted scenes (chapter 12).

The recipe reuses the classifier's pieces (:mod:`fastervit.train`): LAMB with weight decay
off for biases, norms and position MLPs, a per-step warmup-cosine schedule, and plain
per-pixel cross-entropy that skips ignored pixels.

Two sizes, one code path:

* reduced (the defaults): a tiny FasterViT on 64x64 canvases, 400 steps of 16 images; about
  half a minute on one CPU thread, which the chapter executes in CI;
* full (``scripts/train_dense_gpu.sh``): FasterViT-0's widths on larger canvases for
  thousands of steps on a GPU, canvases generated on the fly by data-loader workers.

``python -m fastervit.dense.train --help`` lists the settings; it prints a JSON record last
and can write it to a file (``--output``) and the weights to a checkpoint (``--checkpoint``).
"""

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fastervit.checkpoint import atomic_path, atomic_save
from fastervit.dense.metrics import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from fastervit.dense.scenes import PastedScenes, SceneConfig
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


@dataclass
class DenseTrainConfig:
    """Every setting of a segmentation run (defaults: the reduced CPU run of the chapter).

    ``model`` is ``"tiny"`` (:data:`TINY_BACKBONE`) or a registered variant whose
    constructor arguments the backbone takes (e.g. ``faster_vit_0_224``), with one input
    channel and no classifier. ``amp`` is ``None`` or ``"bf16"`` (autocast on CUDA).
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
    source: str = "auto"

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


def _autocast(config: DenseTrainConfig):
    device_type = torch.device(config.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=config.amp == "bf16")


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
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp == "bf16")
    for start in range(0, len(dataset), batch_size):
        pairs = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        images = torch.stack([image for image, _ in pairs]).to(device)
        masks = torch.stack([mask for _, mask in pairs])
        with autocast:
            pred = model(images).argmax(1).cpu()
        confusion += confusion_matrix(pred, masks, dataset.num_classes, IGNORE_INDEX)
    ious = iou_per_class(confusion)
    return {
        "miou": mean_iou(confusion),
        "pixel_accuracy": pixel_accuracy(confusion),
        "iou_per_class": {
            name: (None if math.isnan(v) else float(v)) for name, v in zip(dataset.classes, ious)
        },
        "confusion": confusion.tolist(),
    }


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
    loss_curve, miou_curve, running = [], [], []
    start = time.perf_counter()
    model.train()
    for step in range(1, config.steps + 1):
        images, masks = next(batches)
        images, masks = (
            images.to(config.device, non_blocking=True),
            masks.to(config.device, non_blocking=True),
        )
        with _autocast(config):
            logits = model(images)  # (B, K, H, W)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


def _pair(values: Sequence[float]) -> tuple:
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected one or two values, got {values}")
    return (values[0], values[-1])


def build_parser() -> argparse.ArgumentParser:
    defaults = DenseTrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m fastervit.dense.train",
        description="Train FasterViT + UperNet on pasted Fashion-MNIST scenes; print a JSON record last.",
    )
    p.add_argument(
        "--model", default=defaults.model, help="'tiny' or a registered variant, e.g. faster_vit_0_224"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs="+",
        default=list(defaults.size),
        metavar="H [W]",
        help="canvas size, sides divisible by 32",
    )
    p.add_argument("--items", type=int, nargs=2, default=list(defaults.items), metavar=("MIN", "MAX"))
    p.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=list(defaults.scale),
        metavar=("MIN", "MAX"),
        help="item side as a fraction of the canvas' shorter side",
    )
    p.add_argument("--channels", type=int, default=defaults.channels, help="width of the UperNet head")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--min-lr", type=float, default=defaults.min_lr)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--drop-path", type=float, default=defaults.drop_path)
    p.add_argument("--train-samples", type=int, default=defaults.train_samples)
    p.add_argument("--val-samples", type=int, default=defaults.val_samples)
    p.add_argument(
        "--eval-every", type=int, default=defaults.eval_every, help="validate every N steps (0: at the end)"
    )
    p.add_argument("--log-every", type=int, default=defaults.log_every)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", default=None, help="default: cuda when available")
    p.add_argument("--amp", choices=("bf16",), help="bfloat16 autocast")
    p.add_argument(
        "--workers", type=int, default=defaults.workers, help="data-loader workers (0: all in memory)"
    )
    p.add_argument("--source", choices=("auto", "fashion_mnist", "digits"), default=defaults.source)
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--output", help="also write the JSON record here (atomically)")
    p.add_argument(
        "--checkpoint", help="save {'state_dict', 'config'} of the trained model here (atomically)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run from the command line; progress goes to stderr, the JSON record to stdout last."""
    import sys

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = DenseTrainConfig(
        model=args.model,
        size=_pair(args.size),
        items=tuple(args.items),
        scale=tuple(args.scale),
        channels=args.channels,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.min_lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        drop_path=args.drop_path,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        eval_every=args.eval_every,
        log_every=args.log_every,
        seed=args.seed,
        amp=args.amp,
        workers=args.workers,
        source=args.source,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    model, record = train_segmentation(
        config, progress=lambda entry: print(json.dumps(entry), file=sys.stderr)
    )
    record = {"command": "dense-train", "status": "ok", **record}
    if config.device.startswith("cuda"):
        record["device_name"] = torch.cuda.get_device_name()
    record["torch_version"] = torch.__version__
    if args.checkpoint:
        atomic_save({"state_dict": model.state_dict(), "config": record["config"]}, args.checkpoint)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "confusion"}))
    return record


if __name__ == "__main__":
    main()
