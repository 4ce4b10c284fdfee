"""Where FAB-T goes in the standard chain: before Square or after it, by what each costs.

Every attack of the chain runs only on the samples the attacks before it left robust, so the
order changes the cost, not the worst case (for a deterministic model). FAB-T and Square are
the two expensive attacks on robust samples: FAB-T runs all its iterations for every target a
sample survives (9 × 100 gradient steps and as many forward passes), Square all its queries
(5000) on a sample it cannot break. For each model and norm, at the dataset's standard
epsilon, on the audit's evaluation samples, this runs the standard chain up to Square (PGD-CE,
PGD-T, PGD on the margin loss, FGSM, noise) once, then on the samples it left robust both
orders of the two, each followed by APGD-T as in the chain, and prints for each order: the
wall and CPU seconds of each attack and of the three together, the sample-passes (forward /
backward), and the robust accuracy after each. The order does not change which samples end
robust (printed as a check: same robust samples or not).

With ``--autoattack`` it also runs pyautoattack's standard AutoAttack on the same samples (as
``bench_autoattack.py`` does, one component at a time) and compares it, sample by sample
(discordant counts, exact one-sided McNemar p-value that AutoAttack breaks more, 95 % paired
interval), with the chain as it was without FAB-T (up to APGD-T) and with FAB-T in each order.

    ROBAUDIT_DATA=../shared/data python -m benchmarks.bench_fab_order --models mnist-lenet5-dropout
    python -m benchmarks.bench_fab_order --models model.ts.pt --dataset mnist --trust-checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from analysis.pipeline import evaluation_set
from attacks import Bounds, Norm, preset, run_suite
from attacks.presets import STANDARD_EPSILONS, AttackSpec
from attacks.suite import run_attack_spec
from checkpoints import load_checkpoint
from commands.description import add_description_arguments, description_from_arguments
from core.stats import mcnemar_exact, paired_drop_interval
from torchutil import make_generator

ZOO = Path(__file__).resolve().parents[1] / "checkpoints" / "zoo"
ORDERS = {
    "square first": ("square", "fab-t", "apgd-t"),
    "fab-t first": ("fab-t", "square", "apgd-t"),
}


def _chain(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    robust: Tensor,
    specs: dict[str, AttackSpec],
    labels: tuple[str, ...],
    norm: Norm,
    suite: Any,
    seed: int,
) -> dict[str, Any]:
    """Run ``labels`` in order, each on what the ones before left robust."""
    rows = []
    robust = robust.clone()
    for label in labels:
        index = robust.nonzero().squeeze(1)
        if not index.numel():  # nothing left to attack: the attack costs nothing
            rows.append(
                {
                    "attack": label,
                    "attacked": 0,
                    "broken": 0,
                    "wall_s": 0.0,
                    "cpu_s": 0.0,
                    "forward": 0,
                    "backward": 0,
                    "robust_after": float(robust.double().mean()),
                }
            )
            continue
        wall, cpu = time.perf_counter(), time.process_time()
        result = run_attack_spec(
            specs[label],
            model,
            x[index],
            y[index],
            suite.epsilons[norm],
            norm=norm,
            config=suite,
            generator=make_generator(seed),
            sample_ids=index,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        robust[index[result.success[0]]] = False
        rows.append(
            {
                "attack": label,
                "attacked": int(index.numel()),
                "broken": int(result.success[0].sum()),
                "wall_s": wall,
                "cpu_s": cpu,
                "forward": result.num_forward,
                "backward": result.num_backward,
                "robust_after": float(robust.double().mean()),
            }
        )
    return {"rows": rows, "robust": robust}


def bench_model(name: str, norms: tuple[Norm, ...], args: argparse.Namespace) -> dict[str, Any]:
    path = Path(name) if name.endswith(".pt") else ZOO / f"{name}.pt"
    loaded = load_checkpoint(path, description_from_arguments(args), trust=args.trust_checkpoint)
    model = loaded.model.eval()
    evaluation = evaluation_set(loaded, None, args.num_samples, args.seed)
    dataset = evaluation.dataset.name
    if dataset not in STANDARD_EPSILONS:
        raise ValueError(f"{name}: no standard epsilons for dataset {dataset!r}")
    x, y = evaluation.x, evaluation.y
    suite = preset("standard", dataset).with_options(
        bounds=Bounds(*loaded.spec.bounds), batch_size=args.batch_size, sweep=None
    )
    specs = {spec.label: spec for spec in suite.attacks}
    before = tuple(s for s in suite.attacks if s.label not in ("square", "fab-t", "apgd-t"))
    figures: dict[str, Any] = {"model": name, "samples": int(x.shape[0]), "norms": {}}
    for norm in norms:
        first = suite.with_options(epsilons={norm: suite.epsilons[norm]}, attacks=before)
        start = time.perf_counter()
        result = run_suite(model, x, y, first, generator=args.seed)
        robust = result.norm(norm).robust[0]
        print(
            f"\n{name} {norm.value} eps {suite.epsilons[norm][0]:g}: {x.shape[0]} samples; the "
            f"chain before Square ({', '.join(s.label for s in before)}) left "
            f"{int(robust.sum())} robust ({time.perf_counter() - start:.1f} s)"
        )
        runs = {}
        for order, labels in ORDERS.items():
            runs[order] = _chain(model, x, y, robust, specs, labels, norm, suite, args.seed)
            total_wall = sum(row["wall_s"] for row in runs[order]["rows"])
            total_cpu = sum(row["cpu_s"] for row in runs[order]["rows"])
            print(f"  {order}: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU in all")
            for row in runs[order]["rows"]:
                print(
                    f"    {row['attack']:7s} on {row['attacked']:4d}, broke {row['broken']:4d}: "
                    f"{row['wall_s']:7.1f} s wall, {row['cpu_s']:7.1f} s CPU, passes "
                    f"{row['forward']} / {row['backward']}; robust after {row['robust_after']:.4f}"
                )
        same = torch.equal(runs["square first"]["robust"], runs["fab-t first"]["robust"])
        print(f"  same robust samples at the end in both orders: {'yes' if same else 'no'}")
        figures["norms"][norm.value] = {
            "robust_before_square": int(robust.sum()),
            "orders": {order: run["rows"] for order, run in runs.items()},
            "same_robust_samples": same,
        }
        if args.autoattack:
            from benchmarks.bench_autoattack import run_autoattack

            epsilon = suite.epsilons[norm][0]
            aa = run_autoattack(model, x, y, norm, epsilon, args.seed, args.batch_size)
            # The chain without FAB-T: Square then APGD-T on what the first attacks left.
            without = _chain(
                model, x, y, robust, specs, ("square", "apgd-t"), norm, suite, args.seed
            )
            chains = {
                "without fab-t": without["robust"],
                **{f"with fab-t, {order}": run["robust"] for order, run in runs.items()},
            }
            print(
                f"  AutoAttack standard {float(aa.robust.double().mean()):.4f} "
                f"({aa.wall_time:.1f} s): after {aa.robust_after}"
            )
            figures["norms"][norm.value]["autoattack"] = {
                "robust": float(aa.robust.double().mean()),
                "after": aa.robust_after,
                "wall_s": aa.wall_time,
            }
            for name_, mask in chains.items():
                only_audit = int((~mask & aa.robust).sum())
                only_aa = int((mask & ~aa.robust).sum())
                low, high = paired_drop_interval(only_aa, only_audit, mask.numel())
                p_value = mcnemar_exact(only_aa, only_audit)
                missed: dict[str, int] = {}
                for i in (mask & ~aa.robust).nonzero().squeeze(1).tolist():
                    missed[aa.broken_by[i]] = missed.get(aa.broken_by[i], 0) + 1
                print(
                    f"    chain {name_}: {float(mask.double().mean()):.4f}; only the chain broke "
                    f"{only_audit}, only AutoAttack {only_aa} (by {missed or '-'}); McNemar p "
                    f"{p_value:.3g}; chain - AutoAttack [{100 * low:+.2f}, {100 * high:+.2f}] pp"
                )
                figures["norms"][norm.value][name_] = {
                    "robust": float(mask.double().mean()),
                    "only_chain_broke": only_audit,
                    "only_autoattack_broke": only_aa,
                    "autoattack_components": missed,
                    "p_value": p_value,
                    "interval": [low, high],
                }
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", default="mnist-lenet5-dropout")
    parser.add_argument("--norms", default="linf,l2")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--autoattack", action="store_true", help="also compare with AutoAttack's standard version"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    add_description_arguments(parser)
    args = parser.parse_args(argv)
    try:
        norms = tuple(Norm.parse(n.strip()) for n in args.norms.split(",") if n.strip())
    except ValueError as error:
        print(f"error: --norms: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    figures = [bench_model(m.strip(), norms, args) for m in args.models.split(",") if m.strip()]
    load_after = os.getloadavg()
    print(
        f"\nthreads {args.threads}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (1 min), {os.cpu_count()} cores"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"models": figures, "load_average": [load_before, load_after]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
