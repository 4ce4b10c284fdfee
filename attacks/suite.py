"""Run a whole suite: every attack × norm × epsilon, the sweep, worst case over attacks.

Per norm, the suite first runs the sweep with nested epsilons on every sample; an attack of
the main list that is the swept attack at an epsilon of the sweep takes its outcomes from
there instead of running again. Then the attacks run in order, each only on the samples still
robust at that epsilon (unless ``skip_broken`` is off), and the robust accuracy after each is
recorded. Last, the independent per-epsilon sweep runs on a random subsample.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from attacks import registry
from attacks._engine import make_generator
from attacks.presets import AttackSpec, SuiteConfig
from attacks.result import AttackResult, GradientStats, plain
from attacks.threat import Norm, check_inputs, geometry

ATTACKS: Mapping[str, Callable[..., AttackResult]] = MappingProxyType(
    {kind: registry.get(kind).function for kind in registry.list_attacks()}
)
"""Every attack a suite can name, by ``AttackSpec.kind`` (a read-only view of the registry)."""


Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``, called after each stage of a suite."""


@dataclass(frozen=True)
class AttackRecord:
    """Per-sample outcomes of one attack at one norm over ``K`` epsilons, on all ``N`` samples.

    Attributes:
        label: the attack's label in the suite (``"pgd-ce"``, ``"square"``, ...).
        kind: the attack function's name in ``ATTACKS``.
        norm: the norm.
        epsilons: the ``K`` epsilons.
        source: ``"run"``, or ``"sweep"`` when the outcomes were taken from the nested sweep.
        sample_index: ``[N]`` positions of the samples in the suite's input.
        attacked: ``[K, N]`` bool, the attack ran on the sample at that epsilon.
        success: ``[K, N]`` bool, this attack broke the sample (clean errors included).
        last_success: ``[K, N]`` bool, the final iterate broke it (see ``AttackResult``).
        margin: ``[K, N]`` true-label margin at the returned example, NaN where not attacked.
        queries: ``[K, N]`` sample evaluations spent.
        loss_trace: ``[K, T + 1, N]`` per-sample objective per iteration, NaN where absent.
        robust_accuracy_after: ``[K]`` worst-case robust accuracy after this attack (main
            list), or this attack's own robust accuracy (sweeps).
        result: the last ``AttackResult`` behind the record (its tensors cover only the
            samples it attacked), or None when no sample was left to attack.
    """

    label: str
    kind: str
    norm: Norm
    epsilons: tuple[float, ...]
    source: str
    sample_index: Tensor
    attacked: Tensor
    success: Tensor
    last_success: Tensor
    margin: Tensor
    queries: Tensor
    loss_trace: Tensor
    robust_accuracy_after: tuple[float, ...]
    result: AttackResult | None

    @property
    def mean_loss_trace(self) -> Tensor:
        """``[K, T + 1]`` mean objective over the samples evaluated at each iteration."""
        return self.loss_trace.nanmean(dim=2)

    def to_dict(self, *, per_sample_traces: bool = False) -> dict[str, Any]:
        result = self.result
        stats: GradientStats | None = None if result is None else result.gradient_stats
        data: dict[str, Any] = {
            "label": self.label,
            "kind": self.kind,
            "norm": self.norm,
            "epsilons": self.epsilons,
            "source": self.source,
            "backend": None if result is None else result.backend,
            "params": None if result is None else result.params,
            "seed": None if result is None else result.seed,
            "objective": None if result is None else result.objective,
            "sample_index": self.sample_index,
            "num_broken": (self.success & self.attacked).sum(dim=1),
            "robust_accuracy_after": self.robust_accuracy_after,
            "attacked": self.attacked,
            "success": self.success,
            "last_success": self.last_success,
            "margin": self.margin,
            "queries": self.queries,
            "mean_loss_trace": self.mean_loss_trace,
            "num_forward": 0 if result is None else result.num_forward,
            "num_backward": 0 if result is None else result.num_backward,
            "wall_time": 0.0 if result is None else result.wall_time,
            "gradient_stats": None if stats is None else stats.to_dict(),
        }
        if result is not None and result.targets is not None:
            data["targets"] = result.targets
            data["target_success"] = result.target_success
        if per_sample_traces:
            data["loss_trace"] = self.loss_trace
        return plain(data)


