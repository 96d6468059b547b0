"""``fastervit summary``: a torchinfo table of a registered model at any resolution.

Example::

    python -m fastervit summary --model faster_vit_0_224 --resolution 320 256
"""

import argparse
from typing import Any

from fastervit.commands.common import add_resolution


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a registered model name, e.g. faster_vit_0_224")
    add_resolution(p, "input size, sides multiples of 32 (default: the model's)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise NotImplementedError("summary: to be written")
