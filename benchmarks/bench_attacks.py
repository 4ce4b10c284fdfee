"""Speed and agreement of the attack engine against the reference libraries.

Runs the ``standard`` suite (PGD-CE with its epsilon sweep, PGD-T, FGSM, random noise and
Square, under L∞ and L2) on a zoo checkpoint twice in one process: with the native engine,
and composed from torchattacks (PGD, PGD-T), cleverhans (FGSM/FGM) and pyautoattack (Square)
calls that follow the same plan (each attack on the samples still robust, the nested sweep,
the independent per-epsilon sweep on a subsample). No library implements random-noise search,
so the reference composes it from plain torch draws. Prints wall times, their ratio, pass
counts, every robust accuracy from both, and the native overhead:
wall ÷ (sample-passes × measured time per sample-pass at the batch size used).

    ROBAUDIT_DATA=../shared/data python -m benchmarks.bench_attacks
    python -m benchmarks.bench_attacks --num-samples 100 --num-steps 10 --num-queries 200
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from attacks import Norm, SuiteConfig, geometry, preset, run_suite
from checkpoints import load_checkpoint
from checkpoints.datasets import load_dataset

ZOO = Path(__file__).resolve().parents[1] / "checkpoints" / "zoo"


class Counter(nn.Module):
    """Counts sample-forward passes, and sample-backward passes of graph-recording forwards."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_passes = 0
        self.backward_passes = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forward_passes += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.backward_passes += x.shape[0]
        return self.model(x)


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) == y


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


def _chain_attack(label, model, x, y, norm, eps, params, generator, seed) -> Tensor:
    if label == "pgd-t":
        steps, rel = params["pgd-t"]["num_steps"], params["pgd-t"]["rel_step_size"]
        num_classes = 10
        shift = torch.randint(1, num_classes, y.shape, generator=generator)
        return _torchattacks_pgd(model, x, y, norm, eps, steps, rel, (y + shift) % num_classes)
    if label == "fgsm":
        return _cleverhans_fgsm(model, x, y, norm, eps)
    if label == "noise":
        return _noise(model, x, y, norm, eps, params["noise"]["num_draws"], generator)
    return _square(model, x, y, norm, eps, params["square"]["num_queries"], seed)


def reference_suite(model: nn.Module, x: Tensor, y: Tensor, config: SuiteConfig, seed: int):
    """The suite's plan composed from library calls; returns robust accuracies and passes."""
    counter = Counter(model)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    accuracies: dict[str, float] = {}
    n = x.shape[0]
    clean = _correct(counter, x, y)
    sweep = config.sweep
    assert sweep is not None
    params = {spec.label: spec.params for spec in config.attacks}
    steps, rel = params["pgd-ce"]["num_steps"], params["pgd-ce"]["rel_step_size"]
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
                adversarial = _torchattacks_pgd(
                    counter, x[index], y[index], norm, value, steps, rel
                )
                robust[index] &= _correct(counter, adversarial, y[index])
            accuracies[f"{norm.value} sweep eps={value:.4g}"] = float(robust.double().mean())
            if value == eps:
                at_eps = robust.clone()
        if at_eps is None:
            # The sweep skipped the suite epsilon, so PGD-CE runs there on its own.
            at_eps = clean.clone()
            index = at_eps.nonzero().squeeze(1)
            adversarial = _torchattacks_pgd(counter, x[index], y[index], norm, eps, steps, rel)
            at_eps[index] &= _correct(counter, adversarial, y[index])
        robust = at_eps
        accuracies[f"{norm.value} pgd-ce"] = float(robust.double().mean())
        for label in ("pgd-t", "fgsm", "noise", "square"):
            index = robust.nonzero().squeeze(1)
            if index.numel():
                adversarial = _chain_attack(
                    label, counter, x[index], y[index], norm, eps, params, generator, seed
                ).detach()
                robust[index] &= _correct(counter, adversarial, y[index])
            accuracies[f"{norm.value} {label}"] = float(robust.double().mean())
        subset = torch.randperm(n, generator=generator)[: min(sweep.independent_samples, n)]
        for value in sweep_epsilons:
            adversarial = _torchattacks_pgd(counter, x[subset], y[subset], norm, value, steps, rel)
            accuracies[f"{norm.value} independent eps={value:.4g}"] = float(
                _correct(counter, adversarial, y[subset]).double().mean()
            )
    return accuracies, counter.forward_passes, counter.backward_passes


