"""The audit: ``python -m analysis.audit CHECKPOINT [CHECKPOINT ...]``.

For each checkpoint: load it, take a fixed seeded selection of test samples, measure clean
accuracy, probe the model, run the attack suite (AutoAttack-style worst case over attacks),
estimate flatness, summarise the dropout-family layers' inputs, apply the gradient-masking
checks and write ``OUT/<checkpoint-stem>/audit.json``. A summary table goes to stdout,
progress to stderr.

With ``--baseline FILE`` the result is gated against a baseline (see ``analysis.gate``).

The order, and where each step lives: ``_check_arguments`` (flags, before any work);
``_prepare`` per checkpoint (``checkpoints.load_checkpoint``, then
``analysis.pipeline.evaluation_set`` through ``checkpoints.datasets``, then ``audit_config``, the
``analysis.config.AuditConfig`` from the preset, suite file and flags, through
``analysis.config.build_audit_config`` as ``audit_model`` builds it); ``_audit_all``
(``analysis.pipeline.run_audit``, which returns the typed ``core.document.AuditResult``;
``core.document.write_json``; ``_write_report`` through ``reports.html``; ``analysis.gate``).

Exit status: 0 success, 1 the gate failed, 2 bad input (one line on stderr, found before any
work wherever it can be), 3 an internal error, 130 interrupted (Ctrl-C), 143 stopped by
SIGTERM; ``--verbose`` adds the traceback. An attack that failed leaves the status 0 but is
said on stderr, and the verdict reads "evaluation incomplete". No partial files: each document
is written atomically once complete.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis import gate
from analysis.batching import (
    parse_batch_size,
)
from analysis.config import (
    PRESETS,
    AuditConfig,
    build_audit_config,
    build_suite,
    check_suite,
    cost_warning,
    parse_epsilons,
)
from analysis.pipeline import (
    EvaluationSet,
    check_model_outputs,
    evaluation_set,
    run_audit,
)
from analysis.resume import LOCK, PARTIAL, FolderBusy, FolderLock, UnitCache, audit_identity
from analysis.summary import incomplete_lines, summary_lines
from checkpoints import CheckpointError, LoadedCheckpoint, load_checkpoint
from checkpoints.datasets import DatasetError
from commands.description import (
    add_description_arguments,
    description_from_arguments,
    say_flag_notes,
)
from commands.gate import add_gate_arguments, check_max_drop
from commands.tableflag import add_tables_argument
from core.boundary import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    InputError,
    OneLineParser,
    check_writable,
    one_line,
    output_error,
    run_command,
    writing,
)
from core.document import (
    AuditResult,
    DocumentError,
    write_json,
)
from reports.compare import write_comparison
from reports.html import write_report
from reports.tables import parse_formats, write_tables
from torchutil import distributed

__all__ = ["main", "script"]


def audit_parser(prog: str = "python -m analysis.audit") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    parser.add_argument(
        "--data",
        help="dataset folder or file (else the checkpoint's dataset through $ROBAUDIT_DATA)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1000,
        help="evaluation samples, a fixed seeded selection (default 1000 or the whole test split)",
    )
    parser.add_argument(
        "--batch-size",
        default="auto",
        help="samples the model evaluates at once: auto (default: the largest that fits in "
        "half the free memory, measured) or a number; bounds memory, changes no result",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--preset",
        default="standard",
        help=f"attack suite preset: {', '.join(PRESETS)} (default standard)",
    )
    parser.add_argument(
        "--suite", type=Path, metavar="FILE.toml", help="attack suite file (see README)"
    )
    parser.add_argument("--norms", help="comma-separated norms to run: linf, l2")
    parser.add_argument(
        "--epsilons",
        help="per norm: 'linf=8/255;l2=0.5' (decimals or fractions); a bare list such as 0.1,0.2 "
        "only with one norm (--norms)",
    )
    parser.add_argument("--attacks", help="comma-separated attack labels of the suite to run")
    parser.add_argument("--backend", help="FGSM/PGD backend: native, cleverhans, torchattacks")
    parser.add_argument("--no-flatness", action="store_true", help="skip the flatness estimators")
    parser.add_argument(
        "--flatness-samples", type=int, default=500, help="samples for flatness (default 500)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore the finished units an interrupted run kept in OUT/<name>/.partial/ and "
        "start over (by default the same command resumes from them)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out"), help="output folder (default out/)"
    )
    parser.add_argument("--baseline", type=Path, help="gate the result against this baseline")
    add_gate_arguments(parser, in_audit=True)
    parser.add_argument(
        "--no-report", action="store_true", help="do not write report.html beside audit.json"
    )
    add_tables_argument(parser)
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no summary (a failing gate still prints its one-line result on "
        "stderr)",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    add_description_arguments(parser)
    return parser


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for, but no CUDA device is available; use --device cpu"
        )
    return torch.device(name)


def _suite_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "suite_file": args.suite,
        "norms": None
        if args.norms is None
        else [n.strip() for n in args.norms.split(",") if n.strip()],
        "epsilons": None if args.epsilons is None else parse_epsilons(args.epsilons),
        "attacks": None
        if args.attacks is None
        else [a.strip() for a in args.attacks.split(",") if a.strip()],
        "backend": args.backend,
    }


def audit_config(args: argparse.Namespace, dataset: str | None) -> AuditConfig:
    # The attacks' own batch (their random draws are per batch) is the suite's: --batch-size
    # only chunks the model's evaluations within it.
    return build_audit_config(
        build_suite(args.preset, dataset, **_suite_flags(args)),
        args.preset,
        flatness=not args.no_flatness,
        num_samples=args.num_samples,
        flatness_samples=args.flatness_samples,
        model_batch_size=parse_batch_size(args.batch_size),
        seed=args.seed,
    )


def _check_arguments(args: argparse.Namespace) -> None:
    parse_batch_size(args.batch_size)
    for flag in ("flatness_samples", "num_samples"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ValueError(
                f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}"
            )
    if args.tables is not None:
        parse_formats(args.tables)
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be an integer in [0, 2**63), got {args.seed}")
    check_max_drop(args.max_drop)
    gate_flags = args.junit or args.update_baseline or args.max_drop is not None
    if (gate_flags or args.allow_different_checkpoint) and args.baseline is None:
        raise ValueError(
            "--junit, --max-drop, --update-baseline and --allow-different-checkpoint need "
            "--baseline FILE"
        )
    if args.baseline is not None and len(args.checkpoints) != 1:
        raise ValueError("--baseline gates one checkpoint at a time; give a single CHECKPOINT")
    # The suite (file and flags) is checked before any checkpoint or dataset is loaded.
    check_suite(args.preset, **_suite_flags(args))
    check_writable(args.out, "--out", folder=True)
    if args.junit is not None:
        check_writable(args.junit, "--junit")
    if args.update_baseline:
        check_writable(args.baseline, "--baseline (with --update-baseline)")
    targets: dict[Path, Path] = {}
    for path in args.checkpoints:
        target = _target(args.out, path)
        if target in targets:
            raise ValueError(
                f"checkpoints {targets[target]} and {path} would both write {target}; audit "
                "them in separate runs with different --out folders, or rename one"
            )
        targets[target] = path
        check_writable(target, f"--out (result of {path})")


def _target(out: Path, checkpoint: Path) -> Path:
    return out / checkpoint.stem / "audit.json"


def _warn_whole_box(loaded: LoadedCheckpoint, config: AuditConfig) -> None:
    """An epsilon that covers the whole input box makes a bounded attack unbounded: allowed,
    but said (the unbounded baseline exists for that)."""
    low, high = loaded.spec.bounds
    dims = math.prod(loaded.spec.input_shape)
    for norm, epsilons in config.suite.epsilons.items():
        diameter = (high - low) * (1.0 if norm.value == "linf" else math.sqrt(dims))
        covering = [e for e in epsilons if e >= diameter]
        if covering:
            print(
                f"warning: {norm.value} epsilon {covering[0]:g} covers the whole input box "
                f"(its {norm.value} diameter is {diameter:.4g}): every bounded attack is "
                "unbounded there; the suite's unbounded attack already measures that",
                file=sys.stderr,
            )


@dataclass(frozen=True)
class _Planned:
    path: Path
    loaded: LoadedCheckpoint
    evaluation: EvaluationSet
    config: AuditConfig
    target: Path


def _prepare(
    args: argparse.Namespace,
) -> tuple[torch.device, list[_Planned], AuditResult | None]:
    """Everything that can be checked before work: flags, suite, paths, checkpoints, datasets,
    model outputs, the baseline and its identity."""
    _check_arguments(args)
    device = _device(args.device)
    description = description_from_arguments(args)
    planned = []
    for path in args.checkpoints:
        loaded = load_checkpoint(path, description, args.trust_checkpoint, device)
        evaluation = evaluation_set(loaded, args.data, args.num_samples, args.seed)
        check_model_outputs(loaded, evaluation)
        config = audit_config(args, loaded.spec.dataset)
        planned.append(_Planned(path, loaded, evaluation, config, _target(args.out, path)))
    baseline = None
    if args.baseline is not None and not args.update_baseline:
        baseline = gate.read_baseline(args.baseline)
        only = planned[0]
        gate.check_same_evaluation(
            baseline,
            args.baseline,
            checkpoint_sha256=only.loaded.sha256,
            dataset=only.loaded.spec.dataset,
            indices=only.evaluation.indices.tolist(),
            allow_different=args.allow_different_checkpoint,
            weights_sha256=only.loaded.weights_sha256,
        )
    for plan in planned:
        say_flag_notes(plan.loaded)
        _warn_whole_box(plan.loaded, plan.config)
        costly = cost_warning(
            plan.config.suite, plan.loaded.spec.num_classes, len(plan.evaluation.y)
        )
        if costly is not None:
            print(f"warning: {plan.path}: {costly}", file=sys.stderr)
    return device, planned, baseline


def _run(args: argparse.Namespace, command_line: list[str]) -> int:
    try:
        device, planned, baseline = _prepare(args)
    except (CheckpointError, DatasetError, DocumentError, ValueError) as err:
        raise InputError(one_line(err)) from err
    with contextlib.ExitStack() as stack:
        locks = _lock_folders(planned, stack)
        return _audit_all(args, command_line, device, planned, baseline, locks)


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
"""What ``flock`` says on a file system without file locks."""


def _lock_folders(planned: list[_Planned], stack: contextlib.ExitStack) -> dict[Path, FolderLock]:
    """Lock every checkpoint's folder before any work, so that a second audit into the same
    place is refused (status 2) instead of discarding this one's units. Under
    torch.distributed rank 0 alone locks (it alone writes), and every process learns of a
    refusal."""
    locks: dict[Path, FolderLock] = {}
    refusal = None
    folders = [plan.target.parent for plan in planned] if distributed.rank() == 0 else []
    for folder in folders:
        try:
            locks[folder] = stack.enter_context(FolderLock.acquire(folder))
        except FolderBusy as err:
            refusal = str(err)
        except OSError as err:
            if err.errno in _NO_LOCKS:
                refusal = (
                    f"{folder} cannot be locked for the audit ({one_line(err)}); give another "
                    "--out, on a file system with file locks (--fresh does not change this)"
                )
            else:  # a full disk, a quota: the lock file cannot be written
                refusal = str(output_error(folder / LOCK, "--out", err))
        if refusal is not None:
            break
    # Every process learns of a refusal, so that none waits for the others in vain.
    refusal = distributed.broadcast_object(refusal)
    if refusal is not None:
        raise InputError(refusal)
    return locks


def _audit_all(
    args: argparse.Namespace,
    command_line: list[str],
    device: torch.device,
    planned: list[_Planned],
    baseline: AuditResult | None,
    locks: dict[Path, FolderLock],
) -> int:
    status = EXIT_OK
    # Under torch.distributed every process runs the audit on its share of the samples and
    # holds the whole result; rank 0 alone reports, keeps the finished units and writes.
    first = distributed.rank() == 0
    for plan in planned:
        report = None if not args.quiet and first else (lambda line: None)
        lock = locks.get(plan.target.parent)
        if lock is not None:
            stale = lock.remove_stale_temporaries()
            if stale and report is None:
                files = "file" if len(stale) == 1 else "files"
                print(
                    f"removed {len(stale)} temporary {files} a killed run left in {lock.folder} "
                    "(its finished units are kept; --fresh discards them)",
                    file=sys.stderr,
                )
        cache = UnitCache(
            plan.target.parent / PARTIAL,
            audit_identity(plan.loaded, plan.evaluation, plan.config, device),
            fresh=args.fresh,
            writer=first,
            report=report,
        )
        try:
            result = run_audit(
                plan.loaded,
                plan.evaluation,
                plan.config,
                device=device,
                progress=not args.quiet and first,
                command_line=command_line,
                cache=cache,
            )
        except KeyboardInterrupt:
            if first and cache.folder.exists():
                print(
                    f"finished units are kept in {cache.folder}: the same command resumes "
                    "from them (--fresh starts over)",
                    file=sys.stderr,
                )
            raise
        if not first:
            continue
        document = result.to_dict()
        with writing(plan.target, "--out"):
            write_json(plan.target, document)
        cache.remove()
        with writing(plan.target.parent, "--out"):
            written = _write_report(result, plan.target, args)
        if lock is not None:
            lock.release()  # everything in the folder is written
        if not args.quiet:
            print("\n".join(summary_lines(plan.path, result)))
            print(f"  result written to {plan.target}")
            for line in written:
                print(f"  {line}")
        # Even with --quiet: a failed attack must not pass for robustness.
        for line in incomplete_lines(result):
            print(f"{plan.path}: {line}", file=sys.stderr)
        if args.update_baseline:
            with writing(args.baseline, "--baseline (with --update-baseline)"):
                write_json(args.baseline, result.to_baseline())
            if not args.quiet:
                print(f"  baseline written to {args.baseline}")
        elif baseline is not None:
            outcome = gate.compare(result, baseline, max_drop=args.max_drop)
            if args.junit:
                with writing(args.junit, "--junit"):
                    gate.write_junit(args.junit, outcome)
            if not args.quiet:
                print("\n".join(gate.report_lines(outcome)))
            if not outcome.passed:
                status = EXIT_GATE_FAILED
                if args.quiet:
                    # --quiet silences progress and the summary, never a failure.
                    print(gate.result_line(outcome), file=sys.stderr)
    if len(planned) > 1 and first:
        comparison = args.out / "comparison.html"
        formats = parse_formats(args.tables) if args.tables is not None else ()
        with writing(comparison, "--out"):
            warnings = write_comparison([plan.target for plan in planned], comparison, formats)
        if not args.quiet:
            for warning in warnings:
                print(f"warning: comparison: {warning}", file=sys.stderr)
            print(f"comparison written to {comparison}")
    return int(distributed.broadcast_object(status))


def _in_processes(args: argparse.Namespace, command_line: list[str]) -> int:
    """``_run`` in the process group torchrun describes in the environment (``WORLD_SIZE``
    above 1), else in this process alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or distributed.is_distributed():
        return _run(args, command_line)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    status = _run(args, command_line)
    # Every process waits until rank 0 has written everything. The group is not destroyed:
    # gloo's teardown sometimes aborts the process ("terminate called without an active
    # exception") even after this barrier, so `main` leaves with os._exit instead.
    torch.distributed.barrier()
    return status


