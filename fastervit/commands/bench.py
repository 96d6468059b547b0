"""``fastervit bench``: measure inference throughput and latency.

Examples::

    python -m fastervit bench --model faster_vit_0_224 --batch-size 8 --threads 2
    python -m fastervit bench --model faster_vit_0_224 --batch-size 8 --threads 2 --deploy
    python -m fastervit bench --model faster_vit_0_224 --device cpu --runtime onnxruntime
    python -m fastervit bench --model faster_vit_0_224 --batch-size 8 --ablation
    python -m fastervit bench --model all --peers --batch-size 128 --device cuda --amp bf16
    python -m fastervit bench --model faster_vit_fashion_mnist,resnet_fashion_mnist --train \\
        --resolution 64 --batch-size 128 --amp bf16

Warm-up, synchronised timing, rounds that alternate between models, medians and spread, and
the latency of a batch of one measured in the same rounds. ``--deploy`` runs FasterViT
through ``fastervit.deploy`` (BatchNorm folded, position tables precomputed, bf16 where the
hardware has it, torch.compile); ``--ablation`` compares float32 eager, each of those
optimisations alone, all of them and ONNX Runtime, with each one's agreement with float32
eager on real images. --train times a training step (forward, cross-entropy, backward, an
AdamW step; with --amp under autocast, as fastervit train runs it) instead of inference. The record holds the machine (``machine``) and a list under
``results``, one entry per model or setting, whatever the flags.
"""

import argparse
import json
from dataclasses import replace
from typing import Any

import torch

from fastervit.analysis.benchmark import (
    AMP_DTYPES,
    FASTERVIT_FAMILY,
    PEERS,
    RUNTIMES,
    BenchSettings,
    ablation_settings,
    benchmark,
    compare_settings,
    machine_info,
)
from fastervit.commands.common import (
    add_resolution,
    non_negative_int,
    output_path,
    positive_float,
    positive_int,
    resolve_device,
)
from fastervit.deploy import DeployOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="faster_vit_0_224",
        help="a model name, several separated by commas, or 'all' (FasterViT-0 to -6 at 224)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="time a training step (forward, loss, backward, AdamW step) instead of inference",
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
        help="images per batch (latency is always measured at batch 1 as well; default: 128)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--deploy",
        action="store_true",
        help="run FasterViT through fastervit.deploy: BatchNorm folded, position tables precomputed, "
        "bf16 where the hardware computes it natively, torch.compile",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="torch",
        help="torch, or onnxruntime: export FasterViT to ONNX and time ONNX Runtime on the CPU",
    )
    p.add_argument(
        "--amp",
        choices=("fp32", *AMP_DTYPES),
        help="precision (default: float32; with --deploy: bf16 where native, else float32)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="NHWC memory format for model and input (default: off; with --deploy: on CUDA only)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model, compiled during warm-up (default: off; with --deploy: on)",
    )
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
        help="one FasterViT: float32 eager, each deploy optimisation alone, all of them (deploy), and "
        "ONNX Runtime on the CPU, in alternation, with their agreement with float32 eager",
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


def _settings(args: argparse.Namespace, device: torch.device) -> BenchSettings:
    """The settings the flags describe; conflicting flags are errors that name the fix."""
    amp = None if args.amp in (None, "fp32") else args.amp
    common = dict(
        batch_size=args.batch_size,
        resolution=args.resolution or (224, 224),
        device=device.type,
        warmup=args.warmup,
        iters=args.iters,
    )
    if args.runtime == "onnxruntime":
        if args.deploy or args.compile or amp or args.channels_last:
            raise ValueError(
                "--runtime onnxruntime runs the exported float32 model: leave out --deploy, --amp, "
                "--compile and --channels-last"
            )
        return BenchSettings(**common, runtime="onnxruntime", train=args.train)
    if args.deploy:
        if args.amp == "fp16":
            raise ValueError("--deploy computes in bf16 or fp32: use --amp bf16 or --amp fp32")
        overrides: dict[str, Any] = {}
        if args.amp is not None:
            overrides["precision"] = args.amp
        if args.compile is not None:
            overrides["compile"] = args.compile
        if args.channels_last is not None:
            overrides["channels_last"] = args.channels_last
        return BenchSettings(**common, deploy=replace(DeployOptions(), **overrides), train=args.train)
    return BenchSettings(
        **common,
        amp=amp,
        channels_last=bool(args.channels_last),
        compile=bool(args.compile),
        train=args.train,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time the models; ``results`` holds one entry per model (or per setting with --ablation)."""
    if args.iters < args.rounds:
        raise ValueError(
            f"--iters ({args.iters}) must be at least --rounds ({args.rounds}): each round times one or more batches"
        )
    device = resolve_device(args.device)
    names = _models(args)
    if (args.deploy or args.runtime != "torch" or args.ablation) and args.peers:
        raise ValueError("--deploy, --runtime and --ablation apply to FasterViT models: leave out --peers")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = _settings(args, device)
    if args.train and args.ablation:
        raise ValueError("--train times the model as trained: leave out --ablation")
    if args.ablation:
        if len(names) != 1:
            raise ValueError(f"--ablation compares settings of one model, got {len(names)}: {names}")
        if args.deploy or args.runtime != "torch":
            raise ValueError("--ablation times every path itself: leave out --deploy and --runtime")
        results = compare_settings(names[0], ablation_settings(settings), args.rounds, args.peak_tflops)
    else:
        results = benchmark(names, settings, args.rounds, args.peak_tflops)
    record = {"machine": machine_info(device), "results": results}
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"command": "bench", "status": "ok", **record}, indent=1) + "\n")
    return record
