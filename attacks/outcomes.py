"""What a suite found: per-sample outcomes of each attack, per norm and in all.

``run_suite`` (``attacks.suite``) returns a ``SuiteResult``: per norm a ``NormOutcome`` with
the outcomes of the main list (``AttackOutcome``, one per attack over every epsilon and every
sample, in memory: tensors, examples and the run behind it), the sweep's and the independent
sweep's, and every stage that did not complete (``core.attackrecords.Failure``, the
document's record). An outcome's per-sample tables are those of ``AttackResult`` of the same
names, with their declared fills (``attacks.tables``); ``outcome_of`` makes the outcome of one
run, ``merge_per_epsilon`` the outcome of one attack from its runs at each epsilon.
``analysis.robustness`` turns each outcome into the document's record
(``core.attackrecords.AttackRecord``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import overload

import torch
from torch import Tensor

from attacks.presets import AttackSpec, SuiteConfig
from attacks.result import PER_SAMPLE_TABLES, AttackResult, combine
from attacks.tables import Tables, at, empty, masked, scatter, tables_of
from attacks.threat import Norm
from attacks.worstcase import robust_after
from core.attackrecords import FAILED, NOT_APPLICABLE, OK, AttackStatus, Failure, Proportion

__all__ = [
    "AttackOutcome",
    "NormOutcome",
    "Piece",
    "SuiteResult",
    "merge_per_epsilon",
    "outcome_of",
]


class _Table:
    """An outcome's table under the attribute's own name: ``outcome.success`` is
    ``outcome.tables["success"]``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> _Table: ...

    @overload
    def __get__(self, instance: AttackOutcome, owner: type) -> Tensor: ...

    def __get__(self, instance: AttackOutcome | None, owner: type) -> _Table | Tensor:
        if instance is None:
            return self
        value = instance.tables[self.name]
        if value is None:
            raise AttributeError(f"the outcome of {instance.label!r} has no {self.name} table")
        return value


@dataclass(frozen=True)
class AttackOutcome:
    """Per-sample outcomes of one attack at one norm over ``K`` epsilons, on all ``N`` samples.
    Its record in the document is ``core.attackrecords.AttackRecord``, made by
    ``analysis.robustness``.

    ``tables`` holds every per-sample table of ``AttackResult`` (``PER_SAMPLE_TABLES``), each
    at the ``k``-th epsilon what the run at that epsilon produced, with columns in the order
    of the suite's samples, and its declared fill (see ``attacks.tables``) where the run did
    not attack a sample or did not cover it: a table declared on ``AttackResult`` is held here
    without another line. The tables the checks read are attributes as well (``success``,
    ``margin``, ...).

    Attributes:
        label: the attack's label in the suite (``"pgd-ce"``, ``"square"``, ...).
        kind: the attack function's name in ``ATTACKS``.
        norm: the norm.
        epsilons: the ``K`` epsilons.
        source: ``"run"``, or ``"sweep"`` when the outcomes were taken from the nested sweep.
        sample_index: ``[n]`` positions of the samples the outcome covers (all ``N`` for the
            main list and the nested sweep, the subsample for the independent sweep).
        tables: every declared table over the ``N`` samples; None for an optional one the
            attack does not give (``targets`` of an untargeted attack).
        robust_accuracy_after: ``[K]`` worst-case robust accuracy after this attack (main
            list, of the ``N`` samples), or this attack's own robust accuracy (sweeps, of the
            samples they ran on), as counts with their interval (the document's record).
        result: the outcome as one ``AttackResult`` over the same ``K`` epsilons and ``N``
            samples (the independent sweep: over its subsample), assembled from the runs
            behind it; None when no run completed.
        statuses: ``[K]`` ``"ok"``, ``"failed"`` or ``"not-applicable"`` per epsilon.
        messages: ``[K]`` the error or reason where not ``"ok"``, else None.
        nonfinite_evaluations: sample evaluations with NaN or Inf logits over the runs behind
            the outcome.
    """

    label: str
    kind: str
    norm: Norm
    epsilons: tuple[float, ...]
    source: str
    sample_index: Tensor
    tables: Tables
    robust_accuracy_after: tuple[Proportion, ...]
    result: AttackResult | None
    statuses: tuple[AttackStatus, ...]
    messages: tuple[str | None, ...]
    nonfinite_evaluations: int

    attacked = _Table()
    """``[K, N]`` bool, the attack ran on the sample at that epsilon."""
    success = _Table()
    """``[K, N]`` bool, this attack broke the sample (clean errors included)."""
    last_success = _Table()
    """``[K, N]`` bool, the final iterate broke it (see ``AttackResult``)."""
    margin = _Table()
    """``[K, N]`` true-label margin at the returned example, NaN where not attacked."""
    queries = _Table()
    """``[K, N]`` sample evaluations spent."""
    loss_trace = _Table()
    """``[K, T + 1, N]`` per-sample objective per iteration, NaN where absent."""
    adversarial = _Table()
    """``[K, N, ...]`` the example the run at each epsilon returned, projected, clipped and
    judged; the clean input where the sample was not attacked."""
    success_step = _Table()
    """``[K, N]`` int64 iteration of the first success (see ``AttackResult.success_step``); -1
    where this attack did not break the sample."""
    nonfinite = _Table()
    """``[K, N]`` bool, the sample was attacked and the logits at the example its run returned
    held NaN or Inf (never counted in ``success``)."""

    @property
    def status(self) -> AttackStatus:
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


