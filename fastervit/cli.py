"""``python -m fastervit COMMAND ...``: the command-line entry point.

Commands live in the modules listed in :data:`COMMANDS`; each module exposes
``add_parser(subparsers)``, and every sub-parser it adds sets ``handler``, a function taking
the parsed arguments and returning a JSON-ready dict (or None on processes other than
rank 0, which print nothing). To add a command, write such a module and list it here.

The last line a command prints is a JSON record: its results, or
``{"command": ..., "status": "error", "error": ...}`` (exit status 1) when it failed; the
traceback goes to stderr.
"""

import argparse
import importlib
import json
import sys
import traceback
from collections.abc import Sequence

COMMANDS = (
    "fastervit.train.train_command",
    "fastervit.train.eval_command",
    "fastervit.analysis.cli",
    "fastervit.export_command",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fastervit`` parser with one sub-parser per module in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="fastervit", description="FasterViT: train, evaluate and inspect the models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, print its JSON record."""
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except Exception as error:  # noqa: BLE001 -- any failure becomes a JSON record; traceback to stderr
        traceback.print_exc()
        message = str(error.args[0]) if len(error.args) == 1 else str(error)
        print(f"fastervit {args.command}: error: {message}", file=sys.stderr)
        record = {"command": args.command, "status": "error", "error_type": type(error).__name__}
        print(json.dumps({**record, "error": message}), flush=True)
        return 1
    if result is not None:
        print(json.dumps(result), flush=True)  # flushed: torchrun's workers may lose unflushed output
    return 0
