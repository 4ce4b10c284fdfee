"""Speed and memory of the flatness estimators against their obvious or reference rivals.

Four measurements, the first three against their targets:

1. Fisher-Rao norm by one forward-mode JVP against a per-sample backward loop, batch 128, on
   the MNIST LeNet-5 zoo model (target: at least 20x faster).
2. Hessian trace per probe against PyHessian's ``trace()`` per probe, equal probes, same model
   and data, swept in batches of 128 (target: at least 1.5x faster).
3. Peak resident memory of the trace on VGG-16-BN with CIFAR-10 input shape (3x32x32), random
   weights, batch 32, measured in a fresh subprocess (target: at most 5 GB).

Contenders run interleaved in the same process on the same data and the medians of the
repeats are reported, because the machine may be shared. Run from the repository root:

    python benchmarks/bench_flatness.py            # full run
    python benchmarks/bench_flatness.py --quick    # smoke run: few repeats and probes
    python benchmarks/bench_flatness.py --only trace --repeats 9
    python benchmarks/bench_flatness.py --only estimators --model resnet18 --num-samples 50
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.flatrecords import TraceEstimate
from flatness import Unit, fisher_rao_norm, hutchinson_trace

ROOT = Path(__file__).resolve().parents[1]
ZOO_LENET = ROOT / "checkpoints" / "zoo" / "mnist-lenet5-dropout.pt"
GIB = 1024**3
T = TypeVar("T")


def lenet_and_data(num_samples: int) -> tuple[nn.Module, Tensor, Tensor, str]:
    """The MNIST LeNet-5 zoo model and MNIST test images, or stand-ins when absent."""
    from checkpoints.architectures import Normalized, build_network

    if ZOO_LENET.exists():
        from checkpoints import load_checkpoint

        model, source = load_checkpoint(ZOO_LENET).model, f"zoo checkpoint {ZOO_LENET.name}"
    else:
        torch.manual_seed(0)
        model = Normalized(build_network("lenet5", (1, 28, 28), 10), None, None).eval()
        source = "randomly initialised LeNet-5 (zoo checkpoint absent)"
    try:
        from checkpoints.datasets import load_dataset

        data = load_dataset("mnist")
        x, y, data_source = data.x[:num_samples], data.y[:num_samples], "MNIST test set"
    except ValueError as error:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(num_samples, 1, 28, 28, generator=generator)
        y = torch.randint(0, 10, (num_samples,), generator=generator)
        data_source = f"uniform random images ({error.__class__.__name__}: set ROBAUDIT_DATA)"
    return model, x, y, f"{source}; {data_source}, first {num_samples} images"


def loop_fisher_rao(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Empirical Fisher-Rao norm by one forward and backward pass per sample."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0.0
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        gradients = torch.autograd.grad(loss, params)
        total += sum((g * p).sum() for g, p in zip(gradients, params, strict=True)).item() ** 2
    return total / x.shape[0]


def interleaved_medians(
    contenders: dict[str, Callable[[], object]], repeats: int
) -> dict[str, float]:
    """Median wall time of each contender, alternating them so that load hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_fisher_rao(repeats: int) -> None:
    model, x, y, source = lenet_and_data(128)
    print(f"\n[1] Fisher-Rao norm, batch 128 -- {source}")
    generator = torch.Generator().manual_seed(0)
    ours = fisher_rao_norm(model, x, y, generator=generator, batch_size=128).value
    reference = loop_fisher_rao(model, x, y)
    print(
        f"    values: JVP {ours:.6g}, loop {reference:.6g}, "
        f"rel. diff {abs(ours / reference - 1):.1e}"
    )
    medians = interleaved_medians(
        {
            "jvp": lambda: fisher_rao_norm(model, x, y, generator=generator, batch_size=128),
            "loop": lambda: loop_fisher_rao(model, x, y),
        },
        repeats,
    )
    speedup = medians["loop"] / medians["jvp"]
    print(
        f"    JVP {1e3 * medians['jvp']:.1f} ms, per-sample loop {1e3 * medians['loop']:.1f} ms "
        f"(medians of {repeats}): {speedup:.1f}x  [target >= 20x: {_verdict(speedup >= 20)}]"
    )
    model_fisher = interleaved_medians(
        {"jvp": lambda: fisher_rao_norm(model, x, y, generator=generator, fisher="model")},
        repeats,
    )["jvp"]
    # The loop needs one backward pass per class for the model Fisher, ten times the above.
    print(
        f"    model Fisher (exact over 10 classes) by JVP: {1e3 * model_fisher:.1f} ms; a loop "
        f"would take ~{10 * 1e3 * medians['loop']:.0f} ms"
    )


