"""``fastervit summary``: a torchinfo table of a registered model at any resolution.

Examples::

    python -m fastervit summary --model faster_vit_0_224
    python -m fastervit summary --model faster_vit_2_224 --resolution 320 256 --depth 4
    python -m fastervit summary --model faster_vit_0_224 --model-kwargs '{"num_classes": 10}'

The model is built for the input size and run once on zeros (eval mode, no gradients). The
table (torchinfo's: each module's output shape and parameters) goes to stderr; the JSON
record on stdout holds the parameters, the input and output shapes and the MACs of the
package's formulas (fvcore's convention, 1 per multiply-add: ``gmacs`` with the position
MLPs, as a training forward runs them, ``gmacs_cached_bias`` without, as a cached inference
forward). torchinfo's own "mult-adds" line in the table counts linear layers once per image
rather than once per token and misses attention's matrix products, so for FasterViT it is
far below the real count; the record's MACs are the ones to use.
"""

import argparse
import sys
from typing import Any

from fastervit.analysis.counting import CONVENTION, analytic_report
from fastervit.commands.common import add_resolution, json_object, positive_int
from fastervit.variants import create_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name, e.g. faster_vit_0_224")
    add_resolution(p, "input size, sides multiples of 32 (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images in the input (default: 1)")
    p.add_argument(
        "--depth", type=positive_int, default=3, help="module nesting shown in the table (default: 3)"
    )
    p.add_argument(
        "--model-kwargs",
        type=json_object,
        help="JSON object of constructor overrides, e.g. '{\"num_classes\": 10}'",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Print the table to stderr; return parameters, shapes and MACs."""
    try:
        import torchinfo
    except ImportError as error:
        raise ImportError('summary needs torchinfo: pip install "fastervit-book[analysis]"') from error

    overrides = dict(args.model_kwargs or {})
    if args.resolution:
        overrides["resolution"] = args.resolution
    model = create_model(args.model, **overrides).eval()
    shape = (args.batch_size, model.in_chans, *model.resolution)
    stats = torchinfo.summary(
        model,
        input_size=shape,
        depth=args.depth,
        col_names=("output_size", "num_params"),
        mode="eval",
        device="cpu",
        verbose=0,
    )
    print(stats, file=sys.stderr)
    flops = analytic_report(args.model, model.resolution, args.batch_size, overrides=overrides)
    return {
        "model": args.model,
        "resolution": list(model.resolution),
        "params": stats.total_params,
        "trainable_params": stats.trainable_params,
        "input_shape": list(shape),
        "output_shape": list(stats.summary_list[0].output_size),  # the model's own row
        "gmacs": round(flops.gmacs, 6),
        "gmacs_cached_bias": round(flops.gmacs_cached_bias, 6),
        "convention": CONVENTION,
    }