def native_accuracies(result) -> dict[str, float]:
    accuracies: dict[str, float] = {}
    for outcome in result.norms:
        norm = outcome.norm.value
        for k, value in enumerate(outcome.sweep_epsilons):
            accuracies[f"{norm} sweep eps={value:.4g}"] = outcome.sweep.robust_accuracy_after[k]
        for record in outcome.attacks:
            accuracies[f"{norm} {record.label}"] = record.robust_accuracy_after[0]
        for k, value in enumerate(outcome.sweep_epsilons):
            accuracies[f"{norm} independent eps={value:.4g}"] = (
                outcome.independent_sweep.robust_accuracy_after[k]
            )
    return accuracies


def time_per_sample_pass(model: nn.Module, x: Tensor, repeats: int = 5) -> tuple[float, float]:
    """Median seconds per sample for a forward pass, and for a forward plus input backward."""
    forward, both = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            model(x)
        forward.append((time.perf_counter() - start) / x.shape[0])
        start = time.perf_counter()
        inputs = x.clone().requires_grad_(True)
        torch.autograd.grad(model(inputs).sum(), inputs)
        both.append((time.perf_counter() - start) / x.shape[0])
    return statistics.median(forward), statistics.median(both)


def build_config(args: argparse.Namespace) -> SuiteConfig:
    config = preset("standard", "mnist")
    sweep = config.sweep
    assert sweep is not None
    attacks = []
    for spec in config.attacks:
        params = dict(spec.params)
        if spec.kind in ("pgd", "pgd-t"):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(ZOO / "mnist-lenet5-dropout.pt"))
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--num-queries", type=int, default=5000)
    parser.add_argument("--sweep-points", type=int, default=8)
    parser.add_argument("--independent-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).exists():
        print(f"error: checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 2
    model = load_checkpoint(args.checkpoint).model
    data = load_dataset("mnist")
    x, y = data.x[: args.num_samples], data.y[: args.num_samples]
    config = build_config(args)

    native_times, reference_times = [], []
    native = reference = None
    for _ in range(args.repeats):
        start = time.perf_counter()
        native = run_suite(model, x, y, config, generator=args.seed)
        native_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference = reference_suite(model, x, y, config, args.seed)
        reference_times.append(time.perf_counter() - start)
    assert native is not None and reference is not None
    t_forward, t_both = time_per_sample_pass(model, x[: args.batch_size])
    native_wall, reference_wall = (
        statistics.median(native_times),
        statistics.median(reference_times),
    )
    forward_only = native.num_forward - native.num_backward
    ideal = forward_only * t_forward + native.num_backward * t_both

    print(
        f"samples {x.shape[0]}, clean accuracy {native.clean_accuracy:.4f}, repeats {args.repeats}"
    )
    for name, wall, forward, backward in (
        ("native", native_wall, native.num_forward, native.num_backward),
        ("reference", reference_wall, reference[1], reference[2]),
    ):
        print(f"{name:<10} wall {wall:8.2f} s  forward {forward:>10}  backward {backward:>10}")
    print(f"speed-up (reference / native) {reference_wall / native_wall:.2f}x  (target >= 3)")
    print(
        f"time per sample-pass at batch {args.batch_size}: forward {t_forward * 1e6:.2f} us, "
        f"forward+backward {t_both * 1e6:.2f} us"
    )
    print(f"native overhead {native_wall / ideal:.3f}  (target <= 1.15)")
    print(f"{'robust accuracy':<36}{'native':>9}{'reference':>11}{'diff pp':>9}")
    native_acc = native_accuracies(native)
    for key, value in reference[0].items():
        mine = native_acc.get(key, float("nan"))
        print(f"{key:<36}{mine:>9.4f}{value:>11.4f}{100 * (mine - value):>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
