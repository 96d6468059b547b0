"""``fastervit bench``: measure inference throughput and latency.

Examples::

    python -m fastervit bench --model faster_vit_0_224 --batch-size 8 --threads 2
    python -m fastervit bench --model all --peers --batch-size 128 --device cuda --amp bf16
    python -m fastervit bench --model faster_vit_0_224 --ablation --amp bf16

Warm-up, synchronised timing, rounds that alternate between models, medians and spread.
The record always holds a list under ``results``, one entry per model (or setting).
"""

import argparse
import json
from typing import Any

import torch

from fastervit.analysis.benchmark import (
    FASTERVIT_FAMILY,
    PEERS,
    BenchSettings,
    ablation_settings,
    benchmark,
    compare_settings,
)
from fastervit.commands.common import (
    add_resolution,
    non_negative_int,
    output_path,
    positive_float,
    positive_int,
    resolve_device,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="faster_vit_0_224",
        help="a model name, several separated by commas, or 'all' (FasterViT-0 to -6 at 224)",
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help=f"also time peer models when timm/torchvision exist: {', '.join(PEERS)}",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=128,
        help="images per batch; 1 measures latency (default: 128)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="autocast precision (default: float32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    add_resolution(p, "input size, sides multiples of 32 (default: 224)")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed batches first (default: 10)")
    p.add_argument("--iters", type=positive_int, default=50, help="timed batches per model (default: 50)")
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=5,
        help="timed batches are split in this many rounds, alternating between models (default: 5)",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="compare baseline, channels_last, compile and both for one model, in alternation",
    )
    p.add_argument(
        "--peak-tflops",
        type=positive_float,
        help="the device's peak TFLOP/s at this precision, to report model FLOPs utilisation (MFU)",
    )
    p.add_argument(
        "--threads", type=positive_int, help="CPU threads (torch.set_num_threads; default: torch's)"
    )
    p.add_argument("--output", type=output_path, help="also write the JSON record to this file")


def _models(args: argparse.Namespace) -> list[str]:
    names = []
    for item in args.model.split(","):
        names += list(FASTERVIT_FAMILY) if item == "all" else [item]
    return names + (list(PEERS) if args.peers else [])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the models; ``results`` holds one entry per model (or per setting with --ablation)."""
    if args.iters < args.rounds:
        raise ValueError(
            f"--iters ({args.iters}) must be at least --rounds ({args.rounds}): each round times one or more batches"
        )
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = BenchSettings(
        batch_size=args.batch_size,
        resolution=args.resolution or (224, 224),
        device=device.type,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        warmup=args.warmup,
        iters=args.iters,
    )
    names = _models(args)
    if args.ablation:
        if len(names) != 1:
            raise ValueError(f"--ablation compares settings of one model, got {len(names)}: {names}")
        results = compare_settings(names[0], ablation_settings(settings), args.rounds, args.peak_tflops)
    else:
        results = benchmark(names, settings, args.rounds, args.peak_tflops)
    record = {"results": results}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"command": "bench", "status": "ok", **record}, indent=1) + "\n")
    return record
