"""``fastervit train``: train (or resume) a model on a dataset; flags follow timm's train.py.

Examples::

    python -m fastervit train --model faster_vit_0_224 --dataset fashion_mnist \\
        --epochs 10 --batch-size 128 --lr 1e-3 --output runs/fmnist
    torchrun --nproc_per_node=4 -m fastervit train --model faster_vit_0_224 \\
        --dataset imagefolder --data-dir /data/imagenet --lr-base 6.25e-4 --amp bf16 ...
    python -m fastervit train ... --resume runs/fmnist/last.pt

Global batch = --batch-size x processes x --grad-accum-steps; with --lr-base,
lr = lr_base x global batch / 512, otherwise --lr is used as given.
"""

import argparse
import os
from dataclasses import MISSING, fields

from fastervit.commands.common import json_object
from fastervit.train.config import TrainConfig

DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags left out take :class:`TrainConfig`'s defaults."""

    def add(group: argparse._ArgumentGroup, *flags: str, **kwargs: object) -> None:
        """Add a flag whose absence is None, its help naming TrainConfig's default."""
        dest = kwargs.get("dest", flags[0].lstrip("-").replace("-", "_"))
        default = DEFAULTS.get(dest)
        if default is not None and kwargs.get("action") not in ("store_true", "store_false"):
            kwargs["help"] = f"{kwargs['help']} (default: {default})"
        group.add_argument(*flags, default=None, **kwargs)

    g = p.add_argument_group("what to train")
    g.add_argument("--model", required=True, help="registered model name, see fastervit.list_models()")
    g.add_argument("--dataset", required=True, help="fashion_mnist, digits or imagefolder")
    g.add_argument("--output", required=True, help="run directory: checkpoints, CSV logs, TensorBoard events")
    add(g, "--data-dir", help="dataset directory (default: the dataset's usual place, see $FASTERVIT_DATA)")
    add(g, "--model-kwargs", type=json_object, help="JSON object of model constructor overrides")
    add(g, "--resume", help="continue from this checkpoint (a run's last.pt), with the same settings")

    g = p.add_argument_group("schedule and optimizer")
    add(g, "--epochs", type=int, help="epochs to train")
    add(g, "--batch-size", type=int, help="images per process per micro-batch")
    lr = g.add_mutually_exclusive_group()
    add(lr, "--lr", type=float, help="peak learning rate")
    add(lr, "--lr-base", type=float, help="learning rate per 512 images of global batch (instead of --lr)")
    add(g, "--opt", choices=("lamb", "adamw"), help="optimizer")
    add(g, "--opt-eps", type=float, help="optimizer epsilon")
    add(g, "--weight-decay", type=float, help="decoupled weight decay")
    add(g, "--warmup-epochs", type=float, help="linear warmup length, in (fractional) epochs")
    add(g, "--min-lr", type=float, help="learning rate at the end of the cosine decay")
    add(g, "--clip-grad", type=float, help="clip the global gradient norm to this (default: no clipping)")
    add(g, "--grad-accum-steps", type=int, help="micro-batches per optimizer step")
    add(
        g,
        "--max-steps",
        type=int,
        help="stop after this many optimizer steps in total (the schedule is unchanged)",
    )
    add(g, "--seed", type=int, help="seed of weights, data order and augmentation")

    g = p.add_argument_group("regularisation and augmentation")
    add(g, "--smoothing", type=float, help="label smoothing")
    add(g, "--mixup", type=float, help="mixup Beta alpha, 0 disables")
    add(g, "--cutmix", type=float, help="cutmix Beta alpha, 0 disables")
    add(g, "--mixup-prob", type=float, help="probability of mixing a batch")
    add(g, "--mixup-switch-prob", type=float, help="probability of cutmix instead of mixup when both are on")
    add(g, "--drop-path", type=float, help="stochastic depth rate (default: the model's)")
    add(g, "--model-ema", action="store_true", help="keep an EMA of the weights, evaluate and select with it")
    add(g, "--model-ema-decay", type=float, help="EMA decay")
    add(
        g,
        "--img-size",
        type=int,
        help="input side, a multiple of 32 (default: the dataset's, 32 for digits and fashion_mnist, 224 for imagefolder)",
    )
    add(g, "--crop-pct", type=float, help="evaluation centre-crop fraction (default: the dataset's)")
    add(g, "--scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="random-resized-crop area range")
    add(g, "--hflip", type=float, help="horizontal flip probability")
    add(g, "--color-jitter", type=float, help="colour jitter strength (when --aa is off)")
    add(g, "--aa", help="RandAugment spec, e.g. rand-m9-n2 (default: off)")

    g = p.add_argument_group("hardware")
    add(g, "--device", choices=("cpu", "cuda"), help="default: cuda when available")
    add(g, "--amp", choices=("bf16", "fp16"), help="mixed precision (default: off)")
    add(g, "--channels-last", action="store_true", help="channels-last memory format")
    add(g, "--compile", action="store_true", help="torch.compile the model")
    add(g, "--sync-bn", action="store_true", help="synchronise BatchNorm statistics across GPUs (CUDA only)")
    add(g, "--workers", type=int, help="data-loading processes per training process")
    add(
        g,
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars (also off when stderr is not a terminal)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed flags; flags left out keep the config's defaults."""
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "scale" in given:
        given["scale"] = tuple(given["scale"])
    return TrainConfig(**given)


def run(args: argparse.Namespace) -> dict | None:
    """Train; the summary is returned by rank 0 only (it alone prints)."""
    from fastervit.train.loop import train

    summary = train(config_from_args(args))
    return summary if int(os.environ.get("RANK", "0")) == 0 else None