def bench_trace(num_samples: int, num_probes: int, repeats: int) -> None:
    from pyhessian import hessian

    model, x, y, source = lenet_and_data(num_samples)
    batch_size = 128
    print(
        f"\n[2] Hessian trace per probe, {num_probes} probes, {num_samples} samples in batches "
        f"of {batch_size} -- {source}"
    )
    batches = [
        (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, num_samples, batch_size)
    ]

    def ours() -> TraceEstimate:
        return hutchinson_trace(
            model,
            x,
            y,
            generator=torch.Generator().manual_seed(0),
            batch_size=batch_size,
            max_probes=num_probes,
            min_probes=num_probes,
            rel_tol=1e-9,
        )

    def pyhessian_trace() -> list[float]:
        # tol=-inf switches off PyHessian's stopping rule so both run exactly num_probes probes.
        probes = hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=False).trace(
            maxIter=num_probes, tol=float("-inf")
        )
        return probes

    result, probes = ours(), np.array(pyhessian_trace())
    print(
        f"    trace: ours {result.value:.4g} ± {_error(result.stderr)}, PyHessian "
        f"{probes.mean():.4g} ± {probes.std(ddof=1) / np.sqrt(num_probes):.2g} (standard errors; "
        "independent probes)"
    )
    medians = interleaved_medians({"ours": ours, "pyhessian": pyhessian_trace}, repeats)
    model.eval()  # PyHessian leaves the model in eval mode; it already was
    speedup = medians["pyhessian"] / medians["ours"]
    print(
        f"    per probe: ours {1e3 * medians['ours'] / num_probes:.1f} ms, PyHessian "
        f"{1e3 * medians['pyhessian'] / num_probes:.1f} ms (medians of {repeats}): "
        f"{speedup:.2f}x  [target >= 1.5x: {_verdict(speedup >= 1.5)}]"
    )


def vgg_child(num_probes: int) -> None:
    """Runs in the subprocess: builds the network, measures RSS before and after the trace."""
    from checkpoints.architectures import build_network

    torch.manual_seed(0)
    model = build_network("vgg16_bn", (3, 32, 32), 10).eval()
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    before = _peak_rss()
    start = time.perf_counter()
    result = hutchinson_trace(
        model,
        x,
        y,
        generator=torch.Generator().manual_seed(0),
        batch_size=32,
        max_probes=num_probes,
        min_probes=2,
        rel_tol=1e-9,
    )
    report = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "peak_before_trace": before,
        "peak": _peak_rss(),
        "probes": result.num_probes,
        "seconds_per_probe": (time.perf_counter() - start) / result.num_probes,
    }
    print(json.dumps(report))