@dataclass(frozen=True)
class NormOutcome:
    """Everything a suite found under one norm.

    Attributes:
        norm: the norm.
        epsilons: the suite's ``K`` epsilons.
        robust: ``[K, N]`` bool, robust to every attack of the main list (worst case).
        attacks: the main list's records, in the order run.
        sweep_epsilons: the sweep's ascending epsilons (the last may be the unbounded one).
        unbounded_epsilon: the epsilon whose ball covers the whole box.
        sweep: the nested sweep on every sample, or None.
        independent_sweep: independent per-epsilon runs on a subsample, or None.
    """

    norm: Norm
    epsilons: tuple[float, ...]
    robust: Tensor
    attacks: tuple[AttackRecord, ...]
    sweep_epsilons: tuple[float, ...]
    unbounded_epsilon: float
    sweep: AttackRecord | None
    independent_sweep: AttackRecord | None

    @property
    def robust_accuracy(self) -> list[float]:
        """Worst-case robust accuracy over the main list, one value per epsilon."""
        return (self.robust.double().mean(dim=1)).tolist()

    def record(self, label: str) -> AttackRecord:
        """The main-list record called ``label``."""
        for item in self.attacks:
            if item.label == label:
                return item
        known = ", ".join(item.label for item in self.attacks)
        raise KeyError(f"no attack labelled {label!r}; the suite ran {known}")


@dataclass(frozen=True)
class SuiteResult:
    """The outcome of ``run_suite``.

    Attributes:
        config: the suite.
        seed: the initial seed of the suite's generator.
        num_samples: ``N``.
        labels: ``[N]`` true labels.
        clean_correct: ``[N]`` bool.
        norms: per norm, a ``NormOutcome``.
        num_forward: sample-forward passes in total.
        num_backward: sample-backward passes in total.
        wall_time: seconds.
    """

    config: SuiteConfig
    seed: int
    num_samples: int
    labels: Tensor
    clean_correct: Tensor
    norms: tuple[NormOutcome, ...]
    num_forward: int
    num_backward: int
    wall_time: float

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.double().mean())

    def outcome(self, norm: Norm | str) -> NormOutcome:
        parsed = Norm.parse(norm)
        for item in self.norms:
            if item.norm is parsed:
                return item
        raise KeyError(f"the suite ran no attacks under {parsed.value}")

    def to_dict(self, *, per_sample_traces: bool = False) -> dict[str, Any]:
        """Plain JSON-able data (lists, numbers, strings, booleans, None for NaN).

        Args:
            per_sample_traces: include per-sample loss traces of every record; the
                independent sweep always carries them.
        """
        norms = []
        for item in self.norms:
            norms.append(
                {
                    "norm": item.norm,
                    "epsilons": item.epsilons,
                    "robust_accuracy": item.robust_accuracy,
                    "robust": item.robust,
                    "attacks": [
                        r.to_dict(per_sample_traces=per_sample_traces) for r in item.attacks
                    ],
                    "sweep_epsilons": item.sweep_epsilons,
                    "unbounded_epsilon": item.unbounded_epsilon,
                    "sweep": None
                    if item.sweep is None
                    else item.sweep.to_dict(per_sample_traces=per_sample_traces),
                    "independent_sweep": None
                    if item.independent_sweep is None
                    else item.independent_sweep.to_dict(per_sample_traces=True),
                }
            )
        return plain(
            {
                "config": self.config.to_dict(),
                "seed": self.seed,
                "num_samples": self.num_samples,
                "labels": self.labels,
                "clean_accuracy": self.clean_accuracy,
                "clean_correct": self.clean_correct,
                "norms": norms,
                "num_forward": self.num_forward,
                "num_backward": self.num_backward,
                "wall_time": self.wall_time,
            }
        )


def run_attack_spec(
    spec: AttackSpec,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm,
    config: SuiteConfig,
    generator: torch.Generator,
    **overrides: Any,
) -> AttackResult:
    """Call the attack of ``spec`` with the suite's common settings.

    Args:
        spec: the attack (its kind and parameters were checked when it was built).
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: inputs ``[N, ...]``.
        y: labels ``[N]``.
        epsilons: ascending radii.
        norm: the norm.
        config: the suite, for its bounds, batch size, mode and EOT samples (the latter for
            kinds that support EOT, on the native backend).
        generator: the stage's generator.
        overrides: settings the suite imposes on this run (e.g. ``nested=False`` and
            ``early_stop=False`` for the independent sweep), applied where the kind takes
            them: a kind without early stopping has none to turn off.
    """
    attack = registry.get(spec.kind)
    kwargs: dict[str, Any] = {
        "norm": norm,
        "bounds": config.bounds,
        "batch_size": config.batch_size,
        "stochastic": config.stochastic,
        "generator": generator,
        **spec.params,
        **{name: value for name, value in overrides.items() if name in attack.accepts},
    }
    # The reference libraries compute one gradient per step; only the native loop averages.
    if attack.eot and kwargs.get("backend", "native") == "native":
        kwargs.setdefault("eot_samples", config.eot_samples)
    return attack.function(model, x, y, epsilons, **kwargs)


