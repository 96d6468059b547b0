"""``python -m fastervit COMMAND ...``: one sub-command per module of :mod:`fastervit.commands`.

Every command module has the same shape: its docstring (first line: the help, the rest: the
description), ``add_arguments(parser)`` and ``run(args) -> dict | None``. ``run`` returns its
results (``None`` on DDP processes other than rank 0, which print nothing) and this
dispatcher prints them as the last line, ``{"command": ..., "status": "ok", ...}``, in strict
JSON. A failure prints ``{"command": ..., "status": "error", "error_type": ..., "error": ...}``
(exit status 1, traceback on stderr); a bad flag prints argparse's message on stderr and
``{"command": ..., "status": "usage_error", "error": ...}`` (exit status 2).
"""

import argparse
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from fastervit.commands import bench, export, flops, segment, summary, train
from fastervit.commands import eval as eval_command
from fastervit.commands.common import to_json

COMMANDS: dict[str, ModuleType] = {
    "train": train,
    "eval": eval_command,
    "flops": flops,
    "bench": bench,
    "export": export,
    "segment": segment,
    "summary": summary,
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors also end in a JSON record."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        command = self.prog.split()[-1] if self.prog != "fastervit" else None
        print(to_json({"command": command, "status": "usage_error", "error": message}), flush=True)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``fastervit`` parser, one sub-parser per entry of :data:`COMMANDS`."""
    parser = _Parser(
        prog="fastervit", description="FasterViT: train, evaluate, measure and export the models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        first_line = module.__doc__.split("\n\n")[0].replace("\n", " ")
        command = subparsers.add_parser(
            name,
            help=first_line.split(": ", 1)[-1].rstrip("."),  # without the "``fastervit NAME``: " prefix
            description=module.__doc__.replace("``", ""),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, print its JSON record last."""
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
        line = None if result is None else to_json({"command": args.command, "status": "ok", **result})
    except Exception as error:  # noqa: BLE001 -- any failure becomes a JSON record; traceback to stderr
        traceback.print_exc()
        message = str(error.args[0]) if len(error.args) == 1 else str(error)
        print(f"fastervit {args.command}: error: {message}", file=sys.stderr)
        record = {"command": args.command, "status": "error", "error_type": type(error).__name__}
        print(to_json({**record, "error": message}), flush=True)
        return 1
    if line is not None:
        print(line, flush=True)  # flushed: torchrun's workers may lose unflushed output
    return 0