def bench_vgg_memory(num_probes: int) -> None:
    print(
        "\n[3] Peak memory of the trace, VGG-16-BN (flat layout), 3x32x32 input, "
        "random weights, batch 32"
    )
    completed = subprocess.run(
        [sys.executable, __file__, "--vgg-child", "--vgg-probes", str(num_probes)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    if completed.returncode != 0:
        print(f"    subprocess failed ({completed.returncode}):\n{completed.stderr[-2000:]}")
        return
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    peak = report["peak"] / GIB
    print(
        f"    {report['parameters'] / 1e6:.1f} M parameters; peak RSS {peak:.2f} GiB "
        f"({report['peak_before_trace'] / GIB:.2f} GiB before the trace: interpreter, torch, "
        f"model); {report['probes']} probes at {report['seconds_per_probe']:.1f} s each  "
        f"[target <= 5 GB: {_verdict(report['peak'] <= 5e9)}]"
    )


def resnet_and_data(num_samples: int) -> tuple[nn.Module, Tensor, Tensor, str]:
    """pyautoattack's example CIFAR-10 ResNet-18 and the first CIFAR-10 test images of the
    reference data (``$ROBAUDIT_DATA/cifar10``)."""
    import pyautoattack

    from checkpoints import load_checkpoint
    from checkpoints.datasets import load_dataset
    from checkpoints.spec import Description

    path = Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"
    model = load_checkpoint(path, Description(arch="resnet18", dataset="cifar10")).model
    data_root = os.environ.get("ROBAUDIT_DATA")
    if not data_root:
        raise SystemExit("error: the ResNet-18 needs CIFAR-10: set ROBAUDIT_DATA")
    data = load_dataset("cifar10", path=Path(data_root) / "cifar10")
    x, y = data.x[:num_samples], data.y[:num_samples]
    return model, x, y, f"pyautoattack's ResNet-18; CIFAR-10 test set, first {num_samples} images"


def _error(value: float | None) -> str:
    """A standard error, ``nan`` where it is undefined (None in the record)."""
    return "nan" if value is None else f"{value:.2g}"


def _summary(result: object) -> str:
    """One estimate in a line: its value with the standard error, and what it spent."""
    get = functools.partial(getattr, result)
    parts = []
    if hasattr(result, "eigenvalues"):
        values = ", ".join(f"{v:.5g}" for v in get("eigenvalues"))
        bars = ", ".join(f"{r:.2g}" for r in get("residual_norms"))
        parts.append(f"top [{values}] (residuals [{bars}]), {get('num_iterations')} iterations")
    elif hasattr(result, "density"):
        parts.append(
            f"trace {get('trace'):.5g} ± {_error(get('trace_stderr'))}, "
            f"{get('num_runs')} runs of {get('num_steps')} steps"
        )
        if getattr(result, "rel_stderr", None) is not None:
            parts.append(f"integrated standard error {get('rel_stderr'):.2g}")
    elif hasattr(result, "losses"):
        losses, stderrs = get("losses"), get("loss_stderrs")
        middle = len(losses) // 2
        centre, error = losses[middle], stderrs[middle]
        if isinstance(centre, tuple):
            centre, error = centre[middle], error[middle]
        parts.append(f"loss at θ {centre:.5g} ± {_error(error)}, {len(get('coordinates'))} points")
    else:
        parts.append(f"{get('value'):.5g} ± {_error(get('stderr'))}")
    for name in ("num_probes", "num_draws", "num_samples_used", "num_matvecs"):
        if hasattr(result, name) and getattr(result, name) is not None:
            parts.append(f"{name.replace('num_', '')} {getattr(result, name)}")
    if getattr(result, "stopped_by", None) is not None:
        parts.append(f"stopped by {get('stopped_by')}")
    elif getattr(result, "converged", None) is not None:
        parts.append(f"converged {get('converged')}")
    samples = get("provenance").num_samples
    own = getattr(result, "sample_size", None)
    parts.append(f"on {samples} samples" if own in (None, samples) else f"on {own} of {samples}")
    return "; ".join(parts)


def bench_estimators(model_name: str, num_samples: int, preset_name: str, batch_size: int) -> None:
    """Each estimator of the audit's flatness configuration, timed one by one (through
    ``measure``'s memo, so the configuration and seeds are exactly the audit's)."""
    from analysis.activations import dropout_family_layers
    from analysis.config import active_flatness_config, flatness_config
    from flatness import measure

    if model_name == "resnet18":
        model, x, y, source = resnet_and_data(num_samples)
    else:
        model, x, y, source = lenet_and_data(num_samples)
    config = flatness_config(preset_name, batch_size)
    print(
        f"\n[4] Every flatness estimator of the {preset_name} preset, batch {config.batch_size}"
        f" -- {source}"
    )
    load = os.getloadavg()
    print(f"    load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start")
    configs = [config]
    if dropout_family_layers(model):
        configs.append(active_flatness_config(config))
    figures: dict[str, dict[str, object]] = {}

    def timed(unit: Unit, compute: Callable[[], T]) -> tuple[T, bool]:
        name = unit.name
        start, cpu = time.perf_counter(), time.process_time()
        result = compute()
        wall, used = time.perf_counter() - start, time.process_time() - cpu
        print(f"    {name:32s} {wall:8.1f} s wall {used:8.1f} s CPU  {_summary(result)}")
        sys.stdout.flush()
        figures[name] = {"wall_s": wall, "cpu_s": used, "result": result}
        return result, False

    for each in configs:
        measure(model, x, y, each, torch.Generator().manual_seed(0), memo=timed)
    wall = sum(float(f["wall_s"]) for f in figures.values())  # type: ignore[arg-type]
    cpu = sum(float(f["cpu_s"]) for f in figures.values())  # type: ignore[arg-type]
    load = os.getloadavg()
    print(
        f"    all estimators: {wall:.1f} s wall, {cpu:.1f} s CPU; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats and probes")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timing repeats (default 15, quick 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--only",
        choices=["fisher-rao", "trace", "vgg-memory", "estimators"],
        action="append",
        help="run only this measurement (repeatable); default: all four",
    )
    parser.add_argument(
        "--model",
        choices=["lenet5", "resnet18"],
        default="lenet5",
        help="the model of the per-estimator figures (default lenet5)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=500,
        help="flatness samples of the per-estimator figures (default 500, the audit's)",
    )
    parser.add_argument(
        "--preset", choices=["quick", "standard"], default="standard", help="flatness budgets"
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="flatness batch (default 256, the limit)"
    )
    parser.add_argument("--vgg-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--vgg-probes", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.vgg_child:
        vgg_child(args.vgg_probes)
        return 0
    repeats = args.repeats or (3 if args.quick else 15)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    selected = args.only or ["fisher-rao", "trace", "vgg-memory", "estimators"]
    if "fisher-rao" in selected:
        bench_fisher_rao(repeats)
    if "trace" in selected:
        bench_trace(
            num_samples=256 if args.quick else 512,
            num_probes=4 if args.quick else 16,
            repeats=max(1, repeats // 3),
        )
    if "vgg-memory" in selected:
        bench_vgg_memory(num_probes=2)
    if "estimators" in selected:
        bench_estimators(args.model, args.num_samples, args.preset, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
