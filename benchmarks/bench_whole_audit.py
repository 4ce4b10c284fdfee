"""The whole ``standard`` audit (flatness on) against AutoAttack's standard version, on the
same samples.

``bench_autoattack`` times the audit's attack suite alone; a user weighs the whole audit
(probes, attacks, sweeps, flatness in both modes, checks) against what they would run
instead. For each model, in one process, both sides run on the audit's own evaluation samples
(``analysis.pipeline.evaluation_set``: a seeded selection of ``--num-samples`` test images) at the
dataset's standard epsilons under both norms, and the benchmark prints:

- wall and CPU time of the whole audit (``analysis.audit_model``, flatness on
  ``--flatness-samples``), of its attacks alone (the document's ``robustness.wall_time``) and
  of everything else (mostly flatness), and of AutoAttack (both norms);
- the ratios whole audit / AutoAttack (target at most 1.0) and attacks / AutoAttack (target at
  most 0.5);
- per norm: the audit's reliable robust accuracy and AutoAttack's, the discordant counts, the
  exact one-sided McNemar p-value that AutoAttack breaks more and the 95 % paired interval
  (target: no significant excess);
- each flatness estimate with its standard error and what stopped it.

A model whose forward passes differ is compared with AutoAttack's ``rand`` version, as in
``bench_autoattack``. Repeats alternate the order of the two sides, each with its own seed.

    ROBAUDIT_DATA=../shared/data python -m benchmarks.bench_whole_audit
    python -m benchmarks.bench_whole_audit --models model_test.pt --arch resnet18 \\
        --dataset cifar10 --trust-checkpoint --num-samples 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from analysis import audit_model
from analysis.pipeline import evaluation_set
from analysis.probes import probe_model
from attacks import Norm
from attacks.presets import STANDARD_EPSILONS
from benchmarks.bench_autoattack import (
    ALPHA,
    ZOO,
    PairedOutcome,
    add_comparison_arguments,
    run_autoattack,
)
from checkpoints import load_checkpoint
from commands.description import description_from_arguments, say_flag_notes
from core.document import AuditResult
from torchutil import make_generator

NORMS = (Norm.LINF, Norm.L2)
WHOLE_TARGET = 1.0
ATTACKS_TARGET = 0.5


def _timed(compute: Any) -> tuple[Any, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    value = compute()
    return value, time.perf_counter() - start, time.process_time() - cpu


def _flatness_lines(result: AuditResult) -> list[str]:
    """Each estimate with its standard error and what stopped it, in both modes."""
    if result.flatness is None:
        return [f"flatness not measured: {result.flatness_note}"]
    lines = []
    for mode, section in (
        ("eval", result.flatness),
        ("layers active", result.flatness.active_layers),
    ):
        if section is None:
            continue
        for name in (
            "fisher_rao_empirical",
            "fisher_rao_model",
            "hessian_trace",
            "epsilon_sharpness",
        ):
            measure = getattr(section, name)
            if measure is not None:
                error = "" if measure.stderr is None else f" ± {measure.stderr:.3g}"
                stopped = getattr(measure, "stopped_by", None)
                lines.append(f"{mode}: {name} {measure.value:.6g}{error} (stopped by {stopped})")
        if section.hessian_eigenvalues is not None:
            top = ", ".join(f"{v:.6g}" for v in section.hessian_eigenvalues.eigenvalues)
            stopped = section.hessian_eigenvalues.stopped_by
            lines.append(f"{mode}: hessian_eigenvalues {top} (stopped by {stopped})")
        density = section.spectral_density
        if density is not None and density.trace is not None:
            error = "" if density.trace_stderr is None else f" ± {density.trace_stderr:.3g}"
            lines.append(
                f"{mode}: spectral_density trace {density.trace:.6g}{error} "
                f"(stopped by {density.stopped_by})"
            )
    return lines


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    path = Path(name) if name.endswith(".pt") else ZOO / f"{name}.pt"
    loaded = load_checkpoint(path, description_from_arguments(args), trust=args.trust_checkpoint)
    say_flag_notes(loaded)
    model = loaded.model.eval()
    evaluation = evaluation_set(loaded, None, args.num_samples, args.seed)
    dataset = evaluation.dataset.name
    if dataset not in STANDARD_EPSILONS:
        print(f"error: {name}: no standard epsilons for dataset {dataset!r}", file=sys.stderr)
        return None
    x, y = evaluation.x, evaluation.y
    epsilons = {norm: STANDARD_EPSILONS[dataset][norm] for norm in NORMS}
    probes = probe_model(
        model, x, y, make_generator(args.seed), bounds=loaded.spec.bounds, batch_size=500
    )
    version = args.autoattack_version
    if version == "auto":
        version = "rand" if probes.stochastic else "standard"
    # Untimed warm-up of AutoAttack (imports, first calls); the audit's own start-up counts.
    for norm in NORMS:
        run_autoattack(model, x[:8], y[:8], norm, epsilons[norm], 0, args.batch_size, version)

    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        seed = args.seed + repeat

        def audit_side(seed: int = seed) -> tuple[AuditResult, float, float]:
            return _timed(  # type: ignore[no-any-return]
                lambda: audit_model(
                    model,
                    x,
                    y,
                    dataset=dataset,
                    preset="standard",
                    norms=[norm.value for norm in NORMS],
                    bounds=loaded.spec.bounds,
                    flatness_samples=args.flatness_samples,
                    batch_size=args.batch_size,
                    seed=seed,
                    progress=False,
                    name=path.stem,
                )
            )

        def autoattack_side(seed: int = seed) -> tuple[dict[Norm, Any], float, float]:
            return _timed(  # type: ignore[no-any-return]
                lambda: {
                    norm: run_autoattack(
                        model, x, y, norm, epsilons[norm], seed, args.batch_size, version
                    )
                    for norm in NORMS
                }
            )

        if repeat % 2 == 0:
            audited, theirs = audit_side(), autoattack_side()
        else:
            theirs = autoattack_side()
            audited = audit_side()
        result, audit_wall, audit_cpu = audited
        runs, autoattack_wall, autoattack_cpu = theirs
        attacks_wall = float(result.robustness.wall_time or 0.0)
        norms: dict[str, Any] = {}
        for norm in NORMS:
            mine = torch.tensor(result.norm(norm.value).robust[0])
            paired = PairedOutcome.of(mine, runs[norm].robust.cpu())
            norms[norm.value] = {
                "epsilon": epsilons[norm],
                "audit_robust_accuracy": paired.audit_robust,
                "autoattack_robust_accuracy": paired.autoattack_robust,
                "only_audit_broke": paired.only_audit,
                "only_autoattack_broke": paired.only_autoattack,
                "p_value_autoattack_stronger": paired.p_value,
                "difference_interval_95": paired.interval,
                "autoattack_wall_s": runs[norm].wall_time,
            }
        walls = {
            norm.value: {
                record.label: float(record.wall_time or 0.0)
                for record in result.norm(norm.value).attacks
            }
            for norm in NORMS
        }
        rows.append(
            {
                "seed": seed,
                "attack_wall_s": walls,
                "audit_wall_s": audit_wall,
                "audit_cpu_s": audit_cpu,
                "attacks_wall_s": attacks_wall,
                "autoattack_wall_s": autoattack_wall,
                "autoattack_cpu_s": autoattack_cpu,
                "norms": norms,
                "flatness": _flatness_lines(result),
                "verdict": result.verdict,
            }
        )
        print(
            f"{name} repeat {repeat} (seed {seed}): whole audit {audit_wall:.1f} s "
            f"(attacks {attacks_wall:.1f} s), AutoAttack {autoattack_wall:.1f} s",
            file=sys.stderr,
        )

    def median(key: str) -> float:
        return statistics.median(float(row[key]) for row in rows)

    whole, attacks, theirs_wall = (
        median("audit_wall_s"),
        median("attacks_wall_s"),
        median("autoattack_wall_s"),
    )
    print(
        f"\n{name}: {dataset}, {x.shape[0]} samples (flatness on "
        f"{min(args.flatness_samples, x.shape[0])}), AutoAttack {version}, "
        f"{args.repeats} repeat(s), threads {torch.get_num_threads()}"
    )
    print(
        f"  whole audit {whole:.1f} s (CPU {median('audit_cpu_s'):.1f} s): attacks "
        f"{attacks:.1f} s, the rest (probes, flatness in both modes, checks) "
        f"{whole - attacks:.1f} s"
    )
    print(f"  AutoAttack {theirs_wall:.1f} s (CPU {median('autoattack_cpu_s'):.1f} s)")
    whole_ratio, attacks_ratio = whole / theirs_wall, attacks / theirs_wall
    goal = whole_ratio <= WHOLE_TARGET and attacks_ratio <= ATTACKS_TARGET
    print(
        f"  ratio whole audit / AutoAttack {whole_ratio:.2f} (target <= {WHOLE_TARGET}), "
        f"attacks / AutoAttack {attacks_ratio:.2f} (target <= {ATTACKS_TARGET})"
    )
    for norm in NORMS:
        for row in rows:
            c = row["norms"][norm.value]
            significant = c["p_value_autoattack_stronger"] < ALPHA
            goal &= not significant
            low, high = c["difference_interval_95"]
            mine, theirs = c["audit_robust_accuracy"], c["autoattack_robust_accuracy"]
            p_value = c["p_value_autoattack_stronger"]
            print(
                f"  {norm.value} eps {epsilons[norm]:.4g} (seed {row['seed']}): reliable "
                f"{mine:.4f}, AutoAttack {theirs:.4f}; only the audit broke "
                f"{c['only_audit_broke']}, only AutoAttack {c['only_autoattack_broke']}; "
                f"McNemar p {p_value:.3g}; paired 95 % [{100 * low:+.2f}, {100 * high:+.2f}] pp"
                f"{'  SIGNIFICANT EXCESS' if significant else ''}"
            )
    for norm in NORMS:
        walls = rows[0]["attack_wall_s"][norm.value]
        print(
            f"  {norm.value} wall time per attack, s (PGD-CE's is the nested sweep's): "
            + ", ".join(f"{label} {wall:.1f}" for label, wall in walls.items())
        )
    listed = sum(sum(w.values()) for w in rows[0]["attack_wall_s"].values())
    print(
        f"  the attacks' time not in those: {rows[0]['attacks_wall_s'] - listed:.1f} s "
        "(independent sweeps, clean pass)"
    )
    print(f"  verdict: {rows[0]['verdict']}")
    for line in rows[0]["flatness"]:
        print(f"  {line}")
    print(f"  goal met: {'yes' if goal else 'NO'}")
    return {
        "model": name,
        "dataset": dataset,
        "samples": int(x.shape[0]),
        "flatness_samples": min(args.flatness_samples, int(x.shape[0])),
        "autoattack_version": version,
        "whole_ratio": whole_ratio,
        "attacks_ratio": attacks_ratio,
        "goal_met": goal,
        "repeats": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--models",
        default="mnist-lenet5-dropout",
        help="comma-separated zoo names or .pt paths (default: %(default)s)",
    )
    parser.add_argument("--flatness-samples", type=int, default=500)
    add_comparison_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.num_samples < 1 or args.batch_size < 1:
        print("error: --repeats, --num-samples and --batch-size must be >= 1", file=sys.stderr)
        return 2
    if args.flatness_samples < 1:
        print("error: --flatness-samples must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    figures = []
    for name in (m.strip() for m in args.models.split(",") if m.strip()):
        row = bench_model(name, args)
        if row is None:
            return 2
        figures.append(row)
    load_after = os.getloadavg()
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min), "
        f"{os.cpu_count()} cores; goal met on every model: "
        f"{'yes' if all(row['goal_met'] for row in figures) else 'NO'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"models": figures, "load_average": [load_before, load_after]}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