def _spread(values: Tensor, index: Tensor, num_samples: int, fill: Any) -> Tensor:
    """Place ``[K, ..., n]``-shaped values for samples ``index`` into a ``[K, ..., N]`` table."""
    shape = (*values.shape[:-1], num_samples)
    out = torch.full(shape, fill, dtype=values.dtype, device=values.device)
    out[..., index] = values
    return out


def _record(
    spec: AttackSpec,
    norm: Norm,
    result: AttackResult,
    index: Tensor,
    num_samples: int,
    robust_after: Sequence[float],
    source: str = "run",
) -> AttackRecord:
    margin = torch.where(result.attacked, result.margin, float("nan"))
    return AttackRecord(
        label=spec.label,
        kind=spec.kind,
        norm=norm,
        epsilons=result.epsilons,
        source=source,
        sample_index=torch.arange(num_samples) if index.numel() == num_samples else index,
        attacked=_spread(result.attacked, index, num_samples, False),
        success=_spread(result.success, index, num_samples, False),
        last_success=_spread(result.last_success, index, num_samples, False),
        margin=_spread(margin, index, num_samples, float("nan")),
        queries=_spread(result.queries, index, num_samples, 0),
        loss_trace=_spread(result.loss_trace, index, num_samples, float("nan")),
        robust_accuracy_after=tuple(float(v) for v in robust_after),
        result=result,
    )


