"""``fastervit flops``: count a model's MACs (FLOPs = 2 x MACs) and parameters.

Examples::

    python -m fastervit flops --model faster_vit_0_224
    python -m fastervit flops --model faster_vit_0_224 --resolution 320 256 --method analytic
    python -m fastervit flops --model faster_vit_0_224 --model-kwargs '{"depths": [1, 1, 2, 1]}'

fvcore counts one multiply-add as one "flop": ``gmacs`` is fvcore's total, ``gflops`` twice
it (PyTorch's FlopCounterMode convention). ``gmacs`` counts the position MLPs once per
forward (a training forward); ``gmacs_cached_bias`` leaves them out (a cached inference
forward). The record also holds the closed formulas' total, ``gmacs_analytic``, as a check.
"""

import argparse
from typing import Any

from fastervit.analysis.counting import analytic_report, count_flops, count_params
from fastervit.commands.common import add_resolution, json_object, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name, e.g. faster_vit_0_224")
    add_resolution(p, "input size, sides multiples of 32 (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward (default: 1)")
    p.add_argument(
        "--method",
        choices=("fvcore", "analytic"),
        default="fvcore",
        help="fvcore traces a forward; analytic sums the closed formulas (instant). Default: fvcore",
    )
    p.add_argument(
        "--model-kwargs",
        type=json_object,
        help="JSON object of constructor overrides, e.g. '{\"depths\": [1, 1, 2, 1]}'",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Count one model's MACs with fvcore (and the formulas as a check), or the formulas only."""
    overrides = args.model_kwargs or {}
    params = count_params(args.model, **overrides)
    analytic = analytic_report(args.model, args.resolution, args.batch_size, params, overrides)
    if args.method == "analytic":
        report = analytic
    else:
        report = count_flops(args.model, args.resolution, args.batch_size, overrides)
    return {**report.record(), "gmacs_analytic": round(analytic.gmacs, 6)}