def _write_report(result: AuditResult, target: Path, args: argparse.Namespace) -> list[str]:
    """``report.html`` (unless ``--no-report``) and the ``--tables`` beside ``audit.json``,
    rendered from the result whose document was just written to ``target``, as
    ``python -m reports.html`` would."""
    if args.no_report and args.tables is None:
        return []
    lines = []
    if not args.no_report:
        lines.append(f"report written to {write_report(result, target.parent / 'report.html')}")
    if args.tables is not None:
        written = write_tables(result, target.parent, parse_formats(args.tables))
        lines.append(f"tables written to {target.parent} ({len(written)} files)")
    return lines


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m analysis.audit") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun the other processes work silently: rank 0 says everything once.
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    args = audit_parser(prog).parse_args(argv)
    status = run_command(
        # The provenance names the command as it was run: `robaudit ...` or
        # `python -m analysis.audit ...`.
        lambda: _in_processes(args, [*prog.split(), *argv]),
        verbose=args.verbose,
        input_errors=(InputError, CheckpointError, DatasetError, DocumentError),
    )
    if distributed.is_distributed():
        # A process of a torchrun group leaves without tearing the group down (see
        # `_in_processes`): everything it wrote is closed and renamed, so only the streams
        # remain to flush.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def script() -> int:
    """The ``robaudit`` console script: :func:`main` under its own name."""
    return main(prog="robaudit")


if __name__ == "__main__":
    sys.exit(main())
