"""Run a whole suite: every attack × norm × epsilon, the sweep, worst case over attacks.

Per norm, the suite first runs the sweep with nested epsilons on every sample; an attack of
the main list that is the swept attack at an epsilon of the sweep takes its outcomes from
there instead of running again. Then the attacks run in order, each only on the samples still
robust at that epsilon (unless ``skip_broken`` is off), and the robust accuracy after each is
recorded. Last, the independent per-epsilon sweep runs on a random subsample: every epsilon
afresh (not nested), with the swept attack's own early stopping, so a sample stops once it is
broken at that radius (its outcome is decided; the steps after it could only change its last
iterate and its loss trace).

No exception inside one attack stops a suite: an attack that raises is recorded as
``"failed"`` at that norm and epsilon with the error's text, and its samples count as not
attacked; a gradient attack on a model whose output has no input gradient (a cut graph) is
recorded as ``"not-applicable"`` with the reason ``"the input gradient does not exist"``,
while black-box attacks still run.

Logits holding NaN or Inf have no prediction (see ``attacks._engine``): a sample whose clean
logits are not finite is not clean-correct (``clean_nonfinite``), so it is not robust and no
attack runs on it; an attack's example whose logits are not finite never counts as broken, so
the sample stays robust unless another attack breaks it with finite logits; each record marks
such samples in ``nonfinite``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from attacks import registry
from attacks._engine import as_generator
from attacks._model import NO_INPUT_GRADIENT, Evaluator, NoInputGradient
from attacks.losses import NO_PREDICTION, predict
from attacks.losses import margin as logit_margin
from attacks.presets import AttackSpec, SuiteConfig
from attacks.result import TABLES, AttackResult, GradientStats, plain
from attacks.tables import arguments, at, cat, empty, masked, scatter, tables_of, take
from attacks.threat import Norm, check_inputs, geometry
from attacks.worstcase import robust_after
from torchutil import (
    any_batch,
    child_generator,
    distributed,
    draw_seeds,
    forked_global_rng,
    make_generator,
    model_mode,
    to_device,
)

ATTACKS: Mapping[str, Callable[..., AttackResult]] = MappingProxyType(
    {kind: registry.get(kind).function for kind in registry.list_attacks()}
)
"""Every attack a suite can name, by ``AttackSpec.kind`` (a read-only view of the registry)."""


Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``, called after each stage of a suite."""


Memo = Callable[[str, Callable[[], Any]], tuple[Any, bool]]
"""``memo(unit, compute) -> (value, loaded)``: a stored value of the unit, else ``compute()``
(stored for a later run); see ``analysis.resume``."""


OK = "ok"
FAILED = "failed"
NOT_APPLICABLE = "not-applicable"
STATUSES = (OK, FAILED, NOT_APPLICABLE)
"""What became of one attack at one epsilon: it ran, it raised, or it cannot run (a gradient
attack on a model without an input gradient)."""


@dataclass(frozen=True)
class StageFailure:
    """A stage of a suite that did not complete.

    Attributes:
        stage: ``"attack"`` (the main list), ``"sweep"`` or ``"independent-sweep"``.
        label: the attack's label.
        epsilon: the epsilon of a main-list attack, None for a sweep (all its epsilons).
        status: ``"failed"`` or ``"not-applicable"``.
        message: the error's type and text, or the reason it does not apply.
    """

    stage: str
    label: str
    epsilon: float | None
    status: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return plain(dict(self.__dict__))


