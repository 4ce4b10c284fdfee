"""Speed and agreement of the attack engine against the reference libraries.

Runs the ``standard`` suite (PGD-CE with its epsilon sweep, PGD-T, FGSM, random noise and
Square, under L∞ and L2; not its margin-loss PGD, which the reference libraries cannot
compose) on a zoo checkpoint twice in one process: with the native engine,
and composed from torchattacks (PGD, PGD-T), cleverhans (FGSM/FGM) and pyautoattack (Square)
calls that follow the same plan (each attack on the samples still robust, the nested sweep,
the independent per-epsilon sweep on the same subsample as the native run). No library
implements random-noise search, so the reference composes it from plain torch draws. Library
calls are split into batches of ``--batch-size`` exactly as the native engine splits its work.

Fairness of the timing: both contenders run with the same number of intra-op threads
(``--threads``, default 1: on a shared machine a second thread mostly waits for a busy core,
and LeNet's small batches gain nothing from it), after an untimed warm-up of both (library
imports, allocator), alternating (native, reference, native, ...; the reference's independent
sweep attacks the subsample the native run of the same repeat drew), each repeat with its own
seed (``--seed + repeat``) for both. Wall times are medians over the repeats; every robust
accuracy is shown as the median over the seeds with the seeds' spread beside it, and compared
as the median of the paired differences (same seed, same samples: the independent sweep's
subsample changes with the seed, so medians of the two columns may come from different
subsamples). Both
sides run on the model in eval mode (the reference checks that no library left it in train
mode, which would switch dropout on for every later evaluation).

Per stage (sweep, each attack, independent sweep) the wall time and the overhead of both
sides are printed too, so the stages whose work is the same on both sides (Square is
pyautoattack's search on both, the native side drawing per sample; the independent sweep runs
every step by design) are visible as such.

Overhead: wall ÷ (sample-passes × measured time per sample-pass at the batch size used). Every
call into the model is recorded with its batch size and whether it is differentiated; the time
of a bare forward (or forward plus input backward) at each size is measured on the same model
and data in the same repeat (interpolated between measured sizes), and the sum over the calls
is the time the passes alone would take. The reference's overhead is shown too.

    ROBAUDIT_DATA=../shared/data python -m benchmarks.bench_attacks
    python -m benchmarks.bench_attacks --num-samples 100 --num-steps 10 --num-queries 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attacks import Norm, SuiteConfig, SuiteResult, geometry, preset, run_suite
from checkpoints import load_checkpoint
from checkpoints.datasets import load_dataset

ZOO = Path(__file__).resolve().parents[1] / "checkpoints" / "zoo"
SPEED_UP_TARGET = 3.0
OVERHEAD_TARGET = 1.15
ACCURACY_TARGET = 0.01


class Recorder(nn.Module):
    """Passes every call to ``model`` and records its batch size and whether it records a graph.

    A forward with gradients enabled on its input counts as a sample-forward and a
    sample-backward pass per sample: every attack here differentiates each forward it records
    a graph for.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool]] = []
        self.marks: list[tuple[str, int, float]] = []
        # A new module starts in train mode; torchattacks restores the mode it finds on the
        # wrapper to the wrapped model as well, which would turn dropout on for what follows.
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled() and x.requires_grad))
        return self.model(x)

    def reset(self) -> None:
        self.calls.clear()
        self.marks.clear()
        self.mark("start")

    def snapshot(self) -> Recorder:
        """A copy of the calls and marks, for reading after the next ``reset``."""
        copy = Recorder(self.model)
        copy.calls, copy.marks = list(self.calls), list(self.marks)
        return copy

    def mark(self, stage: str) -> None:
        """Note the end of a stage: its name, the calls so far and the time."""
        self.marks.append((stage, len(self.calls), time.perf_counter()))

    def stages(self) -> list[tuple[str, list[tuple[int, bool]], float]]:
        """Per stage since ``reset``: its name, its calls and its seconds."""
        return [
            (stage, self.calls[begin:end], finish - start)
            for (_, begin, start), (stage, end, finish) in zip(
                self.marks, self.marks[1:], strict=False
            )
        ]