def _given(tables: Mapping[str, Tensor | None], result: AttackResult | None) -> Tables:
    """``tables`` without the optional tables that ``result`` does not give (``targets`` of an
    untargeted attack; all of them when there is no result)."""
    present = {} if result is None else tables_of(result, PER_SAMPLE_TABLES)
    return {
        f.name: None if f.optional and present.get(f.name) is None else tables[f.name]
        for f in PER_SAMPLE_TABLES
    }


@dataclass(frozen=True)
class NormOutcome:
    """Everything a suite found under one norm.

    Attributes:
        norm: the norm.
        epsilons: the suite's ``K`` epsilons.
        robust: ``[K, N]`` bool, robust to every attack of the main list (worst case).
        attacks: the main list's outcomes, in the order run.
        sweep_epsilons: the sweep's ascending epsilons (the last may be the unbounded one).
        unbounded_epsilon: the epsilon whose ball covers the whole box.
        sweep: the nested sweep on every sample, or None (none configured, or it failed).
        independent_sweep: independent per-epsilon runs on a subsample, or None.
        failures: every stage that failed or could not run, in the order met.
    """

    norm: Norm
    epsilons: tuple[float, ...]
    robust: Tensor
    attacks: tuple[AttackOutcome, ...]
    sweep_epsilons: tuple[float, ...]
    unbounded_epsilon: float
    sweep: AttackOutcome | None
    independent_sweep: AttackOutcome | None
    failures: tuple[Failure, ...] = ()

    @property
    def robust_accuracy(self) -> list[float]:
        """Worst-case robust accuracy over the main list, one value per epsilon."""
        return (self.robust.double().mean(dim=1)).tolist()

    def attack(self, label: str) -> AttackOutcome:
        """The main-list outcome of the attack called ``label``."""
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

    def norm(self, norm: Norm | str) -> NormOutcome:
        """The outcomes under ``norm``."""
        parsed = Norm.parse(norm)
        for item in self.norms:
            if item.norm is parsed:
                return item
        raise KeyError(f"the suite ran no attacks under {parsed.value}")


def _proportions(robust: Tensor) -> tuple[Proportion, ...]:
    """Per row of ``robust`` (``[K, n]`` bool), the share of its ``n`` samples robust."""
    total = robust.shape[1]
    return tuple(Proportion.of(int(count), total) for count in robust.sum(dim=1).tolist())