@dataclass(frozen=True)
class AttackRecord:
    """Per-sample outcomes of one attack at one norm over ``K`` epsilons, on all ``N`` samples.

    Every table holds, at the ``k``-th epsilon, what the run at that epsilon produced, with
    columns in the order of the suite's samples. The tables are those of ``AttackResult`` of
    the same names, with their declared fills (see ``attacks.tables``): a table added here
    under the name of a declared one is filled wherever records are made.

    Attributes:
        label: the attack's label in the suite (``"pgd-ce"``, ``"square"``, ...).
        kind: the attack function's name in ``ATTACKS``.
        norm: the norm.
        epsilons: the ``K`` epsilons.
        source: ``"run"``, or ``"sweep"`` when the outcomes were taken from the nested sweep.
        sample_index: ``[n]`` positions of the samples the record covers (all ``N`` for the
            main list and the nested sweep, the subsample for the independent sweep).
        attacked: ``[K, N]`` bool, the attack ran on the sample at that epsilon.
        success: ``[K, N]`` bool, this attack broke the sample (clean errors included).
        last_success: ``[K, N]`` bool, the final iterate broke it (see ``AttackResult``).
        margin: ``[K, N]`` true-label margin at the returned example, NaN where not attacked.
        queries: ``[K, N]`` sample evaluations spent.
        loss_trace: ``[K, T + 1, N]`` per-sample objective per iteration, NaN where absent.
        robust_accuracy_after: ``[K]`` worst-case robust accuracy after this attack (main
            list), or this attack's own robust accuracy (sweeps).
        result: the record as one ``AttackResult`` over the same ``K`` epsilons and ``N``
            samples (the independent sweep: over its subsample), assembled from the runs
            behind it; None when no run completed.
        adversarial: ``[K, N, ...]`` the example the run at each epsilon returned, projected,
            clipped and judged; the clean input where the sample was not attacked.
        success_step: ``[K, N]`` int64 iteration of the first success (see
            ``AttackResult.success_step``); -1 where this attack did not break the sample.
        statuses: ``[K]`` ``"ok"``, ``"failed"`` or ``"not-applicable"`` per epsilon.
        messages: ``[K]`` the error or reason where not ``"ok"``, else None.
        nonfinite: ``[K, N]`` bool, the sample was attacked and the logits at the example
            its run returned held NaN or Inf (never counted in ``success``).
        nonfinite_evaluations: sample evaluations with NaN or Inf logits over the runs behind
            the record.
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
    adversarial: Tensor
    success_step: Tensor
    statuses: tuple[str, ...]
    messages: tuple[str | None, ...]
    nonfinite: Tensor
    nonfinite_evaluations: int

    @property
    def status(self) -> str:
        """``"failed"`` if the attack failed at any epsilon, else ``"not-applicable"`` if it
        could not run at one, else ``"ok"``."""
        for status in (FAILED, NOT_APPLICABLE):
            if status in self.statuses:
                return status
        return OK

    @property
    def message(self) -> str | None:
        """The first error or reason, or None when every epsilon ran."""
        return next((m for m in self.messages if m is not None), None)

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
            "status": self.status,
            "message": self.message,
            "statuses": self.statuses,
            "messages": self.messages,
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
            "success_step": self.success_step,
            "margin": self.margin,
            "queries": self.queries,
            "mean_loss_trace": self.mean_loss_trace,
            "num_forward": 0 if result is None else result.num_forward,
            "num_backward": 0 if result is None else result.num_backward,
            "wall_time": 0.0 if result is None else result.wall_time,
            "gradient_stats": None if stats is None else stats.to_dict(),
            "nonfinite": self.nonfinite,
            "num_nonfinite": self.nonfinite.sum(dim=1),
            "nonfinite_evaluations": self.nonfinite_evaluations,
        }
        if result is not None and result.targets is not None:
            data["targets"] = result.targets
            data["target_success"] = result.target_success
        if per_sample_traces:
            data["loss_trace"] = self.loss_trace
        return plain(data)


_RECORD_TABLES = tuple(f for f in TABLES if f.name in {a.name for a in fields(AttackRecord)})
"""The per-sample tables of ``AttackResult`` that a record holds over all the suite's samples."""


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
        sweep: the nested sweep on every sample, or None (none configured, or it failed).
        independent_sweep: independent per-epsilon runs on a subsample, or None.
        failures: every stage that failed or could not run, in the order met.
    """

    norm: Norm
    epsilons: tuple[float, ...]
    robust: Tensor
    attacks: tuple[AttackRecord, ...]
    sweep_epsilons: tuple[float, ...]
    unbounded_epsilon: float
    sweep: AttackRecord | None
    independent_sweep: AttackRecord | None
    failures: tuple[StageFailure, ...] = ()

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
        clean_correct: ``[N]`` bool, finite logits whose argmax is the label.
        clean_nonfinite: ``[N]`` bool, the clean logits held NaN or Inf (not clean-correct).
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
    clean_nonfinite: Tensor
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
                    "failures": [failure.to_dict() for failure in item.failures],
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
                "clean_nonfinite": self.clean_nonfinite,
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
        overrides: settings the suite imposes on this run (e.g. ``nested=False`` for the
            independent sweep), applied where the kind takes them.
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
    # The reference libraries behind a ``backend`` compute one gradient per step; the native
    # loops and APGD (pyautoattack's own EOT) average over the suite's passes.
    if attack.eot and kwargs.get("backend", "native") == "native":
        kwargs.setdefault("eot_samples", config.eot_samples)
    return attack.function(model, x, y, epsilons, **kwargs)


def _record(
    spec: AttackSpec,
    norm: Norm,
    result: AttackResult,
    index: Tensor,
    x: Tensor,
    robust_after_values: Sequence[float],
    source: str = "run",
) -> AttackRecord:
    """The record of ``result``, a run on samples ``index`` of ``x``: its tables over all the
    suite's samples, the fill where the run did not attack a sample or did not cover it."""
    num_samples = x.shape[0]
    tables = empty(_RECORD_TABLES, len(result.epsilons), x, length=result.loss_trace.shape[1])
    own = masked(tables_of(result, _RECORD_TABLES), _RECORD_TABLES, "record", result.attacked)
    scatter(tables, own, index, _RECORD_TABLES)
    return AttackRecord(
        label=spec.label,
        kind=spec.kind,
        norm=norm,
        epsilons=result.epsilons,
        source=source,
        sample_index=(
            torch.arange(num_samples, device=x.device) if index.numel() == num_samples else index
        ),
        robust_accuracy_after=tuple(float(v) for v in robust_after_values),
        result=result,
        statuses=(OK,) * len(result.epsilons),
        messages=(None,) * len(result.epsilons),
        nonfinite_evaluations=result.nonfinite_evaluations,
        **tables,
    )


