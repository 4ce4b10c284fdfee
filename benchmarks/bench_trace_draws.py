"""How many Hutchinson probes a mini-batch draw of the Hessian trace should carry.

A draw of the doubly stochastic trace (`flatness.hutchinson_trace`) takes ``m`` random samples
and pushes ``P`` Rademacher probes through one pass over them; the draw's mean is the
observation. By the law of total variance its variance is ``V_B + W / P``: ``V_B`` the
variance of the mini-batch's own trace, ``W`` the mean variance of one probe's quadratic form
on a fixed mini-batch. For the same standard error, ``P`` probes per draw cost
``c_P · (V_B + W / P)``, with ``c_P`` the time of one pass with ``P`` probes.

This script makes ``J`` draws with 6 probes each and keeps every quadratic form: the spread
within a draw estimates ``W``, the spread of the draws' means ``V_B + W / 6``. It times one
pass with 1, 2 and 6 probes (CPU time, the median of ``--repeats`` after one untimed pass),
and prints ``c_P · (V_B + W / P)`` for each, relative to ``P = 1``. Run from the repository root:

    python -m benchmarks.bench_trace_draws --model resnet18 --draws 9
    python -m benchmarks.bench_trace_draws --model lenet5 --draws 40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from benchmarks.bench_flatness import lenet_and_data, resnet_and_data
from flatness.core import FunctionalModel, Mode, in_mode
from flatness.hessian import batch_quadratic_forms

PROBES = (1, 2, 6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["lenet5", "resnet18"], default="resnet18")
    parser.add_argument("--num-samples", type=int, default=200, help="samples drawn from")
    parser.add_argument("--minibatch-size", type=int, default=64, help="m (the audit's: 64)")
    parser.add_argument("--draws", type=int, default=9, help="J draws of 6 probes each")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per P (median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the quadratic forms and costs here")
    args = parser.parse_args(argv)
    if not 2 <= args.minibatch_size <= args.num_samples or args.draws < 3:
        print(
            "error: need 2 <= --minibatch-size <= --num-samples and --draws >= 3",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    load = lenet_and_data if args.model == "lenet5" else resnet_and_data
    model, x, y, source = load(args.num_samples)
    fmodel = FunctionalModel(model)
    generator = torch.Generator().manual_seed(1)

    def probes(count: int) -> torch.Tensor:
        signs = torch.randint(0, 2, (count, fmodel.dim), generator=generator)
        return (signs * 2 - 1).to(fmodel.dtype)

    def draw() -> torch.Tensor:
        return torch.randperm(x.shape[0], generator=generator)[: args.minibatch_size]

    print(f"{source}; {fmodel.dim} parameters, m = {args.minibatch_size}")
    print(f"load average {os.getloadavg()[0]:.2f} at the start")
    costs: dict[int, float] = {}
    forms: list[list[float]] = []
    with in_mode(model, Mode.EVAL):
        index = draw()
        batch_quadratic_forms(fmodel, x[index], y[index], probes(1))  # warm-up, not timed
        for count in PROBES:
            times = []
            for _ in range(max(1, args.repeats)):
                start = time.process_time()
                batch_quadratic_forms(fmodel, x[index], y[index], probes(count))
                times.append(time.process_time() - start)
            costs[count] = statistics.median(times)
            print(
                f"one pass with {count} probe(s): {costs[count]:.3g} s CPU (median of "
                f"{len(times)})",
                flush=True,
            )
        for j in range(args.draws):
            index = draw()
            values = batch_quadratic_forms(fmodel, x[index], y[index], probes(6))
            forms.append(values.tolist())
            print(f"draw {j}: " + " ".join(f"{v:.4g}" for v in forms[-1]), flush=True)
    means = [statistics.fmean(row) for row in forms]
    within = statistics.fmean(statistics.variance(row) for row in forms)
    between = statistics.variance(means) - within / 6
    print(
        f"\ntrace {statistics.fmean(means):.5g} ± "
        f"{(statistics.variance(means) / len(means)) ** 0.5:.2g} ({len(means)} draws of 6)"
    )
    print(f"W (one probe on a fixed mini-batch) {within:.4g}; V_B (the mini-batch) {between:.4g}")
    print(f"V_B / W = {between / within:.2f}")
    reference = costs[1] * (between + within)
    for count in PROBES:
        work = costs[count] * (between + within / count)
        print(
            f"P = {count}: variance per draw {between + within / count:.4g}, cost "
            f"{costs[count]:.2f} s, time for a given standard error {work / reference:.2f}x P = 1"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"costs": costs, "forms": forms, "source": source}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
