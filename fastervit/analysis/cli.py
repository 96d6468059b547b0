"""``fastervit flops`` and ``fastervit bench``: counting and timing from the command line.

Examples::

    python -m fastervit flops --model faster_vit_0_224 --resolution 320 256
    python -m fastervit bench --model faster_vit_0_224 --batch-size 128 --device cuda --amp bf16
    python -m fastervit bench --model all --peers --batch-size 128 --amp bf16 --peak-tflops 989
    python -m fastervit bench --model faster_vit_0_224 --ablation --amp bf16

Each prints one JSON record as its last line (progress goes to stderr).
"""

import argparse
import json
from pathlib import Path
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
from fastervit.analysis.flops import analytic_report, count_flops, count_params


def _resolution(values: list[int] | None) -> tuple[int, int] | None:
    if values is None:
        return None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--resolution takes H [W], got {values}")
    return (values[0], values[-1])


def run_flops(args: argparse.Namespace) -> dict[str, Any]:
    """Count one model's MACs with fvcore (and the formulas as a check), or the formulas only."""
    resolution = _resolution(args.resolution)
    analytic = analytic_report(args.model, resolution, args.batch_size, params=count_params(args.model))
    report = analytic if args.method == "analytic" else count_flops(args.model, resolution, args.batch_size)
    return {
        "command": "flops",
        "status": "ok",
        **report.record(),
        "gmacs_analytic": round(analytic.gmacs, 6),
    }


def _models(args: argparse.Namespace) -> list[str]:
    names = []
    for item in args.model.split(","):
        names += list(FASTERVIT_FAMILY) if item == "all" else [item]
    return names + (list(PEERS) if args.peers else [])


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Time the models; one record for one model, a list under ``results`` for several."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = BenchSettings(
        batch_size=args.batch_size,
        resolution=_resolution(args.resolution) or (224, 224),
        device=device,
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
    record = {"command": "bench", "status": "ok"}
    if len(results) == 1 and not args.ablation:
        record.update(results[0])
    else:
        record["results"] = results
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(record, indent=1) + "\n")
    return record


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``flops`` and ``bench`` commands."""
    p = subparsers.add_parser(
        "flops",
        help="count MACs/FLOPs and parameters of a model",
        description="Count MACs (fvcore; 1 MAC = 1 fvcore 'flop'; GFLOPs = 2 x GMACs) and parameters.",
    )
    p.add_argument("--model", required=True, help="a registered model name, e.g. faster_vit_0_224")
    p.add_argument(
        "--resolution", type=int, nargs="+", metavar="H [W]", help="input size (default: the model's)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="images per forward (default: 1)")
    p.add_argument(
        "--method",
        choices=("fvcore", "analytic"),
        default="fvcore",
        help="fvcore traces a forward; analytic sums the closed formulas (instant). Default: fvcore",
    )
    p.set_defaults(handler=run_flops)

    p = subparsers.add_parser(
        "bench",
        help="measure throughput and latency",
        description="Time inference forwards: warm-up, synchronised timing, median and spread.",
    )
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
        "--batch-size", type=int, default=128, help="images per batch; 1 measures latency (default: 128)"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="autocast precision (default: float32)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    p.add_argument("--resolution", type=int, nargs="+", metavar="H [W]", help="input size (default: 224)")
    p.add_argument("--warmup", type=int, default=10, help="untimed batches first (default: 10)")
    p.add_argument("--iters", type=int, default=50, help="timed batches per model (default: 50)")
    p.add_argument(
        "--rounds",
        type=int,
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
        type=float,
        help="the device's peak TFLOP/s at this precision, to report model FLOPs utilisation (MFU)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads; default: torch's)")
    p.add_argument("--output", type=Path, help="also write the JSON record to this file")
    p.set_defaults(handler=run_bench)