def _child(generator: torch.Generator) -> torch.Generator:
    """A generator for one stage, seeded from the suite's generator, on its device."""
    return child_generator(generator)


_Outcome = tuple[AttackResult | None, str, str]
"""What one call of a stage gave: its result (None when it raised), status and message."""


class _Attempt:
    """Runs the stages of a suite, turning an exception inside one into a recorded failure.

    ``run`` calls ``run_attack_spec`` on the stage's samples and returns the attack's result,
    or None after recording why there is none in ``last``: ``"not-applicable"`` for a missing
    input gradient (``NoInputGradient``, raised by the evaluator and around the reference
    libraries), ``"failed"`` with the error's type and text for anything else.

    A stage's samples are split into calls that do not depend on the number of processes
    (see ``_pieces``); under torch.distributed each process runs its share and the outcomes
    are gathered, so every process holds the stage's whole result.
    """

    def __init__(self, memo: Memo | None = None, order: Tensor | None = None) -> None:
        self.last: tuple[str, str] = (OK, "")
        self.resumed = False
        self._memo = memo
        self._order = order

    def run(
        self,
        unit: str,
        spec: AttackSpec,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor,
        epsilons: Sequence[float],
        *,
        generator: torch.Generator,
        **kwargs: Any,
    ) -> AttackResult | None:
        """The result of ``spec`` on samples ``index`` of ``x``, or None when it raised; with
        a memo, the stored outcome of ``unit`` when there is one (``resumed`` says so)."""

        def compute() -> _Outcome:
            return _run_pieces(spec, model, x, y, index, epsilons, generator, kwargs, self._order)

        if self._memo is None:
            (result, *last), self.resumed = compute(), False
        else:
            (result, *last), self.resumed = self._memo(unit, compute)
        self.last = (last[0], last[1])
        return result


