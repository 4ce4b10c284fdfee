"""Say what a checkpoint file is, without running anything from it.

Usage:
    python -m checkpoints.inspect FILE [--arch ... --dataset ...]
    python -m checkpoints.inspect --list

Prints the container format, what was inferred (layout, batch norm, number of classes,
matching architectures), what is still missing to load it, and its sha256. Nothing from the
file ever runs, whatever the flags: files of weights are read with ``weights_only=True``; a
TorchScript archive (code) is described from its zip listing and metadata records alone, and a
file of pickled Python objects from the name of the first object it would build.
``--trust-checkpoint`` only accepts a file of ours without its recorded weights hash. The code
``--model FILE.py:NAME`` names is never imported either: the file is parsed to check that it
defines NAME, and inspect says that the audit would build the model from it.

Exit status 0 when the file would load as described, 4 when it was described but something is
missing to load it (a flag, or --trust-checkpoint for a file that carries code, or the user's
model code, which inspect never runs), 2 for an unreadable file or a bad flag, 3 for an
internal error. Status 1 is the gate's alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from checkpoints.architectures import architecture_names, get_architecture
from checkpoints.format import CheckpointError
from checkpoints.inspect import inspect_file
from checkpoints.layers import layer_kinds
from commands.description import add_description_arguments, description_from_arguments
from core.boundary import EXIT_INPUT, OneLineParser, one_line, run_command

__all__ = ["main", "script"]


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m checkpoints.inspect") -> int:
    parser = OneLineParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", type=Path, help="checkpoint file")
    parser.add_argument("--list", action="store_true", help="list architectures and layer kinds")
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    add_description_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args), verbose=args.verbose)


def _run(args: argparse.Namespace) -> int:
    if args.list:
        for name in architecture_names():
            print(f"{name:10s} {get_architecture(name).description}")
        print(f"layer kinds: {', '.join(layer_kinds())}")
        return 0
    if args.file is None:
        print("error: give a checkpoint FILE (or --list)", file=sys.stderr)
        return EXIT_INPUT
    try:
        description = description_from_arguments(args)
        rows, status = inspect_file(args.file, description, args.trust_checkpoint)
    except (CheckpointError, ValueError, OSError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_INPUT
    width = max(len(k) for k, _ in rows)
    rows = [(k, v.replace("\n", " ")) for k, v in rows]
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return status


def script() -> int:
    """The ``robaudit-inspect`` console script: :func:`main` under its own name."""
    return main(prog="robaudit-inspect")


if __name__ == "__main__":
    sys.exit(main())
