"""Distributed speed-up and the cost of resuming.

    python -m benchmarks.bench_distributed [CHECKPOINT] [--num-samples 1000] [--processes 2]
        [--repeats 3] [--attacks LABELS] [--skip-distributed] [--skip-resume] [--skip-ceiling]
        [--skip-audit-ceiling] [--skip-divisible]

1. The audit's default command (``standard`` preset, flatness on) in one process and under
   ``torchrun --standalone --nproc_per_node=P``, each process on one thread
   (``OMP_NUM_THREADS=1``), ``--repeats`` times each, interleaved (1, P, P, 1, 1, P, ...) so
   that a slower spell of a shared machine falls on both alike: median wall times, their
   ratio (the speed-up) with the range of the per-pair ratios, the CPU time (user + sys, all
   processes), and whether every document agrees with the first one-process document
   (``analysis.documentdiff.differences``: per-sample outcomes exactly, figures within 1e-5
   relative or 1e-6 absolute).
2. The machine's own ceiling: a fixed amount of the model's work (forward and backward passes
   on 500 images, one thread) alone and as P copies at once, interleaved, ``--repeats`` times:
   P × (time alone) ÷ (time of the copies) is the most P processes can gain on this machine
   (cores shared with other guests or hyper-threads give less than P).
3. The audit's own ceiling: the one-process audit of 1. alone and as P copies at once,
   interleaved, ``--repeats`` times. Its mix of work (small batches, many short operations)
   slows down more than the model's big-batch passes of 2. when every core is busy, so this
   is the most P processes can gain on this audit, had they nothing to share or wait for.
4. Resuming, in one process with the checkpoint loaded once: the audit without a cache, with
   a cache but never interrupted (the cost of writing units), and interrupted right after
   every unit it finishes and resumed at once until it completes (the cost of writing,
   loading every finished unit again, and redoing what is not kept: the clean pass, the
   activation statistics). Ratios against the run without a cache; each resumed document is
   checked against the uninterrupted one.
5. What splitting a stage's samples gains: every attack of AutoAttack's chain (APGD, FAB,
   Square) that ran on samples in the one-process audit of 1., run again in this process (one
   thread) on all of those samples and on each half of them (even and odd positions),
   interleaved, ``--repeats`` times: medians, the part both halves pay again (``a`` in
   T(n) = a + b·n: T(half 1) + T(half 2) − T(all), the per-iteration work that does not shrink
   with the samples, e.g. Square's 5000 iterations while a robust sample is left), and the
   most two processes can gain on it, T(all) ÷ the slower half.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from analysis.documentdiff import differences, without_timings
from analysis.pipeline import evaluation_set, run_audit
from analysis.resume import UnitCache
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from commands.audit import audit_config, audit_parser

ROOT = Path(__file__).resolve().parents[1]


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    document = without_timings(document)
    for key in ("world_size", "command_line"):
        document["provenance"].pop(key, None)
    return document


def _cli(command: list[str], out: Path) -> tuple[float, float, dict[str, Any]]:
    """Wall seconds, CPU seconds (user + sys of every process it started) and the document."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    document = json.loads(next(out.glob("*/audit.json")).read_text())
    return seconds, cpu, document


_WORK = """
import sys, torch
from checkpoints import load_checkpoint
torch.set_num_threads(1)
loaded = load_checkpoint(sys.argv[1])
model = loaded.model.eval()
x = torch.rand(500, *loaded.spec.input_shape, generator=torch.Generator().manual_seed(0))
x.requires_grad_(True)
for _ in range(int(sys.argv[2])):
    model(x).logsumexp(1).sum().backward()
"""


