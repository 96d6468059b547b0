"""``fastervit export``: write a model as a torch.export program, an ONNX file or a weights file, and check it.

Examples::

    python -m fastervit export --model faster_vit_0_224 --format onnx --output fv0.onnx
    python -m fastervit export --model faster_vit_0_224 --format export --output fv0_backbone.pt2 \\
        --backbone --resolution 512 640
    python -m fastervit export --model faster_vit_0_224 --checkpoint run/best.pt --format onnx --output m.onnx
    python -m fastervit export --model faster_vit_fashion_mnist --checkpoint run/last.pt \\
        --format weights --half --output faster_vit_fashion_mnist.pth

The batch dimension stays dynamic; height and width are fixed (``--resolution``, default the
model's). The file is loaded back and compared with the eager model on random batches of 1
and 3 images; it is written only if every output agrees within 1e-4 of its own largest
absolute value (plus 1e-6; 1e-2 for float16 weights), and the command fails otherwise.
``--format weights`` writes the state dict alone in the release's format
(``{"state_dict": ...}``; a training checkpoint's EMA weights when it kept them), which
``create_model(name, pretrained=FILE)`` loads; ``--half`` stores it in float16. The last line printed is a JSON
record with the output path, the format, ``verified``, the tolerance and the largest absolute
and relative differences per batch size.
"""

import argparse
from pathlib import Path
from typing import Any

from fastervit.checkpoint import read_checkpoint
from fastervit.commands.common import (
    add_resolution,
    existing_file,
    json_object,
    non_negative_int,
    output_file,
)
from fastervit.export import FORMATS, BackboneFeatures, check_output_name, export_model
from fastervit.variants import create_model


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint file, read once: ``(the file's dict, constructor arguments it stores)``.

    Training checkpoints (``fastervit train``) store ``model_kwargs``; release files store none.
    """
    checkpoint = read_checkpoint(path)  # says clearly why a file cannot be read
    kwargs = checkpoint.get("model_kwargs")
    return checkpoint, dict(kwargs) if isinstance(kwargs, dict) else {}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build (and load) the model, export it, compare the file with the eager model."""
    check_output_name(args.format, args.output)
    if args.half and args.format != "weights":
        raise ValueError(
            f"--half stores weight files in float16: use it with --format weights, not {args.format}"
        )
    if args.backbone and args.format == "weights":
        raise ValueError(
            "--backbone exports a traced program: a weights file holds the whole model; leave it out"
        )
    checkpoint, overrides = _read_checkpoint(args.checkpoint) if args.checkpoint else (None, {})
    overrides.update(args.model_kwargs or {})
    if args.resolution:
        overrides["resolution"] = args.resolution
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    model = create_model(args.model, pretrained=checkpoint, **overrides).eval()
    height, width = model.resolution
    if height % 32 or width % 32:  # a model_kwargs resolution; --resolution is checked when parsed
        raise ValueError(f"the resolution must have sides divisible by 32, got {height}x{width}")
    exported = BackboneFeatures(model) if args.backbone else model
    record = export_model(exported, args.format, args.output, (model.in_chans, height, width), half=args.half)
    return {
        "model": args.model,
        "backbone": args.backbone,
        "checkpoint": None if args.checkpoint is None else str(args.checkpoint),
        **record,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name, e.g. faster_vit_0_224")
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="'export': a torch.export program (.pt2); 'onnx': an ONNX file; 'weights': the "
        "state dict in the release's format",
    )
    p.add_argument("--half", action="store_true", help="with --format weights: store the weights in float16")
    p.add_argument(
        "--output", required=True, type=output_file, help="the file to write (only once it is verified)"
    )
    add_resolution(p, "input size the file is fixed to, sides multiples of 32 (default: the model's)")
    p.add_argument(
        "--checkpoint",
        type=existing_file,
        help="weights to load (release format or a `fastervit train` checkpoint)",
    )
    p.add_argument(
        "--backbone",
        action="store_true",
        help="export forward_intermediates: a tuple of the 4 stage maps (strides 4 to 32)",
    )
    p.add_argument(
        "--num-classes",
        type=non_negative_int,
        help="classifier size (default: the model's or the checkpoint's)",
    )
    p.add_argument(
        "--model-kwargs",
        type=json_object,
        help="JSON of constructor overrides, e.g. '{\"depths\": [1, 1, 2, 1]}'",
    )