# --- the reference composition ---------------------------------------------------------------


def _in_batches(
    function: Callable[..., Tensor], batch_size: int, x: Tensor, *per_sample: Tensor
) -> Tensor:
    """``function(x, *per_sample)`` applied batch by batch, as the native engine splits work."""
    parts = [
        function(x[i : i + batch_size], *(t[i : i + batch_size] for t in per_sample))
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(parts) if parts else x.clone()


def _correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return _in_batches(lambda a, b: model(a).argmax(dim=1) == b, batch_size, x, y)


def _torchattacks_pgd(model, x, y, norm, eps, steps, rel, targets=None) -> Tensor:
    import torchattacks

    attack_class = torchattacks.PGD if norm is Norm.LINF else torchattacks.PGDL2
    attack = attack_class(model, eps=eps, alpha=rel * eps, steps=steps, random_start=True)
    if targets is not None:
        attack.set_mode_targeted_by_label(quiet=True)
        return attack(x, targets)
    return attack(x, y)


def _cleverhans_fgsm(model, x, y, norm, eps) -> Tensor:
    from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method

    order = math.inf if norm is Norm.LINF else 2
    return fast_gradient_method(model, x, eps, order, clip_min=0.0, clip_max=1.0, y=y)


def _square(model, x, y, norm, eps, queries, seed) -> Tensor:
    from pyautoattack.square import SquareAttack

    attack = SquareAttack(
        model,
        norm="Linf" if norm is Norm.LINF else "L2",
        n_queries=queries,
        eps=eps,
        p_init=0.8,
        seed=seed,
        resc_schedule=False,
    )
    with torch.no_grad():
        return attack.perturb(x, y)


def _noise(model, x, y, norm, eps, draws, generator) -> Tensor:
    geom = geometry(norm)
    found = x.clone()
    active = torch.arange(x.shape[0])
    radius = torch.full((x.shape[0],), eps)
    for draw in range(draws):
        candidate = geom.surface_draw(x[active], radius[active], generator, draw).clamp_(0, 1)
        with torch.no_grad():
            fooled = model(candidate).argmax(dim=1) != y[active]
        found[active[fooled]] = candidate[fooled]
        active = active[~fooled]
        if active.numel() == 0:
            break
    return found


def _chain_attack(label, model, x, y, norm, eps, params, num_classes, generator, seed) -> Tensor:
    if label == "pgd-t":
        steps, rel = params["pgd-t"]["num_steps"], params["pgd-t"]["rel_step_size"]
        shift = torch.randint(1, num_classes, y.shape, generator=generator)
        return _torchattacks_pgd(model, x, y, norm, eps, steps, rel, (y + shift) % num_classes)
    if label == "fgsm":
        return _cleverhans_fgsm(model, x, y, norm, eps)
    if label == "noise":
        return _noise(model, x, y, norm, eps, params["noise"]["num_draws"], generator)
    return _square(model, x, y, norm, eps, params["square"]["num_queries"], seed)


def reference_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: SuiteConfig,
    seed: int,
    subsets: dict[Norm, Tensor],
    mark: Callable[[str], None] = lambda stage: None,
) -> dict[str, float]:
    """The suite's plan composed from library calls; returns every robust accuracy.

    Args:
        subsets: per norm, the samples of the independent sweep (the native run's subsample).
        mark: called with the stage's name at the end of each stage.
    """
    if model.training:
        raise ValueError("the reference runs the model in eval mode; call model.eval() first")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    size = config.batch_size or x.shape[0]
    accuracies: dict[str, float] = {}
    clean = _correct(model, x, y, size)
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    sweep = config.sweep
    if sweep is None:
        raise ValueError("the benchmark needs a suite with a sweep")
    params = {spec.label: spec.params for spec in config.attacks}
    steps, rel = params["pgd-ce"]["num_steps"], params["pgd-ce"]["rel_step_size"]

    def pgd_ce(inputs: Tensor, labels: Tensor, norm: Norm, eps: float) -> Tensor:
        adversarial = _in_batches(
            lambda a, b: _torchattacks_pgd(model, a, b, norm, eps, steps, rel),
            size,
            inputs,
            labels,
        )
        return _correct(model, adversarial, labels, size)

    for norm in config.norms:
        eps = config.epsilons[norm][0]
        sweep_epsilons = sweep.epsilons(
            eps, geometry(norm).unbounded_epsilon(x.shape[1:], config.bounds)
        )
        robust = clean.clone()
        at_eps = None
        for value in sweep_epsilons:
            index = robust.nonzero().squeeze(1)
            if index.numel():
                robust[index] &= pgd_ce(x[index], y[index], norm, value)
            accuracies[f"{norm.value} sweep eps={value:.4g}"] = float(robust.double().mean())
            if value == eps:
                at_eps = robust.clone()
        if at_eps is None:
            # The sweep skipped the suite epsilon, so PGD-CE runs there on its own.
            at_eps = clean.clone()
            index = at_eps.nonzero().squeeze(1)
            at_eps[index] &= pgd_ce(x[index], y[index], norm, eps)
        mark(f"{norm.value} sweep")
        robust = at_eps
        accuracies[f"{norm.value} pgd-ce"] = float(robust.double().mean())
        for label in ("pgd-t", "fgsm", "noise", "square"):
            index = robust.nonzero().squeeze(1)
            if index.numel():

                def chained(
                    a: Tensor, b: Tensor, label: str = label, norm: Norm = norm, eps: float = eps
                ) -> Tensor:
                    return _chain_attack(
                        label, model, a, b, norm, eps, params, num_classes, generator, seed
                    ).detach()

                adversarial = _in_batches(chained, size, x[index], y[index])
                robust[index] &= _correct(model, adversarial, y[index], size)
            accuracies[f"{norm.value} {label}"] = float(robust.double().mean())
            mark(f"{norm.value} {label}")
        # Independent runs on the same subsample as the native run, each from the clean input.
        subset = subsets[norm]
        correct = clean[subset]
        index = subset[correct]
        for value in sweep_epsilons:
            robust_here = correct.clone()
            if index.numel():
                robust_here[correct] = pgd_ce(x[index], y[index], norm, value)
            accuracies[f"{norm.value} independent eps={value:.4g}"] = float(
                robust_here.double().mean()
            )
        mark(f"{norm.value} independent")
    if model.training:
        raise RuntimeError("a library left the model in train mode")
    return accuracies