def _together(
    command: Callable[[int], list[str]], processes: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Wall times of ``command(0)`` alone and of ``command(0), ..., command(P - 1)`` at once
    (each process on one thread), interleaved, ``repeats`` times each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def timed(copies: int) -> float:
        start = time.perf_counter()
        running = [
            subprocess.Popen(command(i), cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
            for i in range(copies)
        ]
        if any(process.wait() != 0 for process in running):
            raise SystemExit(f"{' '.join(command(0))} failed")
        return time.perf_counter() - start

    alone, together = [], []
    for repeat in range(repeats):
        for copies in [1, processes] if repeat % 2 == 0 else [processes, 1]:
            (alone if copies == 1 else together).append(timed(copies))
    return alone, together


def _ceiling(checkpoint: Path, processes: int, repeats: int, passes: int = 150) -> None:
    """Prints P × (the model's work alone) ÷ (P copies of it at once), median over repeats."""
    command = [sys.executable, "-c", _WORK, str(checkpoint), str(passes)]
    alone, together = _together(lambda _: command, processes, repeats)
    ceiling = [processes * a / b for a, b in zip(alone, together, strict=True)]
    print(
        f"\nceiling: {processes} copies of {statistics.median(alone):.1f} s of model work took "
        f"{statistics.median(together):.1f} s: at most {statistics.median(ceiling):.2f}x "
        f"({min(ceiling):.2f}-{max(ceiling):.2f}) with {processes} processes on this machine"
    )


def _audit_ceiling(audit: list[str], work: Path, processes: int, repeats: int) -> None:
    """Prints P × (the one-process audit alone) ÷ (P copies of it at once): what P processes
    could gain on this audit's own mix of work, which slows down more than the model's
    big-batch passes when every core is busy, had the audit nothing to share or wait for."""

    def command(copy: int) -> list[str]:
        out = work / f"copy-{copy}"
        shutil.rmtree(out, ignore_errors=True)
        return [sys.executable, *audit, "--out", str(out)]

    alone, together = _together(command, processes, repeats)
    ceiling = [processes * a / b for a, b in zip(alone, together, strict=True)]
    print(
        f"\nthe audit's own ceiling: {processes} copies of the one-process audit "
        f"({statistics.median(alone):.1f} s alone) took {statistics.median(together):.1f} s at "
        f"once: at most {statistics.median(ceiling):.2f}x ({min(ceiling):.2f}-{max(ceiling):.2f})"
    )


def _divisible(checkpoint: Path, audit: list[str], document: dict[str, Any], repeats: int) -> None:
    """Prints, per attack of AutoAttack's chain that ran on samples, its time on all of them and
    on each half, and what two processes can gain on it (section 5 of the module's doc)."""
    from attacks.shards import run_attack_spec
    from attacks.threat import Norm
    from torchutil import make_generator

    torch.set_num_threads(1)
    options = audit_parser().parse_args([str(checkpoint), *audit[3:5]])
    loaded = load_checkpoint(checkpoint)
    config = audit_config(options, loaded.spec.dataset)
    evaluation = evaluation_set(loaded, None, len(document["evaluation"]["indices"]), config.seed)
    specs = {spec.label: spec for spec in config.suite.attacks}
    model = loaded.model.eval()
    print("\n| norm, attack | samples | all | halves | repeated a | best 2-process gain |")
    print("|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for section in document["robustness"]["norms"]:
        norm = Norm(section["norm"])
        for k, epsilon in enumerate(section["epsilons"]):
            for record in section["attacks"]:
                if record["kind"] not in ("apgd", "fab", "square") or record["label"] not in specs:
                    continue
                rows = [i for i, bit in enumerate(record["attacked"][k]) if bit == "1"]
                if len(rows) < 2:
                    continue
                index = torch.tensor(rows)
                parts = {"all": index, "half 1": index[0::2], "half 2": index[1::2]}
                times: dict[str, list[float]] = {name: [] for name in parts}
                for _ in range(repeats):
                    for name, part in parts.items():
                        start = time.perf_counter()
                        run_attack_spec(
                            specs[record["label"]],
                            model,
                            evaluation.x[part],
                            evaluation.y[part],
                            [epsilon],
                            norm=norm,
                            config=config.suite,
                            generator=make_generator(0),
                        )
                        times[name].append(time.perf_counter() - start)
                every, one, two = (statistics.median(times[name]) for name in parts)
                totals[0] += every
                totals[1] += max(one, two)
                print(
                    f"| {norm.value} ε={epsilon:g}, {record['label']} | {len(rows)} | "
                    f"{every:.1f} s | {one:.1f} / {two:.1f} s | {one + two - every:.1f} s | "
                    f"{every / max(one, two):.2f}× |",
                    flush=True,
                )
    if totals[1]:
        print(f"| all of them | | {totals[0]:.1f} s | | | {totals[0] / totals[1]:.2f}× |")


class _StopAfterOne(UnitCache):
    """Stops the audit (KeyboardInterrupt) right after it writes one new unit."""

    def store(self, unit: str, value: Any) -> None:
        super().store(unit, value)
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default=ZOO_DIR / "mnist-lenet5-dropout.pt")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--skip-distributed", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument("--skip-ceiling", action="store_true")
    parser.add_argument("--skip-audit-ceiling", action="store_true")
    parser.add_argument("--skip-divisible", action="store_true")
    parser.add_argument(
        "--attacks", help="passed to the audit (e.g. only the attacks that split per sample)"
    )
    args = parser.parse_args(argv)
    audit = ["-m", "analysis.audit", str(args.checkpoint), "--num-samples", str(args.num_samples)]
    audit += ["--no-report", "--quiet"]
    if args.attacks:
        audit += ["--attacks", args.attacks]
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    reference: dict[str, Any] | None = None
    try:
        if not args.skip_distributed:
            torchrun = str(Path(sys.executable).parent / "torchrun")
            commands = {
                1: [sys.executable, *audit],
                args.processes: [
                    torchrun,
                    "--standalone",
                    f"--nproc_per_node={args.processes}",
                    *audit,
                ],
            }
            runs: dict[int, list[tuple[float, float]]] = {1: [], args.processes: []}
            found: list[str] = []
            for repeat in range(args.repeats):
                order = [1, args.processes] if repeat % 2 == 0 else [args.processes, 1]
                for processes in order:
                    out = work / str(processes)
                    wall, cpu, document = _cli([*commands[processes], "--out", str(out)], out)
                    runs[processes].append((wall, cpu))
                    if reference is None:
                        reference = _comparable(document)
                    else:
                        found += differences(reference, _comparable(document))
                    print(f"  run {repeat + 1}, {processes} process(es): {wall:.1f} s", flush=True)
            one = statistics.median(wall for wall, _ in runs[1])
            many = statistics.median(wall for wall, _ in runs[args.processes])
            ratios = [a / b for (a, _), (b, _) in zip(runs[1], runs[args.processes], strict=True)]
            print(
                "| processes | median wall time | CPU time | speed-up (range over pairs) "
                "| documents |\n|---|---|---|---|---|"
            )
            cpu_one = statistics.median(cpu for _, cpu in runs[1])
            print(f"| 1 | {one:.1f} s | {cpu_one:.0f} s | 1.00 | |")
            agree = (
                "identical (outcomes exact, figures within 1e-5 or 1e-6 absolute)"
                if not found
                else f"{len(found)} differ"
            )
            cpu_many = statistics.median(cpu for _, cpu in runs[args.processes])
            print(
                f"| {args.processes} | {many:.1f} s | {cpu_many:.0f} s | {one / many:.2f} "
                f"({min(ratios):.2f}–{max(ratios):.2f}) | {agree} |"
            )
            for line in found[:20]:
                print(f"  differs: {line}")
        if not args.skip_divisible:
            if reference is None:
                _, _, reference = _cli(
                    [sys.executable, *audit, "--out", str(work / "1")], work / "1"
                )
            _divisible(Path(args.checkpoint), audit, reference, args.repeats)
        if not args.skip_ceiling:
            _ceiling(Path(args.checkpoint), args.processes, args.repeats)
        if not args.skip_audit_ceiling:
            _audit_ceiling(audit, work, args.processes, args.repeats)
        if not args.skip_resume:
            torch.set_num_threads(1)
            options = audit_parser().parse_args([str(args.checkpoint), *audit[3:5]])
            loaded = load_checkpoint(Path(args.checkpoint))
            config = audit_config(options, loaded.spec.dataset)
            evaluation = evaluation_set(loaded, None, args.num_samples, config.seed)
            cpu = torch.device("cpu")
            folder = work / "partial"

            def run(cache: UnitCache | None) -> dict[str, Any]:
                return run_audit(loaded, evaluation, config, device=cpu, cache=cache).to_dict()

            start = time.perf_counter()
            plain = run(None)
            plain_seconds = time.perf_counter() - start
            start = time.perf_counter()
            cached = run(UnitCache(folder, {"bench": 1}))
            cached_seconds = time.perf_counter() - start
            shutil.rmtree(folder)
            start = time.perf_counter()
            restarts = 0
            while True:
                try:
                    resumed = run(_StopAfterOne(folder, {"bench": 1}, report=lambda line: None))
                    break
                except KeyboardInterrupt:
                    restarts += 1
            resumed_seconds = time.perf_counter() - start
            same = [
                not differences(_comparable(plain), _comparable(doc)) for doc in (cached, resumed)
            ]
            print("\n| run | wall time | ratio | document |\n|---|---|---|---|")
            print(f"| no cache | {plain_seconds:.1f} s | 1.00 | |")
            print(
                f"| cache, uninterrupted | {cached_seconds:.1f} s | "
                f"{cached_seconds / plain_seconds:.3f} | {'identical' if same[0] else 'DIFFERS'} |"
            )
            print(
                f"| interrupted after each of {restarts} units, resumed | "
                f"{resumed_seconds:.1f} s | {resumed_seconds / plain_seconds:.3f} | "
                f"{'identical' if same[1] else 'DIFFERS'} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
