"""Distributed speed-up and the cost of resuming.

    python -m benchmarks.bench_distributed [CHECKPOINT] [--num-samples 1000] [--processes 2]
        [--attacks LABELS] [--skip-distributed] [--skip-resume]

1. The audit's default command (``standard`` preset, flatness on) in one process and under
   ``torchrun --standalone --nproc_per_node=P``, each process on one thread
   (``OMP_NUM_THREADS=1``): wall times, the speed-up, and whether the documents agree
   (``analysis.document.differences``: per-sample outcomes exactly, figures within 1e-5).
2. Resuming, in one process with the checkpoint loaded once: the audit without a cache, with
   a cache but never interrupted (the cost of writing units), and interrupted right after
   every unit it finishes and resumed at once until it completes (the cost of writing,
   loading every finished unit again, and redoing what is not kept: the clean pass, the
   activation statistics). Ratios against the run without a cache; each resumed document is
   checked against the uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from analysis.audit import _config, _parser, evaluation_set, run_audit
from analysis.document import differences, without_timings
from analysis.resume import UnitCache
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR

ROOT = Path(__file__).resolve().parents[1]


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    document = without_timings(document)
    for key in ("world_size", "command_line"):
        document["provenance"].pop(key, None)
    return document


def _cli(command: list[str], out: Path) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    document = json.loads(next(out.glob("*/audit.json")).read_text())
    return seconds, document


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
    parser.add_argument("--skip-distributed", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    parser.add_argument(
        "--attacks", help="passed to the audit (e.g. only the attacks that split per sample)"
    )
    args = parser.parse_args(argv)
    audit = ["-m", "analysis.audit", str(args.checkpoint), "--num-samples", str(args.num_samples)]
    audit += ["--no-report", "--quiet"]
    if args.attacks:
        audit += ["--attacks", args.attacks]
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    try:
        if not args.skip_distributed:
            one_out, many_out = work / "one", work / "many"
            one, single = _cli([sys.executable, *audit, "--out", str(one_out)], one_out)
            torchrun = str(Path(sys.executable).parent / "torchrun")
            nproc = f"--nproc_per_node={args.processes}"
            many, spread = _cli(
                [torchrun, "--standalone", nproc, *audit, "--out", str(many_out)], many_out
            )
            found = differences(_comparable(single), _comparable(spread))
            print("| processes | wall time | speed-up | documents |\n|---|---|---|---|")
            print(f"| 1 | {one:.1f} s | 1.00 | |")
            agree = "identical (figures within 1e-5)" if not found else f"{len(found)} differ"
            print(f"| {args.processes} | {many:.1f} s | {one / many:.2f} | {agree} |")
            for line in found[:20]:
                print(f"  differs: {line}")
        if not args.skip_resume:
            torch.set_num_threads(1)
            options = _parser().parse_args([str(args.checkpoint), *audit[3:5]])
            loaded = load_checkpoint(Path(args.checkpoint))
            config = _config(options, loaded.spec.dataset)
            evaluation = evaluation_set(loaded, None, args.num_samples, config.seed)
            cpu = torch.device("cpu")
            folder = work / "partial"

            def run(cache: UnitCache | None) -> dict[str, Any]:
                return run_audit(loaded, evaluation, config, device=cpu, cache=cache)

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
