"""Peak memory of the Hessian estimators on VGG-16-BN against that of one Hessian-vector product.

VGG-16-BN in the NormOut layout (134 M parameters) with CIFAR-10's input shape, random
weights, 32 random images in one batch. Each figure is the peak resident set size of a fresh
subprocess that builds the network and runs one thing: a single Hessian-vector product, the
top-3 eigenvalues (``hessian_eigenvalues``), the spectral density (``spectral_density``, one
run) or ``hutchinson_trace`` with two probes. Both Lanczos estimators run exactly ``--steps``
steps (their stopping rule is switched off). The peak is also read after every product, so
the growth per Lanczos step shows within one run (and after each pass of the trace's probes).

"before" runs ``flatness/hessian.py`` as of ``--before`` (a git revision; default the last
one with a fully reorthogonalised Lanczos basis), loaded from git into a temporary module;
"after" runs the working tree. Target: every estimator within 1.5x the peak of one product.
Run from the repository root (each product takes about 25 s on two threads here):

    OMP_NUM_THREADS=2 python benchmarks/bench_hessian_memory.py
    OMP_NUM_THREADS=2 python benchmarks/bench_hessian_memory.py --steps 4 --only after
    OMP_NUM_THREADS=2 python benchmarks/bench_hessian_memory.py --steps 100 --only after \
        --measure hvp --measure density
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "41a7e87"
MEASUREMENTS = ("hvp", "eigenvalues", "density", "trace")
GIB = 1024**3


def hessian_module(revision: str | None) -> ModuleType:
    """``flatness.hessian`` of the working tree, or of ``revision`` loaded from git."""
    if revision is None:
        from flatness import hessian

        return hessian
    source = subprocess.run(
        ["git", "show", f"{revision}:flatness/hessian.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "hessian_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("hessian_before", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def child(measurement: str, revision: str | None, steps: int) -> None:
    """Runs in the subprocess: one measurement, then its figures as one JSON line."""
    from checkpoints.architectures import build_network
    from flatness.core import FunctionalModel, Mode, gaussian

    hessian = hessian_module(revision)
    torch.manual_seed(0)
    model = build_network("vgg16_bn", (3, 32, 32), 10).eval()
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    generator = torch.Generator().manual_seed(0)
    peaks: list[int] = []
    for method in ("matvec", "quadratic_forms"):
        original = getattr(hessian.HessianOperator, method)

        def recorded(self: object, vectors: torch.Tensor, original: Any = original) -> Any:
            result = original(self, vectors)
            peaks.append(_peak_rss())
            return result

        setattr(hessian.HessianOperator, method, recorded)
    before = _peak_rss()
    start = time.perf_counter()
    common = {"generator": generator, "batch_size": 32}
    if measurement == "hvp":
        fmodel = FunctionalModel(model)
        operator = hessian.HessianOperator(
            fmodel,
            x,
            y,
            batch_size=32,
            probes_per_pass=1,
            mode=Mode.EVAL,
            num_mc_samples=1,
            generator=generator,
            fixed_draws=True,
        )
        vector = gaussian((1, fmodel.dim), generator, hessian.vectors_like(fmodel))
        operator.matvec(vector)
        products = 1
    elif measurement == "eigenvalues":
        result = hessian.hessian_eigenvalues(
            model, x, y, num_eigenvalues=3, max_iterations=steps, rel_tol=1e-30, **common
        )
        products = result.num_iterations
    elif measurement == "density":
        density = hessian.spectral_density(
            model, x, y, max_runs=1, min_runs=1, num_steps=steps, **common
        )
        products = density.num_steps
    else:
        trace = hessian.hutchinson_trace(
            model, x, y, max_probes=2, min_probes=2, rel_tol=1e-9, **common
        )
        products = trace.num_matvecs
    report = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_before": before,
        "peak": _peak_rss(),
        "peaks_after_products": peaks,
        "products": products,
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(report), flush=True)


def measure(measurement: str, revision: str | None, steps: int) -> dict[str, object] | None:
    command = [sys.executable, __file__, "--child", measurement, "--steps", str(steps)]
    if revision is not None:
        command += ["--revision", revision]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    if completed.returncode != 0:
        print(f"    {measurement}: subprocess failed ({completed.returncode}):")
        print(completed.stderr[-2000:])
        return None
    report: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="Lanczos steps (default 8)")
    parser.add_argument(
        "--before", default=BEFORE, help=f"git revision of the old code (default {BEFORE})"
    )
    parser.add_argument(
        "--only", choices=["before", "after"], help="measure one side only (default both)"
    )
    parser.add_argument(
        "--measure",
        choices=MEASUREMENTS,
        action="append",
        help="run only this measurement (repeatable; default: all four)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--child", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--revision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        print(f"--steps must be a positive integer, got {args.steps}", file=sys.stderr)
        return 2
    if args.child:
        child(args.child, args.revision, args.steps)
        return 0
    sides = {"before": args.before, "after": None}
    if args.only:
        sides = {args.only: sides[args.only]}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"VGG-16-BN, 3x32x32, batch 32, random weights; {args.steps} Lanczos steps"
    )
    figures: dict[str, dict[str, object]] = {}
    for side, revision in sides.items():
        hvp_peak = None
        for measurement in args.measure or MEASUREMENTS:
            report = measure(measurement, revision, args.steps)
            if report is None:
                continue
            figures[f"{side}/{measurement}"] = report
            peak = int(report["peak"])  # type: ignore[call-overload]
            vector = 4 * int(report["parameters"])  # type: ignore[call-overload]
            if measurement == "hvp":
                hvp_peak = peak
            ratio = f"{peak / hvp_peak:.2f}x one product" if hvp_peak else "no product figure"
            per_product = [
                f"{p / GIB:.2f}"
                for p in report["peaks_after_products"]  # type: ignore[attr-defined]
            ]
            extra = (peak - hvp_peak) / vector if hvp_peak else float("nan")
            print(
                f"  {side:6} {measurement:11} peak {peak / GIB:5.2f} GiB = {ratio} "
                f"({extra:+.1f} parameter vectors of {vector / GIB:.2f} GiB); "
                f"{report['products']} products in {report['seconds']:.0f} s; "
                f"peak after each product (GiB): {' '.join(per_product)}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
