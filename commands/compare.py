"""The comparison command: ``python -m reports.compare out/*/audit.json -o comparison.html``
(``robaudit-compare``); the page is :mod:`reports.compare`'s. Without torch, as every command
that only renders documents."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.boundary import InputError, OneLineParser, check_writable, run_command, writing
from core.document import DocumentError
from reports.compare import write_comparison
from reports.tables import parse_formats

__all__ = ["main", "script"]


def _parser(prog: str = "python -m reports.compare") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Compare audits side by side in one self-contained HTML page (works "
        "offline): verdicts, robust accuracy per attack and epsilon, red flags, flatness and "
        "activation statistics, one row per audit. Exit status: 0 written, 2 bad input (one "
        "line on stderr; nothing written), 3 an internal error, 130 interrupted.",
    )
    parser.add_argument("documents", nargs="+", type=Path, help="audit.json files")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("comparison.html"),
        help="the page to write (default: comparison.html in the current folder)",
    )
    parser.add_argument(
        "--tables",
        help="also write every table beside the page: csv, md or csv,md "
        "(comparison.<table>.csv, ...)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        formats = parse_formats(args.tables) if args.tables is not None else ()
    except ValueError as err:
        raise InputError(str(err)) from None
    check_writable(args.output, "-o")
    with writing(args.output, "-o"):
        warnings = write_comparison(args.documents, args.output, formats)
    if not args.quiet:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        count = len(args.documents)
        print(f"comparison of {count} audit{'s' if count != 1 else ''} written to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m reports.compare") -> int:
    args = _parser(prog).parse_args(argv)
    return run_command(
        lambda: _run(args), verbose=args.verbose, input_errors=(InputError, DocumentError)
    )


def script() -> int:
    """The ``robaudit-compare`` console script: :func:`main` under its own name."""
    return main(prog="robaudit-compare")


if __name__ == "__main__":
    sys.exit(main())
