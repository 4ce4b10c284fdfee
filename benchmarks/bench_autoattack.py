"""The audit's ``standard`` suite against AutoAttack's standard version, on the same samples.

What a user runs instead of this toolkit is AutoAttack (pyautoattack, version ``"standard"``:
APGD-CE, APGD-T with the targeted DLR loss over 9 classes, FAB-T and Square with 5000
queries). For each model and norm, at the dataset's standard epsilon, both run in one process
on the audit's own evaluation samples (``analysis.pipeline.evaluation_set``: a seeded selection
of ``--num-samples`` test images, the whole split when it is smaller), and the benchmark
prints:

- wall time of each side (the suite under every chosen norm in one ``run_suite`` call, as the
  audit runs it; AutoAttack once per norm) and their ratio;
- each robust accuracy: the audit's reliable one (per-sample worst case over all its
  attacks) and AutoAttack's;
- the discordant counts: samples only the audit broke, samples only AutoAttack broke; the
  exact one-sided McNemar p-value that AutoAttack breaks more (``core.stats``), and the
  95 % paired interval of the difference audit − AutoAttack in robust accuracy;
- which AutoAttack component broke the samples the audit missed, and which audit attack broke
  those AutoAttack missed;
- the wall time of each attack of the audit's chain (so the cost of FAB-T on the samples the
  attacks before it left robust is read off).

A model whose forward passes differ (the audit's ``stochastic-model`` probe) is audited as the
audit does it (``attacks.presets.for_stochastic_model``: EOT over 8 passes, and EOT APGD-CE and
APGD-DLR over 20 closing the chain) and compared with AutoAttack's ``rand`` version (APGD-CE
and APGD-DLR with EOT over 20 passes), AutoAttack's advice for randomised defences;
``--autoattack-version`` chooses another. Both sides judge a sample by one forward pass of the
model at each example (a random model's prediction is one draw, the one its user gets), as
AutoAttack does.

AutoAttack is pyautoattack's own code, called outside the audit, on the bare eval-mode model.
Its components run one at a time through the same ``AutoAttack`` object (its
``attacks_to_run`` set to one component, on the samples the earlier components left robust, in
the same batches): this is exactly what ``run_standard_evaluation`` does, and records which
component broke each sample. A sample counts as broken as AutoAttack itself counts it (the
labels it returns: one forward pass at each example), and the examples' distance and box are
checked.

The goal (met when both hold on every model and norm): no significant excess of the audit
over AutoAttack (one-sided p ≥ 0.05) and the audit's time, less what FAB-T took on the
samples every earlier attack left robust, at most AutoAttack's for all norms together (the
audit was within AutoAttack's time before FAB-T joined its chain, and FAB-T's cost on the
survivors is what closing the gap to AutoAttack's minimum-norm attack costs; both ratios are
printed).

Timing: both sides use the same intra-op threads (``--threads``, default 1) and batch size
(``--batch-size``, default the audit's 500), after an untimed warm-up; repeats alternate the
order of the two sides, each with its own seed (``--seed + repeat``) for both. Wall times are
medians over the repeats; accuracies and counts are shown per repeat and as medians.

    ROBAUDIT_DATA=../shared/data python -m benchmarks.bench_autoattack
    python -m benchmarks.bench_autoattack --models digits-mlp-dropout --norms l2 --repeats 3
    python -m benchmarks.bench_autoattack --models model.ts.pt --dataset mnist --trust-checkpoint

The checkpoint-description flags (``--dataset``, ``--arch``, ``--trust-checkpoint``, ...) are
the audit's, for files that do not describe themselves.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from analysis.config import EOT_SAMPLES
from analysis.pipeline import evaluation_set
from analysis.probes import probe_model
from attacks import Bounds, Norm, SuiteResult, preset, run_suite
from attacks.presets import STANDARD_EPSILONS, for_stochastic_model
from checkpoints import load_checkpoint
from commands.description import (
    add_description_arguments,
    description_from_arguments,
    say_flag_notes,
)
from core.stats import mcnemar_exact, paired_drop_interval
from torchutil import make_generator

ZOO = Path(__file__).resolve().parents[1] / "checkpoints" / "zoo"
DEFAULT_MODELS = ("mnist-lenet5-dropout", "digits-mlp-dropout", "digits-mlp-normout-spatiotemporal")
ALPHA = 0.05
# AutoAttack's L2 projection is exact only up to float32 rounding of the norm.
DISTANCE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class AutoAttackRun:
    """AutoAttack's standard version at one norm and epsilon, on ``N`` samples.

    Attributes:
        robust: ``[N]`` bool, correctly classified at every example AutoAttack returned.
        broken_by: ``[N]`` the component that broke the sample (its name), "" if none did or
            the sample was misclassified clean.
        robust_after: robust accuracy after each component, in AutoAttack's order.
        max_distance_ratio: largest distance of an example from its input over epsilon.
        outside_box: examples with a pixel outside ``[0, 1]``.
        wall_time: seconds.
    """

    robust: Tensor
    broken_by: list[str]
    robust_after: dict[str, float]
    max_distance_ratio: float
    outside_box: int
    wall_time: float


def _correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                model(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]
                for i in range(0, x.shape[0], batch_size)
            ]
        )


def run_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: Norm,
    epsilon: float,
    seed: int,
    batch_size: int,
    version: str = "standard",
) -> AutoAttackRun:
    """pyautoattack's AutoAttack (``version``), one component at a time (see the module
    docstring)."""
    from pyautoattack import AutoAttack

    start = time.perf_counter()
    runner = AutoAttack(
        model,
        norm="Linf" if norm is Norm.LINF else "L2",
        eps=epsilon,
        seed=seed,
        version=version,  # type: ignore[arg-type]
        device=x.device,
    )
    runner.logger.setLevel(logging.WARNING)
    components = list(runner.attacks_to_run)
    robust = _correct(model, x, y, batch_size)
    broken_by = [""] * x.shape[0]
    robust_after: dict[str, float] = {}
    max_ratio, outside = 0.0, 0
    for name in components:
        index = robust.nonzero().squeeze(1)
        if index.numel():
            runner.attacks_to_run = [name]
            found, labels = runner.run_standard_evaluation(
                x[index], y[index], batch_size=batch_size
            )
            found = found.detach()
            delta = (found - x[index]).flatten(1)
            distance = delta.abs().amax(dim=1) if norm is Norm.LINF else delta.norm(dim=1)
            max_ratio = max(max_ratio, float(distance.max()) / epsilon)
            outside += int(((found < 0) | (found > 1)).flatten(1).any(dim=1).sum())
            # AutoAttack's own judgement, the labels it returns: for a deterministic model the
            # model's prediction at each example, for a random one the pass it judged by.
            broken = labels.to(y.device) != y[index]
            for sample in index[broken].tolist():
                broken_by[sample] = name
            robust[index[broken]] = False
        robust_after[name] = float(robust.double().mean())
    return AutoAttackRun(
        robust=robust,
        broken_by=broken_by,
        robust_after=robust_after,
        max_distance_ratio=max_ratio,
        outside_box=outside,
        wall_time=time.perf_counter() - start,
    )


def audit_breakers(result: SuiteResult, norm: Norm) -> list[str]:
    """Per sample, the label of the first attack of the main list that broke it ("" if none)."""
    outcome = result.norm(norm)
    names = [""] * result.num_samples
    for record in outcome.attacks:
        hit = (record.success[0] & record.attacked[0] & result.clean_correct).tolist()
        for sample, broken in enumerate(hit):
            if broken and not names[sample]:
                names[sample] = record.label
    return names


@dataclass(frozen=True)
class PairedOutcome:
    """The audit's and AutoAttack's per-sample robustness on the same samples, compared.

    Attributes:
        audit_robust, autoattack_robust: each robust accuracy.
        only_audit: samples only the audit broke; only_autoattack: only AutoAttack.
        p_value: exact one-sided McNemar p-value that AutoAttack breaks more.
        interval: 95 % paired interval of audit - AutoAttack in robust accuracy.
    """

    audit_robust: float
    autoattack_robust: float
    only_audit: int
    only_autoattack: int
    p_value: float
    interval: tuple[float, float]

    @classmethod
    def of(cls, audit: Tensor, theirs: Tensor) -> PairedOutcome:
        """From ``[N]`` bool robustness of each side."""
        only_audit = int((~audit & theirs).sum())  # the audit broke it, AutoAttack did not
        only_autoattack = int((audit & ~theirs).sum())
        return cls(
            audit_robust=float(audit.double().mean()),
            autoattack_robust=float(theirs.double().mean()),
            only_audit=only_audit,
            only_autoattack=only_autoattack,
            p_value=mcnemar_exact(only_autoattack, only_audit),
            interval=paired_drop_interval(only_autoattack, only_audit, audit.numel()),
        )


@dataclass
class Comparison:
    """Both sides at one norm, over the repeats."""

    audit_robust: list[float] = field(default_factory=list)
    autoattack_robust: list[float] = field(default_factory=list)
    only_audit: list[int] = field(default_factory=list)
    only_autoattack: list[int] = field(default_factory=list)
    p_value: list[float] = field(default_factory=list)
    interval: list[tuple[float, float]] = field(default_factory=list)
    autoattack_wall: list[float] = field(default_factory=list)
    audit_after: list[dict[str, float]] = field(default_factory=list)
    audit_attack_wall: list[dict[str, float]] = field(default_factory=list)
    autoattack_after: list[dict[str, float]] = field(default_factory=list)
    missed_by_audit: list[Counter[str]] = field(default_factory=list)
    missed_by_autoattack: list[Counter[str]] = field(default_factory=list)
    max_distance_ratio: list[float] = field(default_factory=list)
    outside_box: list[int] = field(default_factory=list)

    def add(self, result: SuiteResult, norm: Norm, run: AutoAttackRun) -> None:
        outcome = result.norm(norm)
        audit = outcome.robust[0].cpu()
        theirs = run.robust.cpu()
        paired = PairedOutcome.of(audit, theirs)
        self.audit_robust.append(paired.audit_robust)
        self.autoattack_robust.append(paired.autoattack_robust)
        self.only_audit.append(paired.only_audit)
        self.only_autoattack.append(paired.only_autoattack)
        self.p_value.append(paired.p_value)
        self.interval.append(paired.interval)
        self.autoattack_wall.append(run.wall_time)
        self.audit_after.append(
            {record.label: record.robust_accuracy_after[0].value for record in outcome.attacks}
        )
        self.audit_attack_wall.append(
            {
                record.label: 0.0 if record.result is None else record.result.wall_time
                for record in outcome.attacks
            }
        )
        self.autoattack_after.append(run.robust_after)
        breakers = audit_breakers(result, norm)
        self.missed_by_audit.append(
            Counter(run.broken_by[i] for i in range(audit.numel()) if audit[i] and not theirs[i])
        )
        self.missed_by_autoattack.append(
            Counter(breakers[i] for i in range(audit.numel()) if theirs[i] and not audit[i])
        )
        self.max_distance_ratio.append(run.max_distance_ratio)
        self.outside_box.append(run.outside_box)

    def summary(self) -> dict[str, Any]:
        return {
            "audit_robust_accuracy": self.audit_robust,
            "autoattack_robust_accuracy": self.autoattack_robust,
            "only_audit_broke": self.only_audit,
            "only_autoattack_broke": self.only_autoattack,
            "p_value_autoattack_stronger": self.p_value,
            "difference_interval_95": self.interval,
            "autoattack_wall_s": self.autoattack_wall,
            "audit_robust_after": self.audit_after,
            "audit_attack_wall_s": self.audit_attack_wall,
            "autoattack_robust_after": self.autoattack_after,
            "missed_by_audit_broken_by": [dict(c) for c in self.missed_by_audit],
            "missed_by_autoattack_broken_by": [dict(c) for c in self.missed_by_autoattack],
            "autoattack_max_distance_over_epsilon": self.max_distance_ratio,
            "autoattack_outside_box": self.outside_box,
        }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def bench_model(
    name: str, norms: tuple[Norm, ...], args: argparse.Namespace
) -> dict[str, Any] | None:
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
    suite = preset("standard", dataset)
    suite = suite.with_options(
        epsilons={norm: suite.epsilons[norm] for norm in norms},
        bounds=Bounds(*loaded.spec.bounds),
        batch_size=args.batch_size,
    )
    epsilons = {norm: suite.epsilons[norm][0] for norm in norms}
    # As the audit: a model whose passes differ gets EOT and AutoAttack's rand attacks.
    probes = probe_model(
        model,
        x,
        y,
        make_generator(args.seed),
        bounds=loaded.spec.bounds,
        batch_size=args.batch_size,
    )
    if probes.stochastic:
        suite = for_stochastic_model(suite, EOT_SAMPLES)
    version = args.autoattack_version
    if version == "auto":
        version = "rand" if probes.stochastic else "standard"

    # Untimed warm-up of both sides (imports, allocator, first calls).
    tiny = suite.with_options(attacks=suite.attacks[:1], sweep=None)
    run_suite(model, x[:8], y[:8], tiny, generator=0)
    for norm in norms:
        run_autoattack(model, x[:8], y[:8], norm, epsilons[norm], 0, args.batch_size, version)

    audit_walls: list[float] = []
    autoattack_walls: list[float] = []
    # Process CPU seconds: on a shared machine the wall time also counts waiting for a core.
    audit_cpu: list[float] = []
    autoattack_cpu: list[float] = []
    comparisons = {norm: Comparison() for norm in norms}
    clean_accuracy = math.nan
    for repeat in range(args.repeats):
        seed = args.seed + repeat

        def audit_side(seed: int = seed) -> SuiteResult:
            start, cpu = time.perf_counter(), time.process_time()
            result = run_suite(model, x, y, suite, generator=seed)
            audit_walls.append(time.perf_counter() - start)
            audit_cpu.append(time.process_time() - cpu)
            return result

        def autoattack_side(seed: int = seed) -> dict[Norm, AutoAttackRun]:
            start, cpu = time.perf_counter(), time.process_time()
            runs = {
                norm: run_autoattack(
                    model, x, y, norm, epsilons[norm], seed, args.batch_size, version
                )
                for norm in norms
            }
            autoattack_walls.append(time.perf_counter() - start)
            autoattack_cpu.append(time.process_time() - cpu)
            return runs

        if repeat % 2 == 0:
            result, runs = audit_side(), autoattack_side()
        else:
            runs = autoattack_side()
            result = audit_side()
        if model.training:
            raise RuntimeError("an attack left the model in train mode")
        clean_accuracy = result.clean_accuracy
        for norm in norms:
            comparisons[norm].add(result, norm, runs[norm])
        print(
            f"{name} repeat {repeat} (seed {seed}): audit {audit_walls[-1]:.1f} s, "
            f"AutoAttack {autoattack_walls[-1]:.1f} s",
            file=sys.stderr,
        )

    audit_wall, autoattack_wall = _median(audit_walls), _median(autoattack_walls)
    ratio = audit_wall / autoattack_wall
    print(
        f"\n{name}: {dataset}, {x.shape[0]} samples, clean accuracy {clean_accuracy:.4f}, "
        f"repeats {args.repeats} (seeds {args.seed}..{args.seed + args.repeats - 1})"
    )
    if probes.stochastic:
        eot = {
            spec.label: spec.params.get("eot_samples", suite.eot_samples) for spec in suite.attacks
        }
        print(
            f"  stochastic model: audit with EOT ({suite.eot_samples} passes per gradient; "
            f"{', '.join(f'{label} {n}' for label, n in eot.items() if n != suite.eot_samples)})"
            f", against AutoAttack {version}"
        )
    runs_text = ", ".join(f"{w:.1f}" for w in audit_walls)
    print(
        f"  audit standard suite ({'+'.join(n.value for n in norms)}): {audit_wall:.1f} s "
        f"(runs {runs_text})"
    )
    runs_text = ", ".join(f"{w:.1f}" for w in autoattack_walls)
    print(
        f"  AutoAttack {version} ({'+'.join(n.value for n in norms)}): {autoattack_wall:.1f} s "
        f"(runs {runs_text})"
    )
    cpu_ratio = _median(audit_cpu) / _median(autoattack_cpu)
    # The target allows the audit FAB-T's cost on the survivors on top of what it took
    # before FAB-T joined the chain (within AutoAttack's time).
    fab_wall = _median(
        [
            sum(comparisons[norm].audit_attack_wall[r].get("fab-t", 0.0) for norm in norms)
            for r in range(len(audit_walls))
        ]
    )
    without_fab = (audit_wall - fab_wall) / autoattack_wall
    print(
        f"  time ratio audit / AutoAttack: {ratio:.2f}; without FAB-T's {fab_wall:.1f} s on "
        f"the survivors {without_fab:.2f}  (goal <= 1)"
    )
    print(
        f"  CPU time: audit {_median(audit_cpu):.1f} s, AutoAttack {_median(autoattack_cpu):.1f} s,"
        f" ratio {cpu_ratio:.2f}"
    )
    goal_met = without_fab <= 1.0
    per_norm: dict[str, Any] = {}
    for norm in norms:
        c = comparisons[norm]
        significant = _median(c.p_value) < ALPHA
        goal_met &= not significant
        low = _median([i[0] for i in c.interval])
        high = _median([i[1] for i in c.interval])
        difference = _median(c.audit_robust) - _median(c.autoattack_robust)
        missed = sum(c.missed_by_audit, Counter())
        found = sum(c.missed_by_autoattack, Counter())
        print(
            f"  {norm.value} eps {epsilons[norm]:.4g}: robust accuracy audit "
            f"{_median(c.audit_robust):.4f}, AutoAttack {_median(c.autoattack_robust):.4f}; "
            f"AutoAttack {_median(c.autoattack_wall):.1f} s"
        )
        print(
            f"    only the audit broke {_median(c.only_audit):g}, only AutoAttack broke "
            f"{_median(c.only_autoattack):g} (per repeat: {c.only_audit} / {c.only_autoattack}); "
            f"McNemar p (AutoAttack stronger) {_median(c.p_value):.3g}; "
            f"audit - AutoAttack {100 * difference:+.2f}"
            f" pp, 95 % paired interval [{100 * low:+.2f}, {100 * high:+.2f}] pp"
            f"{'  SIGNIFICANT EXCESS' if significant else ''}"
        )
        print(
            "    audit robust after: "
            + ", ".join(
                f"{label} {_median([a[label] for a in c.audit_after]):.4f}"
                for label in c.audit_after[0]
            )
        )
        print(
            "    audit wall time per attack, s: "
            + ", ".join(
                f"{label} {_median([a[label] for a in c.audit_attack_wall]):.1f}"
                for label in c.audit_attack_wall[0]
            )
        )
        print(
            "    AutoAttack robust after: "
            + ", ".join(
                f"{label} {_median([a[label] for a in c.autoattack_after]):.4f}"
                for label in c.autoattack_after[0]
            )
        )
        print(
            f"    missed by the audit, broken by (all repeats): {dict(missed) or '-'}; "
            f"missed by AutoAttack, broken by: {dict(found) or '-'}"
        )
        print(
            f"    AutoAttack examples: largest distance / eps {max(c.max_distance_ratio):.6f}, "
            f"outside [0, 1]: {max(c.outside_box)}"
        )
        per_norm[norm.value] = {"epsilon": epsilons[norm], **c.summary()}
    return {
        "model": name,
        "dataset": dataset,
        "samples": int(x.shape[0]),
        "stochastic": probes.stochastic,
        "eot_samples": suite.eot_samples,
        "autoattack_version": version,
        "clean_accuracy": clean_accuracy,
        "audit_wall_s": audit_walls,
        "autoattack_wall_s": autoattack_walls,
        "ratio": ratio,
        "fab_t_wall_s": fab_wall,
        "ratio_without_fab_t": without_fab,
        "audit_cpu_s": audit_cpu,
        "autoattack_cpu_s": autoattack_cpu,
        "cpu_ratio": cpu_ratio,
        "goal_met": goal_met,
        "norms": per_norm,
    }


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every comparison with AutoAttack takes (this one and bench_whole_audit)."""
    parser.add_argument(
        "--num-samples", type=int, default=1000, help="the audit's seeded selection (default 1000)"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--autoattack-version",
        choices=("auto", "standard", "rand"),
        default="auto",
        help="AutoAttack's version: auto (default) is rand for a stochastic model, else standard",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    add_description_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated zoo names or .pt paths (default: %(default)s)",
    )
    parser.add_argument("--norms", default="linf,l2", help="comma-separated (default linf,l2)")
    add_comparison_arguments(parser)
    args = parser.parse_args(argv)
    try:
        norms = tuple(Norm.parse(n.strip()) for n in args.norms.split(",") if n.strip())
    except ValueError as error:
        print(f"error: --norms: {error}", file=sys.stderr)
        return 2
    if not norms or args.repeats < 1 or args.num_samples < 1 or args.batch_size < 1:
        print(
            "error: need at least one norm, and --repeats, --num-samples and --batch-size >= 1",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    figures = []
    for name in (m.strip() for m in args.models.split(",") if m.strip()):
        row = bench_model(name, norms, args)
        if row is None:
            return 2
        figures.append(row)
    load_after = os.getloadavg()
    total_audit = sum(_median(row["audit_wall_s"]) for row in figures)
    total_autoattack = sum(_median(row["autoattack_wall_s"]) for row in figures)
    print(
        f"\nall models: audit {total_audit:.1f} s, AutoAttack {total_autoattack:.1f} s, "
        f"ratio {total_audit / total_autoattack:.2f}; goal met on every model: "
        f"{'yes' if all(row['goal_met'] for row in figures) else 'NO'}"
    )
    print(
        f"threads {args.threads}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (1 min), {os.cpu_count()} cores"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"models": figures, "load_average": [load_before, load_after]}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
