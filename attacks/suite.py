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
from dataclasses import replace
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
from attacks.records import (
    FAILED,
    NOT_APPLICABLE,
    OK,
    STATUSES,
    AttackRecord,
    NormOutcome,
    Piece,
    StageFailure,
    SuiteResult,
    merge_per_epsilon,
)
from attacks.records import record_of as _record
from attacks.result import TABLES, AttackResult, GradientStats
from attacks.tables import arguments, cat, tables_of, take
from attacks.threat import Norm, check_inputs, geometry
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

__all__ = [
    "ATTACKS",
    "FAILED",
    "NOT_APPLICABLE",
    "OK",
    "STATUSES",
    "AttackRecord",
    "Memo",
    "NormOutcome",
    "Progress",
    "StageFailure",
    "SuiteResult",
    "expected_cost_order",
    "run_attack_spec",
    "run_suite",
]

ATTACKS: Mapping[str, Callable[..., AttackResult]] = MappingProxyType(
    {kind: registry.get(kind).function for kind in registry.list_attacks()}
)
"""Every attack a suite can name, by ``AttackSpec.kind`` (a read-only view of the registry)."""


Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``, called after each stage of a suite."""


Memo = Callable[[str, Callable[[], Any]], tuple[Any, bool]]
"""``memo(unit, compute) -> (value, loaded)``: a stored value of the unit, else ``compute()``
(stored for a later run); see ``analysis.resume``."""


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
                        pieces.append(Piece(sweep_record.result, row, everyone, "sweep"))
                    else:
                        peer = spec.peer_of is not None
                        k = epsilons.index(eps)
                        todo = robust[k] if config.skip_broken and not peer else clean_correct
                        index = todo.nonzero().squeeze(1)
                        if index.numel() == 0:
                            pieces.append(Piece(None, 0, index, "run"))
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
                                pieces.append(Piece(None, 0, index, "run", status, message))
                            else:
                                pieces.append(Piece(result, 0, index, "run"))
                    report(f"{norm.value} eps={eps:.4g} {spec.label}", resumed)
                record, robust = merge_per_epsilon(spec, norm, epsilons, pieces, x, robust)
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
