"""One switch for the size of the book's long runs: ``smoke`` (the default) or ``full``.

Chapters whose work scales (9: throughput benchmarks, 11: training, 12: segmentation) read
their settings here, in a parameters cell near their top::

    settings = fastervit.sizes.chapter_settings("training")
    settings.size, settings.device  # "smoke" unless FASTERVIT_SIZE=full; "cuda" when available

``smoke`` is what the tests and the stored outputs use: minutes on one CPU thread.
``full`` is the chapter's real run (``FASTERVIT_SIZE=full make lab``, or edit the cell), meant
for a GPU. The scripts that produce the stored GPU results (``scripts/gpu_results.sh``,
``scripts/train_gpu.sh``, ``scripts/train_dense_gpu.sh``) read the same presets through
:func:`preset_value`, so a notebook run and a script run of one size use the same flags.

A preset holds flags of the package's commands (``python -m fastervit train``, ``segment``,
``bench``), never the device or output paths, which belong to the machine: a notebook parses
them with the command's own parser, a script passes them on the command line. Values that
are not flags (the size of a data subset) sit beside them.
"""

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

SIZE_VARIABLE = "FASTERVIT_SIZE"
SIZES = ("smoke", "full")


def _flags(command_line: str) -> tuple[str, ...]:
    """Shell words of ``command_line`` (quotes keep a JSON argument one word)."""
    return tuple(shlex.split(command_line))


# The recipe of the shipped Fashion-MNIST model (the command in results/fashion_mnist/faster_vit/provenance.json,
# minus --output and -j; tests/test_sizes.py checks that the two agree).
_FASHION_MNIST_RECIPE = (
    "--model faster_vit_fashion_mnist --dataset fashion_mnist --resolution 64 --opt adamw "
    "--lr 2e-3 --weight-decay 0.05 --min-lr 1e-5 --smoothing 0.1 --scale 0.8 1 --color-jitter 0 "
    "--model-ema --seed 0"
)

PRESETS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    # Chapter 9 and scripts/gpu_results.sh: flags of `fastervit bench`.
    "throughput": {
        "smoke": {
            "throughput": _flags("--batch-size 2 --resolution 64 --warmup 1 --iters 2 --rounds 1"),
            "latency": _flags("--batch-size 1 --resolution 64 --warmup 1 --iters 2 --rounds 1"),
            "sweep": _flags("--warmup 1 --iters 2 --rounds 1"),
            "resolutions": (64, 96),
            "pixels_per_batch": 2 * 64 * 64,
        },
        "full": {
            "throughput": _flags("--batch-size 128 --warmup 10 --iters 50 --rounds 5"),
            "latency": _flags("--batch-size 1 --warmup 20 --iters 200 --rounds 5"),
            "sweep": _flags("--warmup 5 --iters 30 --rounds 3"),
            "resolutions": (224, 256, 320, 384, 448, 512, 640, 768, 896, 1024),
            "pixels_per_batch": 128 * 224 * 224,
        },
    },
    # Chapter 11 and scripts/train_gpu.sh: flags of `fastervit train`. The smoke run keeps
    # the recipe and the layout (two conv stages, a HAT stage of 2x2 windows with carrier
    # tokens, a last attention stage) and shrinks the rest: a narrower, shallower model,
    # 4,800 training and 1,000 test images, 300 steps of 64, float32, an EMA of ~50 steps.
    "training": {
        "smoke": {
            "train": _flags(
                f"{_FASHION_MNIST_RECIPE} --model-kwargs "
                """'{"dim": 16, "in_dim": 16, "depths": [1, 1, 3, 1], "num_heads": [1, 2, 4, 8]}' """
                "--epochs 4 -b 64 --warmup-epochs 0.4 --model-ema-decay 0.98"
            ),
            "train_images": 4800,
            "test_images": 1000,
        },
        "full": {
            "train": _flags(
                f"{_FASHION_MNIST_RECIPE} --epochs 10 -b 128 --warmup-epochs 1 --model-ema-decay 0.999 "
                "--amp --amp-dtype bfloat16"
            ),
            "train_images": None,  # all 60,000
            "test_images": None,  # all 10,000
        },
    },
    # Chapter 12 and scripts/train_dense_gpu.sh: flags of `fastervit segment`.
    "segmentation": {
        "smoke": {
            "segment": _flags("--model tiny --resolution 64 --steps 400 --batch-size 16 --warmup-steps 40"),
        },
        "full": {
            "segment": _flags(
                "--model faster_vit_0_224 --resolution 256 --items 3 8 --scale 0.15 0.4 --channels 128 "
                "--steps 6000 --batch-size 32 --lr 5e-3 --warmup-steps 500 --drop-path 0.1 "
                "--train-samples 400000 --val-samples 1000 --eval-every 1000 --log-every 100 "
                "--amp --amp-dtype bfloat16"
            ),
        },
    },
}


@dataclass(frozen=True)
class ChapterSettings:
    """What a chapter's parameters cell picked.

    Attributes:
        chapter: the key of :data:`PRESETS` (``"throughput"``, ``"training"``, ``"segmentation"``).
        size: ``"smoke"`` or ``"full"``.
        device: ``"cuda"`` when a GPU is visible, else ``"cpu"``.
        preset: that chapter's values at that size (read-only).
    """

    chapter: str
    size: str
    device: str
    preset: Mapping[str, Any]


def read_size(environ: Mapping[str, str] = os.environ) -> str:
    """The size that ``FASTERVIT_SIZE`` asks for: ``"smoke"`` when unset or empty.

    Raises:
        ValueError: for any other value than ``smoke`` or ``full``, naming the variable.
    """
    size = environ.get(SIZE_VARIABLE, "").strip().lower() or "smoke"
    if size not in SIZES:
        raise ValueError(
            f"{SIZE_VARIABLE}={environ[SIZE_VARIABLE]!r} is not a size: use {' or '.join(SIZES)} "
            f"(or leave it unset for smoke)."
        )
    return size


def default_device() -> str:
    """``"cuda"`` when PyTorch sees a GPU, else ``"cpu"`` (the tests hide GPUs, so they get the CPU)."""
    import torch  # here, so that a shell script reading a preset does not wait for torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def chapter_settings(chapter: str, size: str | None = None, device: str | None = None) -> ChapterSettings:
    """The settings of ``chapter``'s runs: its preset at ``size`` on ``device``.

    Args:
        chapter: a key of :data:`PRESETS`.
        size: ``"smoke"`` or ``"full"``; default: :func:`read_size` (``FASTERVIT_SIZE``).
        device: default: :func:`default_device`.
    """
    size = read_size() if size is None else size
    presets = _chapter(chapter)
    if size not in presets:
        raise ValueError(f"unknown size {size!r}: use {' or '.join(SIZES)}")
    device = default_device() if device is None else device
    return ChapterSettings(chapter, size, device, MappingProxyType(dict(presets[size])))


def preset_value(size: str, chapter: str, key: str) -> list[str]:
    """One entry of a preset as a list of strings, one per shell word (for the scripts).

    A single number becomes a one-element list; ``None`` an empty one.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: use {' or '.join(SIZES)}")
    preset = _chapter(chapter)[size]
    if key not in preset:
        raise ValueError(f"the {chapter!r} preset has no {key!r}; it has {', '.join(preset)}")
    value = preset[key]
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _chapter(chapter: str) -> Mapping[str, Mapping[str, Any]]:
    if chapter not in PRESETS:
        raise ValueError(f"no presets for {chapter!r}: the chapters with presets are {', '.join(PRESETS)}")
    return PRESETS[chapter]