# --- the native run --------------------------------------------------------------------------


def native_accuracies(result: SuiteResult) -> dict[str, float]:
    accuracies: dict[str, float] = {}
    for outcome in result.norms:
        norm = outcome.norm.value
        sweep, independent = outcome.sweep, outcome.independent_sweep
        if sweep is None or independent is None:
            raise ValueError("the benchmark needs a suite with a sweep and independent runs")
        for k, value in enumerate(outcome.sweep_epsilons):
            accuracies[f"{norm} sweep eps={value:.4g}"] = sweep.robust_accuracy_after[k].value
        for record in outcome.attacks:
            accuracies[f"{norm} {record.label}"] = record.robust_accuracy_after[0].value
        for k, value in enumerate(outcome.sweep_epsilons):
            alone = independent.robust_accuracy_after[k].value
            accuracies[f"{norm} independent eps={value:.4g}"] = alone
    return accuracies


def native_stage(label: str) -> str:
    """The reference's name for the stage ``run_suite`` reports as ``label``."""
    norm = label.split()[0]
    if label.endswith("independent sweep"):
        return f"{norm} independent"
    # The main list's PGD-CE reads the sweep; the reference counts it in the sweep too.
    if " sweep " in label or label.endswith(" pgd-ce"):
        return f"{norm} sweep"
    return f"{norm} {label.split()[-1]}"


