"""The single-audit report: ``python -m reports.html out/<name>/audit.json [-o FILE]``.

One self-contained ``report.html`` (inline CSS and SVG, no script, no external request; prints
on A4) rendered from the result document alone, never from the model: the verdict with its key
numbers, robust accuracy per attack and norm, robustness curves, who broke what, the attacks'
loss per iteration, the red flags with what each check measures, a diagnosis of the mechanism
the evidence points to, flatness, activation statistics, adversarial examples and provenance.
Everything taken from the document is escaped (jinja2 autoescape). Two renders of one document
are byte-identical: nothing of the render itself (time, host) enters the page.

Exit status: 0 written, 2 bad input (one line: a missing file, an unknown schema version, a bad
flag), 3 an internal error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from commands.tableflag import add_tables_argument
from core.boundary import (
    EXIT_OK,
    InputError,
    OneLineParser,
    check_writable,
    run_command,
    writing,
)
from core.document import DocumentError, read_result
from reports import tables
from reports.html import write_report

__all__ = ["main", "script"]


def _parser(prog: str = "python -m reports.html") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("document", type=Path, metavar="AUDIT_JSON")
    parser.add_argument(
        "-o", "--output", type=Path, help="the page to write (default: report.html beside it)"
    )
    add_tables_argument(parser)
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        formats = tables.parse_formats(args.tables) if args.tables is not None else ()
    except ValueError as err:
        raise InputError(str(err)) from None
    output = args.output if args.output is not None else args.document.parent / "report.html"
    flag = "-o" if args.output is not None else "the page beside AUDIT_JSON (-o)"
    check_writable(output, flag)
    result = read_result(args.document)
    with writing(output, flag):
        write_report(result, output)
    print(f"report written to {output}")
    if formats:
        with writing(output.parent, f"--tables (beside {flag})"):
            written = tables.write_tables(result, output.parent, formats)
        print(f"tables written to {output.parent} ({len(written)} files)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m reports.html") -> int:
    args = _parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_command(
        lambda: _run(args), verbose=args.verbose, input_errors=(InputError, DocumentError)
    )


def script() -> int:
    """The ``robaudit-report`` console script: :func:`main` under its own name."""
    return main(prog="robaudit-report")


if __name__ == "__main__":
    sys.exit(main())