def _child(generator: torch.Generator) -> torch.Generator:
    """A generator for one stage, seeded from the suite's generator."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))


def run_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: SuiteConfig,
    generator: torch.Generator | int | None = None,
    *,
    progress: Progress | bool = False,
) -> SuiteResult:
    """Run every attack of ``config`` under each of its norms, AutoAttack style.

    Args:
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        config: the suite, e.g. ``preset("standard", "mnist")``.
        generator: a ``torch.Generator`` or an int seed (default 0); every stage draws its
            own seed from it, so equal seeds give equal results.
        progress: a callback ``(done, total, label)``, or True for a tqdm bar on stderr.

    Returns:
        ``SuiteResult``; ``result.to_dict()`` is plain JSON-able data.

    Example:
        >>> result = run_suite(model, x, y, preset("quick", "digits"), generator=0)
        >>> result.outcome("linf").robust_accuracy
    """
    start = time.perf_counter()
    check_inputs(x, y, config.bounds)
    gen = make_generator(generator)
    seed = gen.initial_seed()
    y = y.to(x.device).long()
    num_samples = x.shape[0]
    stages = sum(
        len(values) * len(config.attacks) + (2 if config.sweep is not None else 0)
        for values in config.epsilons.values()
    )
    report = _progress_reporter(progress, stages)
    totals = {"forward": 0, "backward": 0}

    def count(result: AttackResult) -> AttackResult:
        totals["forward"] += result.num_forward
        totals["backward"] += result.num_backward
        return result

    clean_correct: Tensor | None = None
    outcomes = []
    for norm in config.norms:
        norm = Norm.parse(norm)
        epsilons = tuple(config.epsilons[norm])
        unbounded = geometry(norm).unbounded_epsilon(x.shape[1:], config.bounds)
        sweep_record = independent = None
        sweep_epsilons: tuple[float, ...] = ()
        everyone = torch.arange(num_samples, device=x.device)
        if config.sweep is not None:
            sweep_epsilons = config.sweep.epsilons(epsilons[0], unbounded)
            result = count(
                run_attack_spec(
                    config.sweep.attack,
                    model,
                    x,
                    y,
                    sweep_epsilons,
                    norm=norm,
                    config=config,
                    generator=_child(gen),
                )
            )
            sweep_record = _record(
                config.sweep.attack, norm, result, everyone, num_samples, result.robust_accuracy
            )
            report(f"{norm.value} sweep {config.sweep.attack.label}")
        if clean_correct is None:
            clean_correct = _clean_correct(model, x, y, config, totals)
        robust = clean_correct.unsqueeze(0).repeat(len(epsilons), 1)
        records = []
        for spec in config.attacks:
            per_eps = []
            for k, eps in enumerate(epsilons):
                shared = (
                    sweep_record is not None
                    and config.sweep is not None
                    and spec == config.sweep.attack
                    and eps in sweep_epsilons
                )
                if shared and sweep_record is not None:
                    j = sweep_epsilons.index(eps)
                    per_eps.append((sweep_record.result, j, everyone, "sweep"))
                else:
                    peer = spec.peer_of is not None
                    todo = robust[k] if config.skip_broken and not peer else clean_correct
                    index = todo.nonzero().squeeze(1)
                    if index.numel() == 0:
                        per_eps.append((None, 0, index, "run"))
                    else:
                        result = count(
                            run_attack_spec(
                                spec,
                                model,
                                x[index],
                                y[index],
                                [eps],
                                norm=norm,
                                config=config,
                                generator=_child(gen),
                            )
                        )
                        per_eps.append((result, 0, index, "run"))
                report(f"{norm.value} eps={eps:.4g} {spec.label}")
            record = _merge_per_epsilon(spec, norm, epsilons, per_eps, num_samples, robust)
            records.append(record)
        if config.sweep is not None and config.sweep.independent_samples > 0:
            size = min(config.sweep.independent_samples, num_samples)
            subset = torch.randperm(num_samples, generator=gen)[:size].sort().values.to(x.device)
            result = count(
                run_attack_spec(
                    config.sweep.attack,
                    model,
                    x[subset],
                    y[subset],
                    sweep_epsilons,
                    norm=norm,
                    config=config,
                    generator=_child(gen),
                    nested=False,
                    early_stop=False,
                )
            )
            independent = _record(
                config.sweep.attack, norm, result, subset, num_samples, result.robust_accuracy
            )
            report(f"{norm.value} independent sweep")
        outcomes.append(
            NormOutcome(
                norm=norm,
                epsilons=epsilons,
                robust=robust,
                attacks=tuple(records),
                sweep_epsilons=sweep_epsilons,
                unbounded_epsilon=unbounded,
                sweep=sweep_record,
                independent_sweep=independent,
            )
        )
    if clean_correct is None:
        clean_correct = _clean_correct(model, x, y, config, totals)
    return SuiteResult(
        config=config,
        seed=seed,
        num_samples=num_samples,
        labels=y.cpu(),
        clean_correct=clean_correct,
        norms=tuple(outcomes),
        num_forward=totals["forward"],
        num_backward=totals["backward"],
        wall_time=time.perf_counter() - start,
    )


def _clean_correct(
    model: nn.Module, x: Tensor, y: Tensor, config: SuiteConfig, totals: dict[str, int]
) -> Tensor:
    from attacks._model import Evaluator, model_mode

    evaluator = Evaluator(model)
    step = config.batch_size or x.shape[0]
    with model_mode(model, stochastic=config.stochastic):
        predictions = torch.cat(
            [evaluator.logits(x[i : i + step]).argmax(dim=1) for i in range(0, x.shape[0], step)]
        )
    totals["forward"] += evaluator.num_forward
    return predictions == y


def _merge_per_epsilon(
    spec: AttackSpec,
    norm: Norm,
    epsilons: tuple[float, ...],
    per_eps: list[tuple[AttackResult | None, int, Tensor, str]],
    num_samples: int,
    robust: Tensor,
) -> AttackRecord:
    """Fold one attack's per-epsilon runs into one record and update ``robust`` in place."""
    device = robust.device
    length = max((r.loss_trace.shape[1] for r, _, _, _ in per_eps if r is not None), default=1)
    num_eps = len(epsilons)
    attacked = torch.zeros(num_eps, num_samples, dtype=torch.bool, device=device)
    success = torch.zeros_like(attacked)
    last_success = torch.zeros_like(attacked)
    margin = torch.full((num_eps, num_samples), float("nan"), device=device)
    queries = torch.zeros(num_eps, num_samples, dtype=torch.long, device=device)
    trace = torch.full((num_eps, length, num_samples), float("nan"), device=device)
    kept: AttackResult | None = None
    for k, (result, j, index, _) in enumerate(per_eps):
        if result is not None:
            kept = result
            attacked[k, index] = result.attacked[j]
            success[k, index] = result.success[j]
            last_success[k, index] = result.last_success[j]
            margin[k, index] = torch.where(
                result.attacked[j], result.margin[j], float("nan")
            ).float()
            queries[k, index] = result.queries[j]
            trace[k, : result.loss_trace.shape[1], index] = result.loss_trace[j].float()
            robust[k, index] &= ~result.success[j]
        if k > 0:
            # Worst case over nested balls: broken at a smaller epsilon is broken here too.
            robust[k] &= robust[k - 1]
    sources = {source for _, _, _, source in per_eps}
    return AttackRecord(
        label=spec.label,
        kind=spec.kind,
        norm=norm,
        epsilons=epsilons,
        source="sweep" if sources == {"sweep"} else "run",
        sample_index=torch.arange(num_samples),
        attacked=attacked,
        success=success,
        last_success=last_success,
        margin=margin,
        queries=queries,
        loss_trace=trace,
        robust_accuracy_after=tuple(robust.double().mean(dim=1).tolist()),
        result=kept,
    )


def _progress_reporter(progress: Progress | bool, total: int) -> Callable[[str], None]:
    done = {"count": 0}
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, file=sys.stderr, desc="attacks", leave=False)

        def tick(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)
            if bar.n >= total:
                bar.close()

        return tick
    if callable(progress):
        callback = progress

        def call(label: str) -> None:
            done["count"] += 1
            callback(done["count"], total, label)

        return call
    return lambda label: None