def _call(
    spec: AttackSpec,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    **kwargs: Any,
) -> _Outcome:
    try:
        result = run_attack_spec(spec, model, x, y, epsilons, **kwargs)
    except NoInputGradient:
        return None, NOT_APPLICABLE, NO_INPUT_GRADIENT
    except Exception as err:  # noqa: BLE001 - any failure of one attack is a finding
        return None, FAILED, f"{type(err).__name__}: {err}".strip()
    return result, OK, ""


def expected_cost_order(model: nn.Module, x: Tensor, y: Tensor, config: SuiteConfig) -> Tensor:
    """``[N]`` sample positions from the one expected cheapest to attack to the dearest.

    An attack stops a sample once it is broken, so a sample's cost grows with its distance
    from the decision boundary, of which the clean margin (true logit less the largest other)
    is the proxy: on the MNIST LeNet-5 zoo model the PGD-CE sweep's queries per sample rise
    from 9 on the tenth with the smallest margins to 155 on the tenth with the largest. Used
    only to share a stage's samples out between processes (``_pieces``); a sample's outcome
    never depends on it. The clean pass is shared out by batch between processes, draws
    nothing from the global RNG and does not count as the model's evaluations.
    """
    step = config.batch_size or max(x.shape[0], 1)

    def margins(number: int) -> Tensor:
        batch = slice(number * step, (number + 1) * step)
        logits = model(x[batch]).float()
        return logit_margin(logits, y[batch]).nan_to_num(nan=float("-inf")).cpu()

    with forked_global_rng(x.device), model_mode(model, train=config.stochastic), torch.no_grad():
        parts = distributed.shared_map(-(-x.shape[0] // step), margins)
    return torch.cat(parts).argsort(stable=True).to(x.device)


def _dealt(index: Tensor, order: Tensor, world: int) -> list[Tensor]:
    """``index`` in ``world`` parts of alike expected cost: its samples ranked by ``order``
    (see ``expected_cost_order``) and dealt out back and forth (0, 1, 1, 0, 0, 1, ... for two),
    so that every part takes one of each ``world`` consecutive ranks; each part in ``index``'s
    order."""
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(order.numel(), device=order.device)
    ranked = index[rank_of[index].argsort(stable=True)]
    turn = torch.arange(ranked.numel(), device=index.device)
    lap, seat = turn // world, turn % world
    owner = torch.where(lap % 2 == 0, seat, world - 1 - seat)
    return [ranked[owner == part].sort().values for part in range(world)]


def _pieces(
    spec: AttackSpec,
    index: Tensor,
    batch_size: int | None,
    generator: torch.Generator,
    order: Tensor | None = None,
) -> list[tuple[Tensor, torch.Generator]]:
    """The calls a stage on samples ``index`` is made of, each with its generator.

    An attack whose per-sample results do not depend on the batch (``registry.
    batch_independent``: each sample draws from its own stream) is one call, split between
    processes into parts of alike expected cost when ``order`` ranks the samples by it (see
    ``_dealt``; else evenly, in order), each part with the stage's generator. Any other draws
    per batch from torch's global RNG inside a library; it is called per batch of
    ``batch_size`` samples of ``index``, each batch with its own generator seeded from the
    stage's (one batch: the stage's generator itself), and the batches are shared out between
    processes. Either way each sample's outcome is the same whatever the number of processes,
    so the stage's result is too.
    """
    world = distributed.world_size()
    if registry.batch_independent(spec.kind, spec.params):
        if world == 1:
            return [(index, generator)]
        parts = list(index.tensor_split(world)) if order is None else _dealt(index, order, world)
        return [(part, generator) for part in parts]
    step = batch_size or max(index.numel(), 1)
    batches = list(index.split(step))
    if len(batches) <= 1:
        return [(index, generator)]
    seeds = draw_seeds(generator, len(batches))
    return [
        (batch, make_generator(seed, generator.device))
        for batch, seed in zip(batches, seeds, strict=True)
    ]


def _run_pieces(
    spec: AttackSpec,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    index: Tensor,
    epsilons: Sequence[float],
    generator: torch.Generator,
    kwargs: dict[str, Any],
    order: Tensor | None = None,
) -> _Outcome:
    config: SuiteConfig = kwargs["config"]
    pieces = _pieces(spec, index, config.batch_size, generator, order)
    rank, world = distributed.rank(), distributed.world_size()
    mine: dict[int, _Outcome] = {}
    for number, (part, piece_generator) in enumerate(pieces):
        if number % world != rank or part.numel() == 0:
            continue
        mine[number] = _call(
            spec,
            model,
            x[part],
            y[part],
            epsilons,
            generator=piece_generator,
            sample_ids=part,
            **kwargs,
        )
    if world > 1:
        outcomes: dict[int, _Outcome] = {}
        for gathered in distributed.all_gather_objects(to_device(mine, "cpu")):
            outcomes.update(gathered)
        mine = to_device(outcomes, x.device)
    numbers = sorted(mine)
    ordered = [mine[n] for n in numbers]
    failed = next((outcome for outcome in ordered if outcome[0] is None), None)
    if failed is not None:
        return failed
    results = [result for result, _, _ in ordered if result is not None]
    if len(results) == 1:
        return results[0], OK, ""
    # The parts' samples side by side, and where each of ``index``'s samples is among them.
    placed = torch.cat([pieces[n][0] for n in numbers])
    column = torch.full((x.shape[0],), -1, dtype=torch.long, device=placed.device)
    column[placed] = torch.arange(placed.numel(), device=placed.device)
    return _concatenate(results, generator.initial_seed(), column[index]), OK, ""


def _concatenate(results: list[AttackResult], seed: int, take_index: Tensor) -> AttackResult:
    """One result over the samples of ``results`` side by side (calls of one stage), its
    columns ``take_index`` of them (the stage's samples in its order)."""
    first = results[0]
    tables = take(cat([tables_of(r, TABLES) for r in results], TABLES), take_index, TABLES)
    norms = tables["first_grad_norm"]
    stats = None
    if first.gradient_stats is not None and norms is not None:
        parts = [r.gradient_stats for r in results if r.gradient_stats is not None]
        stats = GradientStats.from_norms(
            norms,
            vanishing_threshold=first.gradient_stats.vanishing_threshold,
            nonfinite_logits=sum(p.nonfinite_logits for p in parts),
            nonfinite_gradients=sum(p.nonfinite_gradients for p in parts),
        )
    return replace(
        first,
        **arguments(tables, TABLES),
        num_forward=sum(r.num_forward for r in results),
        num_backward=sum(r.num_backward for r in results),
        wall_time=sum(r.wall_time for r in results),
        seed=seed,
        nonfinite_evaluations=sum(r.nonfinite_evaluations for r in results),
        gradient_stats=stats,
    )


@dataclass
class _Piece:
    """What one attack gave at one epsilon of the main list.

    Attributes:
        result: the run (or the sweep's), None when nothing ran or it did not complete.
        row: the row of ``result`` that holds this epsilon.
        index: ``[n]`` the suite's positions of the result's columns.
        source: ``"run"`` or ``"sweep"``.
        status: ``"ok"``, ``"failed"`` or ``"not-applicable"``.
        message: the error or reason, None when ``"ok"``.
    """

    result: AttackResult | None
    row: int
    index: Tensor
    source: str
    status: str = OK
    message: str | None = None


def run_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: SuiteConfig,
    generator: torch.Generator | int | None = None,
    *,
    progress: Progress | bool = False,
    memo: Memo | None = None,
) -> SuiteResult:
    """Run every attack of ``config`` under each of its norms, AutoAttack style.

    An attack that raises is recorded as failed where it raised (see the module's
    docstring); the suite goes on.

    Args:
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        config: the suite, e.g. ``preset("standard", "mnist")``.
        generator: a ``torch.Generator`` or an int seed (default 0); every stage draws its
            own seed from it, so equal seeds give equal results.
        progress: a callback ``(done, total, label)``, or True for a tqdm bar on stderr.
        memo: keeps each finished stage (one attack at one norm and epsilon, a norm's sweep
            and independent sweep) and returns it instead of running it again, so that an
            interrupted suite resumes (``analysis.resume``). Each stage's generator is drawn
            either way, so the result is that of an uninterrupted run.

    Returns:
        ``SuiteResult``; ``result.to_dict()`` is plain JSON-able data.

    Example:
        >>> result = run_suite(model, x, y, preset("quick", "digits"), generator=0)
        >>> result.outcome("linf").robust_accuracy
    """
    start = time.perf_counter()
    check_inputs(x, y, config.bounds)
    gen = as_generator(generator)
    seed = gen.initial_seed()
    y = y.to(x.device).long()
    num_samples = x.shape[0]
    stages = sum(
        len(values) * len(config.attacks) + (2 if config.sweep is not None else 0)
        for values in config.epsilons.values()
    )
    report = _Reporter(progress, stages)
    # The bar is closed however the suite ends, so that an error or Ctrl-C message is
    # printed on a line of its own, not after a half-drawn bar.
    try:
        totals = {"forward": 0, "backward": 0}
        # Under torch.distributed, each stage's samples are shared out by expected cost.
        order = expected_cost_order(model, x, y, config) if distributed.world_size() > 1 else None
        attempt = _Attempt(memo, order)

        def count(result: AttackResult | None) -> AttackResult | None:
            if result is not None:
                totals["forward"] += result.num_forward
                totals["backward"] += result.num_backward
            return result

        clean_correct: Tensor | None = None
        clean_nonfinite: Tensor | None = None
        outcomes = []
        for norm in config.norms:
            norm = Norm.parse(norm)
            epsilons = tuple(config.epsilons[norm])
            unbounded = geometry(norm).unbounded_epsilon(x.shape[1:], config.bounds)
            sweep_record = independent = None
            sweep_epsilons: tuple[float, ...] = ()
            failures: list[StageFailure] = []
            everyone = torch.arange(num_samples, device=x.device)
            if config.sweep is not None:
                sweep_spec = config.sweep.attack
                sweep_epsilons = config.sweep.epsilons(epsilons[0], unbounded)
                result = count(
                    attempt.run(
                        f"{norm.value}-sweep-{sweep_spec.label}",
                        sweep_spec,
                        model,
                        x,
                        y,
                        everyone,
                        sweep_epsilons,
                        norm=norm,
                        config=config,
                        generator=_child(gen),
                    )
                )
                if result is None:
                    failures.append(StageFailure("sweep", sweep_spec.label, None, *attempt.last))
                else:
                    sweep_record = _record(
                        sweep_spec, norm, result, everyone, x, result.robust_accuracy
                    )
                report(f"{norm.value} sweep {sweep_spec.label}", attempt.resumed)
            if clean_correct is None:
                clean_correct, clean_nonfinite = _clean_correct(model, x, y, config, totals)
            robust = clean_correct.unsqueeze(0).repeat(len(epsilons), 1)
            records = []
            for spec in config.attacks:
                pieces = []
                for eps in epsilons:
                    shared = (
                        sweep_record is not None
                        and config.sweep is not None
                        and spec == config.sweep.attack
                        and eps in sweep_epsilons
                    )
                    resumed = False
                    if shared and sweep_record is not None:
                        row = sweep_epsilons.index(eps)
                        pieces.append(_Piece(sweep_record.result, row, everyone, "sweep"))
                    else:
                        peer = spec.peer_of is not None
                        k = epsilons.index(eps)
                        todo = robust[k] if config.skip_broken and not peer else clean_correct
                        index = todo.nonzero().squeeze(1)
                        if index.numel() == 0:
                            pieces.append(_Piece(None, 0, index, "run"))
                        else:
                            result = count(
                                attempt.run(
                                    f"{norm.value}-{spec.label}-eps={eps!r}",
                                    spec,
                                    model,
                                    x,
                                    y,
                                    index,
                                    [eps],
                                    norm=norm,
                                    config=config,
                                    generator=_child(gen),
                                )
                            )
                            resumed = attempt.resumed
                            if result is None:
                                status, message = attempt.last
                                failures.append(
                                    StageFailure("attack", spec.label, eps, *attempt.last)
                                )
                                pieces.append(_Piece(None, 0, index, "run", status, message))
                            else:
                                pieces.append(_Piece(result, 0, index, "run"))
                    report(f"{norm.value} eps={eps:.4g} {spec.label}", resumed)
                record, robust = _merge_per_epsilon(spec, norm, epsilons, pieces, x, robust)
                records.append(record)
            if sweep_record is not None and config.sweep is not None:
                if config.sweep.independent_samples > 0:
                    size = min(config.sweep.independent_samples, num_samples)
                    subset = torch.randperm(num_samples, generator=gen, device=gen.device)
                    subset = subset[:size].sort().values
                    subset = subset.to(x.device)
                    sweep_spec = config.sweep.attack
                    result = count(
                        attempt.run(
                            f"{norm.value}-independent-sweep-{sweep_spec.label}",
                            sweep_spec,
                            model,
                            x,
                            y,
                            subset,
                            sweep_epsilons,
                            norm=norm,
                            config=config,
                            generator=_child(gen),
                            nested=False,
                        )
                    )
                    if result is None:
                        failures.append(
                            StageFailure("independent-sweep", sweep_spec.label, None, *attempt.last)
                        )
                    else:
                        independent = _record(
                            sweep_spec, norm, result, subset, x, result.robust_accuracy
                        )
                report(f"{norm.value} independent sweep", attempt.resumed)
            elif config.sweep is not None:
                report(f"{norm.value} independent sweep (skipped: the sweep did not complete)")
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
                    failures=tuple(failures),
                )
            )
        if clean_correct is None or clean_nonfinite is None:
            clean_correct, clean_nonfinite = _clean_correct(model, x, y, config, totals)
        return SuiteResult(
            config=config,
            seed=seed,
            num_samples=num_samples,
            labels=y.cpu(),
            clean_correct=clean_correct,
            clean_nonfinite=clean_nonfinite,
            norms=tuple(outcomes),
            num_forward=totals["forward"],
            num_backward=totals["backward"],
            wall_time=time.perf_counter() - start,
        )
    finally:
        report.close()