def independent_subsets(result: SuiteResult) -> dict[Norm, Tensor]:
    subsets = {}
    for outcome in result.norms:
        if outcome.independent_sweep is None:
            raise ValueError("the benchmark needs a suite with independent runs")
        subsets[outcome.norm] = outcome.independent_sweep.sample_index
    return subsets


# --- time per sample-pass at the batch sizes used --------------------------------------------


def _size_grid(largest: int) -> list[int]:
    grid = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768}
    grid.update(range(1024, largest + 1, 512))
    return sorted(s for s in grid if s < largest) + [largest]


def measure_call_times(
    model: nn.Module, x: Tensor, sizes: Sequence[int], repeats: int = 3
) -> dict[bool, dict[int, float]]:
    """Median seconds of one bare call at each batch size: ``{differentiated: {size: s}}``.

    A differentiated call is a forward recording a graph plus the backward to the input.
    """
    times: dict[bool, dict[int, float]] = {False: {}, True: {}}
    for size in sizes:
        batch = x[torch.arange(size) % x.shape[0]]
        # Enough calls per measurement that small sizes are not lost in timer noise.
        calls = max(1, min(20, 600 // size))
        forward, both = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                with torch.no_grad():
                    model(batch)
            forward.append((time.perf_counter() - start) / calls)
            start = time.perf_counter()
            for _ in range(calls):
                inputs = batch.clone().requires_grad_(True)
                torch.autograd.grad(model(inputs).sum(), inputs)
            both.append((time.perf_counter() - start) / calls)
        times[False][size] = statistics.median(forward)
        times[True][size] = statistics.median(both)
    return times


def _interpolate(table: dict[int, float], size: int) -> float:
    if size in table:
        return table[size]
    sizes = sorted(table)
    upper = next(s for s in sizes if s > size)
    lower = max(s for s in sizes if s < size)
    weight = (size - lower) / (upper - lower)
    return (1 - weight) * table[lower] + weight * table[upper]


def ideal_time(calls: Sequence[tuple[int, bool]], times: dict[bool, dict[int, float]]) -> float:
    """Seconds the recorded calls would take as bare passes at their own batch sizes."""
    return sum(
        count * _interpolate(times[grad], size) for (size, grad), count in Counter(calls).items()
    )


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Contender:
    """Wall times, passes, overheads, stages and accuracies of one side over the repeats."""

    walls: list[float] = field(default_factory=list)
    forward: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    accuracies: list[dict[str, float]] = field(default_factory=list)
    # Per repeat, per stage: seconds and the seconds its passes alone take.
    stages: list[dict[str, tuple[float, float]]] = field(default_factory=list)

    def record(
        self,
        wall: float,
        recorder: Recorder,
        times: dict[bool, dict[int, float]],
        rename: Callable[[str], str] = lambda stage: stage,
    ) -> None:
        calls = recorder.calls
        self.walls.append(wall)
        self.forward.append(sum(size for size, _ in calls))
        self.backward.append(sum(size for size, grad in calls if grad))
        self.overheads.append(wall / ideal_time(calls, times))
        stages: dict[str, tuple[float, float]] = {}
        for stage, stage_calls, seconds in recorder.stages():
            name = rename(stage)
            spent, ideal = stages.get(name, (0.0, 0.0))
            stages[name] = (spent + seconds, ideal + ideal_time(stage_calls, times))
        self.stages.append(stages)

    def summary(self) -> dict[str, Any]:
        return {
            "wall_s": statistics.median(self.walls),
            "walls_s": self.walls,
            "forward_passes": int(statistics.median(self.forward)),
            "backward_passes": int(statistics.median(self.backward)),
            "overhead": statistics.median(self.overheads),
            "overheads": self.overheads,
        }

    def stage(self, name: str) -> tuple[float, float]:
        """Median seconds of a stage over the repeats, and its median overhead."""
        rows = [s[name] for s in self.stages if name in s]
        if not rows:
            return 0.0, float("nan")
        return (
            statistics.median(spent for spent, _ in rows),
            statistics.median(
                spent / ideal if ideal > 0 else float("nan") for spent, ideal in rows
            ),
        )


def build_config(args: argparse.Namespace) -> SuiteConfig:
    config = preset("standard", "mnist")
    sweep = config.sweep
    if sweep is None:
        raise ValueError("the standard preset has a sweep")
    attacks = []
    for spec in config.attacks:
        if spec.peer_of is not None:
            # The margin-loss PGD has no counterpart in the reference libraries (torchattacks'
            # PGD takes no loss), so neither side runs it: the work stays identical.
            continue
        params = dict(spec.params)
        if spec.kind in ("pgd", "pgd-t") and args.num_steps != params["num_steps"]:
            params.update(num_steps=args.num_steps, rel_step_size=2.5 / args.num_steps)
        if spec.kind == "square":
            params.update(num_queries=args.num_queries)
        attacks.append(type(spec)(spec.kind, spec.label, params))
    pgd_ce = attacks[0]
    return config.with_options(
        attacks=tuple(attacks),
        batch_size=args.batch_size,
        sweep=type(sweep)(
            pgd_ce, num_points=args.sweep_points, independent_samples=args.independent_samples
        ),
    )


def _warm_up(model: nn.Module, x: Tensor, y: Tensor, config: SuiteConfig) -> None:
    """Import the libraries and touch every code path once, untimed, on both sides."""
    small = config.with_options(
        attacks=tuple(
            type(spec)(
                spec.kind,
                spec.label,
                {
                    **spec.params,
                    **({"num_steps": 2} if spec.kind in ("pgd", "pgd-t") else {}),
                    **({"num_queries": 5} if spec.kind == "square" else {}),
                },
            )
            for spec in config.attacks
        ),
    )
    sweep = small.sweep
    if sweep is not None:
        small = small.with_options(
            sweep=type(sweep)(small.attacks[0], num_points=2, independent_samples=4)
        )
    result = run_suite(model, x[:16], y[:16], small, generator=0)
    reference_suite(model, x[:16], y[:16], small, 0, independent_subsets(result))


def _verdict(key: str, native: list[float], reference: list[float]) -> tuple[float, float, bool]:
    """Median over the seeds of the paired difference (same seed, same samples), the spread
    of both sides over the seeds, and whether the difference is within the target."""
    difference = statistics.median(a - b for a, b in zip(native, reference, strict=True))
    spread = max(native + reference) - min(native + reference)
    allowed = ACCURACY_TARGET + 1e-9
    if key.endswith(" square"):
        allowed = max(allowed, spread)
    return difference, spread, abs(difference) <= allowed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--checkpoint", default=str(ZOO / "mnist-lenet5-dropout.pt"))
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--num-queries", type=int, default=5000)
    parser.add_argument("--sweep-points", type=int, default=8)
    parser.add_argument("--independent-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).exists():
        print(f"error: checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).model.eval()
    data = load_dataset("mnist")
    x, y = data.x[: args.num_samples], data.y[: args.num_samples]
    config = build_config(args)
    recorder = Recorder(model)
    load_before = os.getloadavg()
    _warm_up(recorder, x, y, config)

    native, reference = Contender(), Contender()
    clean_accuracy = float("nan")
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        # The reference attacks the native run's independent subsample, so native goes first.
        recorder.reset()
        start = time.perf_counter()
        result = run_suite(
            recorder,
            x,
            y,
            config,
            generator=seed,
            progress=lambda done, total, label: recorder.mark(label),
        )
        native_wall = time.perf_counter() - start
        native_recorder = recorder.snapshot()
        native.accuracies.append(native_accuracies(result))
        clean_accuracy = result.clean_accuracy

        recorder.reset()
        start = time.perf_counter()
        accuracies = reference_suite(
            recorder, x, y, config, seed, independent_subsets(result), mark=recorder.mark
        )
        reference_wall = time.perf_counter() - start
        reference.accuracies.append(accuracies)

        largest = max(size for size, _ in native_recorder.calls + recorder.calls)
        times = measure_call_times(model, x, _size_grid(largest))
        native.record(native_wall, native_recorder, times, native_stage)
        reference.record(reference_wall, recorder, times)
        print(
            f"repeat {repeat} (seed {seed}): native {native_wall:.2f} s, "
            f"reference {reference_wall:.2f} s",
            file=sys.stderr,
        )
    load_after = os.getloadavg()

    figures = print_report(args, x.shape[0], clean_accuracy, native, reference)
    figures["load_average"] = {"before": load_before, "after": load_after}
    print(
        f"threads {args.threads}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (1 min), {os.cpu_count()} cores"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def print_report(
    args: argparse.Namespace,
    num_samples: int,
    clean_accuracy: float,
    native: Contender,
    reference: Contender,
) -> dict[str, Any]:
    mine, theirs = native.summary(), reference.summary()
    speed_up = theirs["wall_s"] / mine["wall_s"]
    print(
        f"samples {num_samples}, clean accuracy {clean_accuracy:.4f}, repeats {args.repeats} "
        f"(seeds {args.seed}..{args.seed + args.repeats - 1}), batch size {args.batch_size}"
    )
    for name, side in (("native", mine), ("reference", theirs)):
        walls = ", ".join(f"{w:.1f}" for w in side["walls_s"])
        print(
            f"{name:<10} wall {side['wall_s']:8.2f} s (runs {walls})  "
            f"forward {side['forward_passes']:>9}  backward {side['backward_passes']:>9}  "
            f"overhead {side['overhead']:.3f}"
        )
    print(f"speed-up (reference / native) {speed_up:.2f}x  (target >= {SPEED_UP_TARGET:g})")
    print(f"native overhead {mine['overhead']:.3f}  (target <= {OVERHEAD_TARGET})")
    print(
        f"{'stage (medians)':<24}{'native s':>9}{'overhead':>9}{'reference s':>12}{'overhead':>9}"
    )
    stage_rows = {}
    for key in reference.stages[0]:
        native_s, native_overhead = native.stage(key)
        reference_s, reference_overhead = reference.stage(key)
        stage_rows[key] = {
            "native_s": native_s,
            "native_overhead": native_overhead,
            "reference_s": reference_s,
            "reference_overhead": reference_overhead,
        }
        print(
            f"{key:<24}{native_s:>9.2f}{native_overhead:>9.3f}"
            f"{reference_s:>12.2f}{reference_overhead:>9.3f}"
        )
    print(
        f"{'robust accuracy':<32}{'native':>8}{'(spread)':>9}{'reference':>10}{'(spread)':>9}"
        f"{'diff pp':>8}  within target (diff: median of the paired per-seed differences)"
    )
    rows = []
    all_within = True
    for key in reference.accuracies[0]:
        ours = [a.get(key, float("nan")) for a in native.accuracies]
        refs = [a[key] for a in reference.accuracies]
        difference, spread, within = _verdict(key, ours, refs)
        all_within &= within
        print(
            f"{key:<32}{statistics.median(ours):>8.4f}{max(ours) - min(ours):>9.4f}"
            f"{statistics.median(refs):>10.4f}{max(refs) - min(refs):>9.4f}"
            f"{100 * difference:>8.2f}  {'yes' if within else 'NO'}"
        )
        rows.append({"key": key, "native": ours, "reference": refs, "within_target": within})
    print(f"every robust accuracy within target: {'yes' if all_within else 'NO'}")
    return {
        "samples": num_samples,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "clean_accuracy": clean_accuracy,
        "native": mine,
        "reference": theirs,
        "speed_up": speed_up,
        "stages_s": stage_rows,
        "robust_accuracy": rows,
    }


if __name__ == "__main__":
    raise SystemExit(main())