def outcome_of(
    spec: AttackSpec,
    norm: Norm,
    result: AttackResult,
    index: Tensor,
    x: Tensor,
    source: str = "run",
) -> AttackOutcome:
    """The outcome of ``result``, a run on samples ``index`` of ``x``: its tables over all the
    suite's samples, the fill where the run did not attack a sample or did not cover it."""
    num_samples = x.shape[0]
    tables = empty(PER_SAMPLE_TABLES, len(result.epsilons), x, length=result.loss_trace.shape[1])
    own = masked(tables_of(result), PER_SAMPLE_TABLES, "outcome", result.attacked)
    scatter(tables, own, index, PER_SAMPLE_TABLES)
    return AttackOutcome(
        label=spec.label,
        kind=spec.kind,
        norm=norm,
        epsilons=result.epsilons,
        source=source,
        sample_index=(
            torch.arange(num_samples, device=x.device) if index.numel() == num_samples else index
        ),
        robust_accuracy_after=_proportions(~result.success),
        result=result,
        statuses=tuple(OK for _ in result.epsilons),
        messages=(None,) * len(result.epsilons),
        nonfinite_evaluations=result.nonfinite_evaluations,
        tables=_given(tables, result),
    )


@dataclass
class Piece:
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
    status: AttackStatus = OK
    message: str | None = None


def merge_per_epsilon(
    spec: AttackSpec,
    norm: Norm,
    epsilons: tuple[float, ...],
    pieces: list[Piece],
    x: Tensor,
    robust: Tensor,
) -> tuple[AttackOutcome, Tensor]:
    """Fold one attack's per-epsilon runs into one outcome over all samples, and the robust
    masks after it.

    Row ``k`` of every table is taken from the run at the ``k``-th epsilon (the sweep's row at
    that epsilon when shared), at the suite's positions of that run's samples; a run that
    failed leaves its samples not attacked.

    Returns:
        The outcome and the ``[K, N]`` robust masks after this attack (``robust_after``).
    """
    num_samples, num_eps = x.shape[0], len(epsilons)
    results = [p.result for p in pieces if p.result is not None]
    length = max((r.loss_trace.shape[1] for r in results), default=1)
    tables = empty(PER_SAMPLE_TABLES, num_eps, x, length=length)
    for k, piece in enumerate(pieces):
        if piece.result is None:
            continue
        row = at(tables_of(piece.result, PER_SAMPLE_TABLES), piece.row, PER_SAMPLE_TABLES)
        row = masked(row, PER_SAMPLE_TABLES, "merged", piece.result.attacked[piece.row])
        scatter(tables, row, piece.index, PER_SAMPLE_TABLES, row=k)
    (after,) = robust_after(robust, [tables["success"]])
    merged = None
    # A run shared by several epsilons (the sweep's) counts once.
    distinct = list({id(r): r for r in results}.values())
    # An optional table (targets) is there when the attack gives it.
    own = _given(tables, results[0] if results else None)
    if results:
        merged = combine(distinct, own, norm=norm, epsilons=epsilons)
    sources = {piece.source for piece in pieces}
    # Where a sample was not attacked, the outcome shows the fill (e.g. no margin).
    shown = masked(own, PER_SAMPLE_TABLES, "outcome", tables["attacked"])
    outcome = AttackOutcome(
        label=spec.label,
        kind=spec.kind,
        norm=norm,
        epsilons=epsilons,
        source="sweep" if sources == {"sweep"} else "run",
        sample_index=torch.arange(num_samples, device=x.device),
        robust_accuracy_after=_proportions(after),
        result=merged,
        statuses=tuple(piece.status for piece in pieces),
        messages=tuple(piece.message for piece in pieces),
        nonfinite_evaluations=sum(r.nonfinite_evaluations for r in distinct),
        tables=shown,
    )
    return outcome, after
