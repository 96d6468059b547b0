"""What every command shares: argument types that refuse bad values before any work, the
one ``--resolution`` flag, device selection, and the strict-JSON record printed last.

A bad value is a usage error: argparse reports it with the flag's name and the command exits
with status 2 (and, like every command, prints a JSON record as its last line).
"""

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _number(kind: type, check: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value) or not check(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = wanted  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
probability = _number(float, lambda v: 0 <= v <= 1, "a probability in [0, 1]")


def json_object(text: str) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object of constructor overrides."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as \'{{"dim": 16, "depths": [1, 1, 1, 1]}}\', got {text!r} ({error})'
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object ({{...}}), got {type(value).__name__}: {text!r}"
        )
    return value


def output_path(text: str) -> Path:
    """A file or folder to write, checked before any work.

    Refused: an empty path, a path whose parent is a file ("not a directory"), and a path
    whose nearest existing parent folder cannot be written to. Missing folders are fine:
    the writer creates them.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    path = Path(text)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text!r}: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{text!r}: the folder {parent} is not writable")
            break
    return path


def output_file(text: str) -> Path:
    """A file to write: :func:`output_path`, and not an existing folder."""
    path = output_path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; name the file to write inside it")
    return path


def existing_file(text: str) -> Path:
    """A file to read: it must exist and be a file, before any work."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path


class _ResolutionAction(argparse.Action):
    """``--resolution H [W]`` -> ``(H, W)``, each side a positive multiple of 32."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if len(values) not in (1, 2):
            parser.error(f"{option_string} takes H or H W, got {len(values)} values: {values}")
        height, width = values[0], values[-1]
        if height % 32 or width % 32:
            fix = f"{32 * max(1, math.ceil(height / 32))} {32 * max(1, math.ceil(width / 32))}"
            parser.error(
                f"{option_string} sides must be multiples of 32 (the model's total stride), "
                f"got {height}x{width}; try {option_string} {fix}"
            )
        setattr(namespace, self.dest, (height, width))


def add_resolution(parser: argparse.ArgumentParser | argparse._ArgumentGroup, help: str) -> None:
    """The one ``--resolution H [W]`` flag of every command (``None`` when not given)."""
    parser.add_argument(
        "--resolution", type=positive_int, nargs="+", metavar=("H", "W"), action=_ResolutionAction, help=help
    )


def resolve_device(name: str | None) -> torch.device:
    """The device a command runs on: ``name``, or CUDA when available, else the CPU.

    Asking for CUDA where there is none is an error that says so, before any work.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: there is no CUDA device (torch.cuda.is_available() is False; torch "
            f"{torch.__version__} {'has no CUDA support' if torch.version.cuda is None else 'sees no GPU'}); "
            "run with --device cpu or leave --device out"
        )
    return device


def to_json(record: dict[str, Any], indent: int | None = None) -> str:
    """Strict JSON (no NaN or Infinity, which JSON does not have): a value that is not finite
    is a bug in the command that produced it, and raises here rather than printing bad JSON."""
    return json.dumps(record, indent=indent, allow_nan=False)
