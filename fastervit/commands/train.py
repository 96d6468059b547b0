"""``fastervit train``: train, fine-tune or resume a model on a dataset; flags mean what timm's train.py means.

Examples::

    python -m fastervit train --model faster_vit_0_224 --dataset fashion_mnist \\
        --epochs 10 -b 128 --lr 1e-3 --output runs/fmnist
    python -m fastervit train --model faster_vit_0_224 --pretrained fastervit_0_224_1k.pth.tar \\
        --dataset imagefolder --data-dir /data/flowers --resolution 224 --epochs 30 --output runs/ft
    torchrun --nproc_per_node=4 -m fastervit train --model faster_vit_0_224 \\
        --dataset imagefolder --data-dir /data/imagenet --lr-base 5e-3 --amp --amp-dtype bfloat16 ...
    python -m fastervit train ... --resume runs/fmnist/last.pt
    python -m fastervit train --model resnet18_like ...   (the peers: resnet18_like, vit_small_like)
    torchrun --nnodes=4 --nproc_per_node=8 -m fastervit train --model faster_vit_0_224 \
        --preset faster_vit_0 --dataset imagefolder --data-dir /data/imagenet --output runs/fv0

The release's recipe for a FasterViT size: --preset faster_vit_N fills every training
setting from its configuration file (fastervit.train.presets); flags given explicitly win, and
run.json records the resolved settings.

Learning rate, as in timm: global batch = -b x processes x --grad-accum-steps. --lr, when
given, is used as it is. Otherwise lr = --lr-base x global batch / --lr-base-size, square-rooted
for an optimizer whose name contains "ada" or "lamb" (lamb and adamw both do) and linear
otherwise, unless --lr-base-scale says which.

The run folder (--output) gets last.pt and best.pt, steps.csv, epochs.csv, run.json, tb/
(when tensorboard is installed) and, once training finishes, confusion.csv and
predictions.json of the final weights. One run at a time holds it (.lock). Progress goes to
stderr; the JSON record is the last line of stdout.
"""

import argparse
import contextlib
import logging
import os
import sys
from dataclasses import MISSING, fields

from fastervit.amp import AMP_DTYPES
from fastervit.commands.common import (
    add_resolution,
    json_object,
    non_negative_float,
    non_negative_int,
    output_path,
    positive_float,
    positive_int,
    probability,
)
from fastervit.data.random_erasing import MODES as ERASE_MODES
from fastervit.train.config import LR_BASE_SCALES, OPTIMIZERS, TrainConfig
from fastervit.train.loop import train
from fastervit.train.presets import PRESETS, preset_values
from fastervit.train.progress import ProgressBar

DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags left out take :class:`TrainConfig`'s defaults."""

    def add(group: argparse._ArgumentGroup, *flags: str, **kwargs: object) -> None:
        """Add a flag whose absence is None, its help naming TrainConfig's default."""
        dest = kwargs.get("dest", flags[-1].lstrip("-").replace("-", "_"))
        default = DEFAULTS.get(dest)
        if default is not None and default is not False:
            kwargs["help"] = f"{kwargs['help']} (default: {default})"
        group.add_argument(*flags, default=None, **kwargs)

    g = p.add_argument_group("what to train")
    g.add_argument(
        "--model", required=True, help="a registered FasterViT (fastervit.list_models()) or a peer"
    )
    g.add_argument("--dataset", required=True, help="fashion_mnist, digits or imagefolder")
    g.add_argument(
        "--output",
        required=True,
        type=output_path,
        help="run folder: checkpoints, CSV logs, run.json, TensorBoard events (one run at a time)",
    )
    add(g, "--data-dir", help="dataset folder (default: the dataset's usual place, see $FASTERVIT_DATA)")
    add(g, "--model-kwargs", type=json_object, help="JSON object of model constructor overrides")
    add(
        g,
        "--num-classes",
        type=positive_int,
        help="classifier outputs, at least the dataset's classes (default: the dataset's)",
    )
    add(
        g,
        "--pretrained",
        metavar="FILE",
        help="fine-tune from this checkpoint (release format); its head is replaced when its "
        "number of classes differs",
    )
    add(g, "--resume", help="continue from this checkpoint (a run's last.pt), with the same settings")
    add(
        g,
        "--preset",
        choices=tuple(PRESETS),
        help="start from the release's settings for this FasterViT size (fastervit.train.presets; "
        "flags given explicitly win)",
    )
    add(
        g,
        "--rewind",
        action="store_true",
        help="allow --resume from a checkpoint older than the output's last.pt (best.pt, say), "
        "overwriting last.pt and cutting the logs back to that step",
    )

    g = p.add_argument_group("schedule and optimizer")
    add(g, "--epochs", type=positive_int, help="epochs to train")
    add(g, "-b", "--batch-size", type=positive_int, help="images per process per micro-batch")
    add(
        g,
        "--lr",
        type=positive_float,
        help="peak learning rate; overrides --lr-base (default: from --lr-base)",
    )
    add(
        g,
        "--lr-base",
        type=positive_float,
        help="learning rate of a global batch of --lr-base-size images, scaled to the global batch "
        "when --lr is not given (timm's rule, see above)",
    )
    add(g, "--lr-base-size", type=positive_int, help="the batch --lr-base is for (the divisor)")
    add(
        g,
        "--lr-base-scale",
        choices=LR_BASE_SCALES,
        help="how --lr-base scales with the batch (default: sqrt for lamb and adamw, linear otherwise)",
    )
    add(g, "--opt", choices=OPTIMIZERS, help="optimizer")
    add(g, "--opt-eps", type=positive_float, help="optimizer epsilon")
    add(g, "--weight-decay", type=non_negative_float, help="decoupled weight decay")
    add(g, "--warmup-epochs", type=non_negative_float, help="linear warmup length, in (fractional) epochs")
    add(g, "--warmup-lr", type=non_negative_float, help="learning rate the warmup starts from")
    add(g, "--min-lr", type=non_negative_float, help="learning rate at the end of the cosine decay")
    add(
        g,
        "--cooldown-epochs",
        type=non_negative_int,
        help="epochs at --min-lr after the cosine; the run lasts --epochs + these",
    )
    add(
        g,
        "--clip-grad",
        type=positive_float,
        help="clip the global gradient norm to this (default: no clipping)",
    )
    add(g, "--grad-accum-steps", type=positive_int, help="micro-batches per optimizer step")
    add(
        g,
        "--max-steps",
        type=positive_int,
        help="stop after this many optimizer steps in total (the schedule is unchanged)",
    )
    add(g, "--seed", type=non_negative_int, help="seed of weights, data order and augmentation")

    g = p.add_argument_group("regularisation and augmentation")
    add(g, "--smoothing", type=probability, help="label smoothing")
    add(g, "--mixup", type=non_negative_float, help="mixup Beta alpha, 0 disables")
    add(g, "--cutmix", type=non_negative_float, help="cutmix Beta alpha, 0 disables")
    add(g, "--mixup-prob", type=probability, help="probability of mixing a batch")
    add(
        g,
        "--mixup-switch-prob",
        type=probability,
        help="probability of cutmix instead of mixup when both are on",
    )
    add(g, "--drop-path", type=probability, help="stochastic depth rate (default: the model's)")
    add(g, "--model-ema", action="store_true", help="keep an EMA of the weights, evaluate and select with it")
    add(g, "--model-ema-decay", type=probability, help="EMA decay")
    add(
        g,
        "--mesa",
        type=non_negative_float,
        help="weight of MESA, the distillation from the EMA model (needs --model-ema; 0 disables)",
    )
    add(
        g,
        "--mesa-start-ratio",
        type=probability,
        help="MESA from the first epoch past this fraction of --epochs",
    )
    add_resolution(
        g,
        "image side, a multiple of 32; training crops squares, so H W must be equal (default: "
        "the dataset's, 32 for digits and fashion_mnist, 224 for imagefolder)",
    )
    add(g, "--crop-pct", type=positive_float, help="evaluation centre-crop fraction (default: the dataset's)")
    add(
        g,
        "--scale",
        type=probability,
        nargs=2,
        metavar=("MIN", "MAX"),
        help="random-resized-crop area range",
    )
    add(g, "--hflip", type=probability, help="horizontal flip probability")
    add(g, "--color-jitter", type=non_negative_float, help="colour jitter strength (when --aa is off)")
    add(
        g,
        "--aa",
        help="RandAugment policy in timm's notation, e.g. rand-m9-mstd0.5-inc1 (sections m, n, p, "
        "mstd, mmax, inc, w; default: off)",
    )
    add(g, "--reprob", type=probability, help="random erasing probability, 0 disables")
    add(g, "--remode", choices=ERASE_MODES, help="random erasing fill: per pixel, per box, or zeros")
    add(g, "--recount", type=positive_int, help="random erasing: largest number of boxes per image")

    g = p.add_argument_group("hardware")
    add(g, "--device", choices=("cpu", "cuda"), help="default: cuda when available")
    add(g, "--amp", action="store_true", help="mixed precision (autocast) in --amp-dtype")
    add(
        g,
        "--amp-dtype",
        choices=tuple(AMP_DTYPES),
        help="autocast type with --amp (default: float16 on CUDA, as in timm; bfloat16 on the CPU, "
        "the type CPUs accelerate; float16 needs and gets loss scaling)",
    )
    add(g, "--channels-last", action="store_true", help="channels-last memory format")
    add(g, "--compile", action="store_true", help="torch.compile the model")
    add(g, "--sync-bn", action="store_true", help="synchronise BatchNorm statistics across GPUs (CUDA only)")
    add(g, "-j", "--workers", type=non_negative_int, help="data-loading processes per training process")
    g.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar on stderr (there is none either when stderr is not a terminal)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from parsed flags: the ``--preset``'s settings, if one is given,
    under the flags given explicitly; the config's defaults for everything else."""
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given["output"] = str(given["output"])
    if "scale" in given:
        given["scale"] = tuple(given["scale"])
    if "resolution" in given:
        height, width = given["resolution"]
        if height != width:
            raise ValueError(
                f"--resolution {height} {width}: training takes square images (the data "
                f"transforms crop and resize squares); pass one side, e.g. --resolution {height}."
            )
        given["resolution"] = height
    if args.preset is not None:
        given = {**preset_values(args.preset), **given}
    return TrainConfig(**given)


def run(args: argparse.Namespace) -> dict | None:
    """Train; progress to stderr from rank 0, the summary returned by rank 0 only (it alone prints)."""
    config = config_from_args(args)
    if int(os.environ.get("RANK", "0")) != 0:
        train(config)
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("fastervit")
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    bar, redirect = None, contextlib.nullcontext()
    if args.progress and sys.stderr.isatty():
        # Imported only here: importing tqdm.contrib warns in notebooks (no ipywidgets).
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar, redirect = (
            ProgressBar(dynamic_ncols=True),
            logging_redirect_tqdm([package_logger]),
        )  # logs above the bar
    try:
        with redirect:
            return train(config, callback=bar)
    finally:
        if bar is not None:
            bar.close()
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