def _clean_correct(
    model: nn.Module, x: Tensor, y: Tensor, config: SuiteConfig, totals: dict[str, int]
) -> tuple[Tensor, Tensor]:
    """``[N]`` clean-correct and ``[N]`` clean logits not finite (``NO_PREDICTION``); under
    torch.distributed each batch is evaluated by one process."""
    evaluator = Evaluator(model)
    step = config.batch_size or max(x.shape[0], 1)

    def batch(number: int) -> Tensor:
        chunk = x[number * step : (number + 1) * step]
        return predict(any_batch(evaluator.logits, chunk)).cpu()

    with model_mode(model, train=config.stochastic):
        predictions = torch.cat(distributed.shared_map(-(-x.shape[0] // step), batch))
    # Every evaluation counts, whichever process made it.
    totals["forward"] += x.shape[0]
    predictions = predictions.to(x.device)
    return predictions == y, predictions == NO_PREDICTION


def _merge_per_epsilon(
    spec: AttackSpec,
    norm: Norm,
    epsilons: tuple[float, ...],
    pieces: list[_Piece],
    x: Tensor,
    robust: Tensor,
) -> tuple[AttackRecord, Tensor]:
    """Fold one attack's per-epsilon runs into one record over all samples, and the robust
    masks after it.

    Row ``k`` of every table is taken from the run at the ``k``-th epsilon (the sweep's row at
    that epsilon when shared), at the suite's positions of that run's samples; a run that
    failed leaves its samples not attacked.

    Returns:
        The record and the ``[K, N]`` robust masks after this attack (``robust_after``).
    """
    num_samples, num_eps = x.shape[0], len(epsilons)
    results = [p.result for p in pieces if p.result is not None]
    length = max((r.loss_trace.shape[1] for r in results), default=1)
    tables = empty(TABLES, num_eps, x, length=length)
    for k, piece in enumerate(pieces):
        if piece.result is None:
            continue
        row = at(tables_of(piece.result, TABLES), piece.row, TABLES)
        row = masked(row, TABLES, "merged", piece.result.attacked[piece.row])
        scatter(tables, row, piece.index, TABLES, row=k)
    (after,) = robust_after(robust, [tables["success"]])
    merged = None
    # A run shared by several epsilons (the sweep's) counts once.
    distinct = list({id(r): r for r in results}.values())
    if results:
        first = results[0]
        stats = None
        if first.gradient_stats is not None:
            stats = GradientStats.from_norms(
                tables["first_grad_norm"],
                vanishing_threshold=first.gradient_stats.vanishing_threshold,
                nonfinite_logits=sum(
                    r.gradient_stats.nonfinite_logits for r in distinct if r.gradient_stats
                ),
                nonfinite_gradients=sum(
                    r.gradient_stats.nonfinite_gradients for r in distinct if r.gradient_stats
                ),
            )
        own = arguments(tables, TABLES)
        # An optional table (targets) is there when the attack gives it.
        present = tables_of(first, TABLES)
        own.update({f.name: None for f in TABLES if f.optional and present[f.name] is None})
        merged = AttackResult(
            attack=first.attack,
            norm=norm,
            epsilons=epsilons,
            objective=first.objective,
            num_forward=sum(r.num_forward for r in distinct),
            num_backward=sum(r.num_backward for r in distinct),
            wall_time=sum(r.wall_time for r in distinct),
            seed=first.seed,
            nonfinite_evaluations=sum(r.nonfinite_evaluations for r in distinct),
            backend=first.backend,
            params=first.params,
            gradient_stats=stats,
            **own,
        )
    sources = {piece.source for piece in pieces}
    # Where a sample was not attacked, the record shows the fill (e.g. no margin).
    shown: dict[str, Any] = masked(
        {f.name: tables[f.name] for f in _RECORD_TABLES},
        _RECORD_TABLES,
        "record",
        tables["attacked"],
    )
    record = AttackRecord(
        label=spec.label,
        kind=spec.kind,
        norm=norm,
        epsilons=epsilons,
        source="sweep" if sources == {"sweep"} else "run",
        sample_index=torch.arange(num_samples, device=x.device),
        robust_accuracy_after=tuple(after.double().mean(dim=1).tolist()),
        result=merged,
        statuses=tuple(piece.status for piece in pieces),
        messages=tuple(piece.message for piece in pieces),
        nonfinite_evaluations=sum(r.nonfinite_evaluations for r in distinct),
        **shown,
    )
    return record, after


class _Reporter:
    """Reports each finished stage: to a tqdm bar, a callback, or nowhere; ``close`` ends
    the bar."""

    def __init__(self, progress: Progress | bool, total: int) -> None:
        self.total = total
        self.done = 0
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, desc="attacks", leave=False)

    def __call__(self, label: str, resumed: bool = False) -> None:
        self.done += 1
        if resumed:
            label = f"{label} (resumed)"
        if self.bar is not None:
            self.bar.set_postfix_str(label)
            self.bar.update(1)
            if self.bar.n >= self.total:
                self.close()
        elif self.callback is not None:
            self.callback(self.done, self.total, label)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
