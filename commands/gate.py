"""The CI gate: compare an audit result with a baseline and fail on regressions.

``python -m analysis.gate RESULT.json BASELINE.json [--max-drop D] [--junit FILE]``
``python -m analysis.gate RESULT.json BASELINE.json --update-baseline``

A check fails when clean accuracy, the reliable robust accuracy (worst case over attacks) or
the robust accuracy after any attack drops beyond tolerance, or when a red-flag check fails
that did not fail in the baseline (a masking or a reliability check; a warning does not count).
The default tolerance is statistical: on the same samples (same indices) the drop is tested
with the paired (McNemar) 95 % interval, so a drop fails only if its interval lies wholly above
zero; on different samples an unpaired two-proportion interval is used. ``--max-drop D``
replaces this by a fixed tolerated drop (a fraction, e.g. 0.02).

Exit status: 0 passed, 1 a check failed, 2 bad input (one line), 3 an internal error, 130
interrupted. A baseline made from another checkpoint (sha256) or on other samples is refused
unless ``--allow-different-checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.gate import (
    check_same_evaluation,
    compare,
    read_baseline,
    report_lines,
    write_junit,
)
from core.boundary import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    InputError,
    OneLineParser,
    check_writable,
    run_command,
    writing,
)
from core.document import DocumentError, read_result, write_json

__all__ = ["add_gate_arguments", "check_max_drop", "main", "script"]


def add_gate_arguments(parser: argparse.ArgumentParser, *, in_audit: bool) -> None:
    """The gate's options, declared once for ``python -m analysis.gate`` and for an audit run
    with ``--baseline`` (``in_audit``: their help names them as the gate's, and the result is
    the audit's own)."""
    gate = "gate: " if in_audit else ""
    parser.add_argument(
        "--max-drop",
        type=float,
        help=f"{gate}fixed tolerated drop (fraction) instead of the paired interval",
    )
    parser.add_argument("--junit", type=Path, help=f"{gate}write JUnit XML here")
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="write the result as the new --baseline"
        if in_audit
        else "write RESULT as the new baseline and exit",
    )
    parser.add_argument(
        "--allow-different-checkpoint",
        action="store_true",
        help=f"{gate}compare with a baseline made from another checkpoint or on other samples "
        "(e.g. a retrained model); refused otherwise",
    )


def check_max_drop(max_drop: float | None) -> None:
    """Refuse a ``--max-drop`` that is no fraction, before any work."""
    if max_drop is not None and not 0 <= max_drop <= 1:
        raise InputError(f"--max-drop is a fraction in [0, 1], got {max_drop}")


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m analysis.gate") -> int:
    parser = OneLineParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("result", type=Path, help="audit.json of the run to gate")
    parser.add_argument("baseline", type=Path, help="baseline file")
    add_gate_arguments(parser, in_audit=False)
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    args = parser.parse_args(argv)
    return run_command(
        lambda: _run(args), verbose=args.verbose, input_errors=(InputError, DocumentError)
    )


def _run(args: argparse.Namespace) -> int:
    check_max_drop(args.max_drop)
    if args.junit is not None:
        check_writable(args.junit, "--junit")
    result = read_result(args.result)
    if args.update_baseline:
        check_writable(args.baseline, "BASELINE")
        with writing(args.baseline, "BASELINE (with --update-baseline)"):
            write_json(args.baseline, result.to_baseline())
        print(f"baseline written to {args.baseline}")
        return EXIT_OK
    baseline = read_baseline(args.baseline)
    check_same_evaluation(
        baseline,
        args.baseline,
        checkpoint_sha256=result.provenance.checkpoint_sha256,
        dataset=result.evaluation.dataset,
        indices=result.evaluation.indices,
        allow_different=args.allow_different_checkpoint,
        weights_sha256=result.provenance.weights_sha256,
    )
    outcome = compare(result, baseline, args.max_drop)
    if args.junit:
        with writing(args.junit, "--junit"):
            write_junit(args.junit, outcome)
    print("\n".join(report_lines(outcome)))
    return EXIT_OK if outcome.passed else EXIT_GATE_FAILED


def script() -> int:
    """The ``robaudit-gate`` console script: :func:`main` under its own name."""
    return main(prog="robaudit-gate")


if __name__ == "__main__":
    sys.exit(main())
