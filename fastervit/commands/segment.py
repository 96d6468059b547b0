"""``fastervit segment``: train FasterViT + UperNet on pasted Fashion-MNIST scenes and score it.

Examples::

    python -m fastervit segment                       # the reduced CPU run of chapter 12
    python -m fastervit segment --model faster_vit_0_224 --resolution 256 --steps 4000 --device cuda \\
        --amp --amp-dtype bfloat16

The record holds mIoU, pixel accuracy, per-class IoU (``null`` for a class that is neither
present nor predicted), the loss and mIoU curves and the settings; ``--output`` also writes
it to a file, ``--checkpoint`` saves the trained weights. Fashion-MNIST must be present
(``--source digits`` pastes scikit-learn's digits instead); inconsistent settings, such as a
batch larger than the training set, are refused before any work.
"""

import argparse
import sys
from dataclasses import asdict
from typing import Any

import torch

from fastervit.amp import AMP_DTYPES, default_amp_dtype
from fastervit.checkpoint import atomic_path, atomic_save
from fastervit.commands.common import (
    add_resolution,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
    probability,
    resolve_device,
    to_json,
)
from fastervit.dense.scenes import SOURCES
from fastervit.dense.train import DenseTrainConfig, train_segmentation


def add_arguments(p: argparse.ArgumentParser) -> None:
    defaults = DenseTrainConfig()
    p.add_argument(
        "--model", default=defaults.model, help="'tiny' or a registered variant, e.g. faster_vit_0_224"
    )
    add_resolution(p, f"canvas size, sides multiples of 32 (default: {defaults.size[0]} {defaults.size[1]})")
    p.add_argument(
        "--items", type=positive_int, nargs=2, default=list(defaults.items), metavar=("MIN", "MAX")
    )
    p.add_argument(
        "--scale",
        type=probability,
        nargs=2,
        default=list(defaults.scale),
        metavar=("MIN", "MAX"),
        help="item side as a fraction of the canvas' shorter side, in (0, 1]",
    )
    p.add_argument(
        "--channels", type=positive_int, default=defaults.channels, help="width of the UperNet head"
    )
    p.add_argument("--steps", type=positive_int, default=defaults.steps)
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    p.add_argument("--lr", type=positive_float, default=defaults.lr)
    p.add_argument("--min-lr", type=non_negative_float, default=defaults.min_lr)
    p.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay)
    p.add_argument("--warmup-steps", type=non_negative_int, default=defaults.warmup_steps)
    p.add_argument(
        "--drop-path", type=probability, default=defaults.drop_path, help="stochastic depth, in [0, 1)"
    )
    p.add_argument(
        "--train-samples",
        type=positive_int,
        default=defaults.train_samples,
        help="training canvases, at least --batch-size",
    )
    p.add_argument("--val-samples", type=positive_int, default=defaults.val_samples)
    p.add_argument(
        "--eval-every",
        type=non_negative_int,
        default=defaults.eval_every,
        help="validate every N steps (0: at the end)",
    )
    p.add_argument("--log-every", type=positive_int, default=defaults.log_every)
    p.add_argument("--seed", type=non_negative_int, default=defaults.seed)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", action="store_true", help="mixed precision (autocast) in --amp-dtype")
    p.add_argument(
        "--amp-dtype",
        choices=tuple(AMP_DTYPES),
        help="autocast type with --amp (default: float16 on CUDA, as in timm; bfloat16 on the CPU; "
        "float16 gets loss scaling)",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=defaults.workers,
        help="data-loader workers (0: all in memory)",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default=defaults.source,
        help="items to paste: Fashion-MNIST (default), or scikit-learn's digits for a quick try",
    )
    p.add_argument("--threads", type=positive_int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--output", type=output_file, help="also write the JSON record here (atomically)")
    p.add_argument(
        "--checkpoint",
        type=output_file,
        help="save {'state_dict', 'config'} of the trained model here (atomically)",
    )


def config_from_args(args: argparse.Namespace) -> DenseTrainConfig:
    """A :class:`DenseTrainConfig` from parsed flags, checked as a whole before any work.

    ``--device`` is resolved here (default: cuda when available), so that ``--amp`` without
    ``--amp-dtype`` picks the device's type.
    """
    if args.amp_dtype and not args.amp:
        raise ValueError(f"--amp-dtype {args.amp_dtype} takes effect with --amp; add --amp")
    device = resolve_device(args.device)
    return DenseTrainConfig(
        model=args.model,
        size=args.resolution or DenseTrainConfig.size,
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
        amp=(args.amp_dtype or default_amp_dtype(device)) if args.amp else None,
        workers=args.workers,
        source=args.source,
        device=str(device),
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score; progress lines go to stderr."""
    config = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, record = train_segmentation(config, progress=lambda entry: print(to_json(entry), file=sys.stderr))
    if config.device.startswith("cuda"):
        record["device_name"] = torch.cuda.get_device_name()
    record["torch_version"] = torch.__version__
    if args.checkpoint:
        atomic_save({"state_dict": model.state_dict(), "config": asdict(config)}, args.checkpoint)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(to_json({"command": "segment", "status": "ok", **record}, indent=1) + "\n")
    return {k: v for k, v in record.items() if k != "confusion"}
