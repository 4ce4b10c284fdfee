"""The loop every attack shares: clean pass, epsilons in ascending order, batches, bookkeeping.

An attack supplies one function that attacks a batch of samples at one epsilon; this module
does the rest once: it checks the inputs, evaluates the clean samples (a clean
misclassification is a success at every epsilon, with the clean input as its example), lets
a sample broken at a smaller epsilon keep its example at every larger one (the balls are
nested, so that example is inside them; ``nested=False`` attacks it again instead), splits
the rest into batches, and assembles the ``AttackResult``.

It also enforces the budget, whoever computed the examples (the native loops, pyautoattack,
cleverhans, torchattacks): every returned example is brought inside its epsilon ball and the
bounds (``Geometry.enforce``: untouched when inside, projected when not) and judged again by
one forward pass of its own. Logits, success, margin and target success come from that pass,
never from what the attack claimed; it costs one sample-forward per attacked sample and
epsilon, counted in ``num_forward``. It is one pass even where the attack averaged its
gradients over several (EOT): a stochastic model's prediction is one draw, so its example is
judged by one draw, as AutoAttack judges it, not by the average of many passes (which would
judge another, averaged classifier; on a model that picks one of three networks at random per
call, that average left robust samples that AutoAttack's ``rand`` version, judging by one
pass, counted as broken).

Logits holding NaN or Inf have no prediction (``attacks.losses.predict``), and the engine
judges them so: a sample whose clean logits are not finite is not correctly classified, so,
like a clean misclassification, it counts as not robust at every epsilon and is not attacked
(``success`` True, ``attacked`` False); a returned example whose logits are not finite is not
a success, however its argmax falls (it stays robust unless an attack breaks it with finite
logits). Both are marked in ``nonfinite``, and every sample evaluation with non-finite logits
is counted in ``nonfinite_evaluations``.

Randomness. ``setup`` draws one stage seed from the call's generator (one draw whatever the
number of samples). Each sample has an identity, ``sample_ids[i]`` (default its position
``i``), and the native attacks draw everything random for a sample from its own CPU
generators, seeded with ``torchutil.mix_seeds(stage seed, sample id, stream)``: stream
``TARGET_STREAM`` for a random target (the same at every epsilon) and stream
``epsilon_stream(k)`` for the draws at the ``k``-th epsilon (random starts, noise). Within a
stream the draws come in a fixed order, described by each attack. A sample's draws therefore do
not depend on the batch it falls in, its position there, the batch size or the other samples
of the call, so an evaluation set split across calls (or processes) with the samples' ids gives
each sample what one call over the whole set gives it. ``Setup.streams`` creates a batch's
generators afresh from their seeds, so a batch redone after an out-of-memory error draws the
same again.

What draws from torch's global RNG (stochastic layers of a model in train mode or under EOT,
and pyautoattack, torchattacks and cleverhans) draws per batch: ``run_attack`` seeds that RNG
once per call from the call's generator, so such draws are reproducible for the same call but
depend on the batches, and results split across calls agree with one call only in
distribution.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from attacks.evaluator import Evaluator
from attacks.losses import fooled, is_finite_rows, judged_margin, predict
from attacks.result import (
    PER_SAMPLE_TABLES,
    STEP_NOT_BROKEN,
    STEP_UNKNOWN,
    AttackResult,
    gradient_stats,
)
from attacks.tables import arguments, empty, scatter
from attacks.tables import inherit as inherit_rows
from attacks.threat import Bounds, Epsilons, Norm, check_epsilons, check_inputs, geometry
from core.checks import VANISHING_THRESHOLD
from torchutil import (
    RngState,
    draw_seed,
    empty_cache,
    is_out_of_memory,
    keyed_generators,
    make_generator,
    model_mode,
    seeded_global_rng,
)

TARGET_STREAM = 0
"""The stream of a sample's random target, drawn once and the same at every epsilon."""


def epsilon_stream(k: int) -> int:
    """The stream of a sample's draws at the ``k``-th epsilon of a call (``k + 1``)."""
    return k + 1


def check_sample_ids(sample_ids: Tensor | None, num_samples: int) -> Tensor:
    """The samples' identities: ``sample_ids`` checked, or ``arange(num_samples)`` for None.

    Args:
        sample_ids: int64 ``[N]``, distinct, on any device; the samples' identities within the
            whole evaluation set (e.g. their positions in it), or None.
        num_samples: ``N``, the number of inputs.

    Returns:
        int64 ``[N]`` on the CPU.

    Raises:
        ValueError: for anything but a distinct int64 tensor of shape ``[N]``.
    """
    if sample_ids is None:
        return torch.arange(num_samples, device="cpu")
    fix = "pass each sample's position in the evaluation set, e.g. torch.arange(N)"
    if not isinstance(sample_ids, Tensor):
        raise ValueError(
            f"sample_ids must be an int64 tensor of shape [{num_samples}], got "
            f"{type(sample_ids).__name__}; {fix}"
        )
    if sample_ids.dtype != torch.int64:
        raise ValueError(f"sample_ids must have dtype torch.int64, got {sample_ids.dtype}; {fix}")
    if sample_ids.dim() != 1 or sample_ids.shape[0] != num_samples:
        raise ValueError(
            f"sample_ids must have shape [N] = [{num_samples}], one per input, got "
            f"{tuple(sample_ids.shape)}; {fix}"
        )
    ids = sample_ids.detach().cpu()
    values, counts = torch.unique(ids, return_counts=True)
    if values.numel() != num_samples:
        repeated = values[counts > 1]
        raise ValueError(
            f"sample_ids must be distinct, got {repeated.numel()} repeated "
            f"(e.g. {int(repeated[0])}); {fix}"
        )
    return ids


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """An explicit generator: the one given, or one on the CPU seeded with the given int (or 0).

    Seeds are drawn on the CPU, so an int seed gives the same draws whatever the model's
    device; random tensors are moved to the model's device where they meet it.
    """
    if isinstance(generator, torch.Generator):
        return generator
    return make_generator(0 if generator is None else int(generator))


@dataclass
class BatchResult:
    """What an attack returns for ``n`` samples at one epsilon (shapes without ``K``).

    Attributes:
        adversarial: ``[n, ...]`` the returned examples; the engine projects and judges them.
        logits: ``[n, C]`` the attack's own logits at them; read by the attack's trace only,
            never by the engine, which judges every example itself.
        last_success: ``[n]`` bool, the final iterate fooled the model (as the attack saw it).
        loss_trace: ``[T + 1, n]`` the objective per iteration.
        queries: ``[n]`` sample evaluations spent.
        first_grad_norm: ``[n]`` L2 norm of the first input gradient, or None.
        targets: ``[n]`` target classes of the returned examples (targeted attacks), or None.
        success_step: ``[n]`` int64, the iteration at which the attack first saw the sample
            misclassified, -1 where it never did (see ``AttackResult.success_step``); None
            when the attack cannot say.

    An attribute named as a table of ``AttackResult`` goes into that table at the batch's
    samples (cast to its dtype), except ``adversarial`` and ``success_step``, which the
    engine judges first; None leaves the table's fill.
    """

    adversarial: Tensor
    logits: Tensor
    last_success: Tensor
    loss_trace: Tensor
    queries: Tensor
    first_grad_norm: Tensor | None = None
    targets: Tensor | None = None
    success_step: Tensor | None = None


@dataclass(frozen=True)
class Batch:
    """``n`` samples to attack at the ``k``-th epsilon.

    Attributes:
        index: ``[n]`` positions of the samples in the attack's input.
        x0: ``[n, ...]`` clean inputs.
        y: ``[n]`` true labels.
        eps: ``[n]`` epsilons.
        k: the position of the epsilon in the list.
        clean_logits: ``[n, C]`` logits of the clean inputs.
    """

    index: Tensor
    x0: Tensor
    y: Tensor
    eps: Tensor
    k: int
    clean_logits: Tensor


BatchAttack = Callable[[Batch], BatchResult]
T = TypeVar("T")


@dataclass(frozen=True)
class Setup:
    """Validated common arguments of an attack call.

    Attributes:
        norm, epsilons, bounds: the threat model.
        generator: the call's generator.
        evaluator: counts and judges the model's evaluations.
        sample_ids: int64 ``[N]`` on the CPU, the samples' identities.
        stage_seed: the one seed drawn from ``generator`` at setup; with a sample's id it
            seeds that sample's streams.
    """

    norm: Norm
    epsilons: tuple[float, ...]
    bounds: Bounds
    generator: torch.Generator
    evaluator: Evaluator
    sample_ids: Tensor
    stage_seed: int

    def streams(self, index: Tensor, stream: int) -> list[torch.Generator]:
        """Fresh CPU generators of the samples at positions ``index`` ``[n]`` of the inputs,
        for ``stream`` (``TARGET_STREAM`` or ``epsilon_stream(k)``), one per sample in order."""
        keys = self.sample_ids[index.cpu()].tolist()
        return keyed_generators(self.stage_seed, keys, stream)


def setup(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str,
    bounds: Bounds | Sequence[float],
    generator: torch.Generator | int | None,
    eot_samples: int,
    sample_ids: Tensor | None = None,
) -> Setup:
    parsed_bounds = Bounds.parse(bounds)
    check_inputs(x, y, parsed_bounds)
    ids = check_sample_ids(sample_ids, x.shape[0])
    parsed_norm, parsed_epsilons = Norm.parse(norm), check_epsilons(epsilons)
    explicit = as_generator(generator)
    return Setup(
        norm=parsed_norm,
        epsilons=parsed_epsilons,
        bounds=parsed_bounds,
        generator=explicit,
        evaluator=Evaluator(model, eot_samples=eot_samples),
        sample_ids=ids,
        stage_seed=draw_seed(explicit),
    )


def run_attack(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: Setup,
    attack: BatchAttack,
    *,
    trace_length: int,
    objective: str,
    nested: bool,
    batch_size: int | None,
    stochastic: bool,
    params: dict[str, Any],
    backend: str = "native",
    targeted: bool = False,
    gradients: bool = True,
) -> AttackResult:
    """Run ``attack`` over every epsilon of ``config`` and assemble the result.

    Args:
        name: the attack's name in the result.
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: inputs ``[N, ...]``, never modified.
        y: true labels ``[N]``.
        config: from ``setup``.
        attack: attacks one batch at one epsilon.
        trace_length: ``T + 1``, the length of the per-sample loss trace.
        objective: the label of the traced objective.
        nested: let a sample broken at a smaller epsilon keep its example at larger ones.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        params: the attack's settings, recorded in the result.
        backend: recorded in the result.
        targeted: the attack returns targets; record targets and targeted success.
        gradients: the attack computes input gradients; record gradient statistics.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size}")
    start = time.perf_counter()
    evaluator = config.evaluator
    num_samples, num_eps = x.shape[0], len(config.epsilons)
    step = num_samples if batch_size is None else batch_size
    y = y.to(x.device).long()
    x = x.detach()

    tables = empty(PER_SAMPLE_TABLES, num_eps, x, length=trace_length)
    success, margins = tables["success"], tables["margin"]
    reported = _reported_tables()
    geom = geometry(config.norm)

    with (
        model_mode(model, train=stochastic),
        seeded_global_rng(draw_seed(config.generator), x.device),
    ):
        parts = [
            _retrying(functools.partial(evaluator.logits, x[i : i + step]), config, x.device)
            for i in range(0, num_samples, step)
        ]
        if not parts:
            raise ValueError("inputs must hold at least one sample, got an empty batch")
        clean_logits = torch.cat(parts)
        margins[:] = judged_margin(clean_logits, y).to(x.dtype)
        clean_nonfinite = ~is_finite_rows(clean_logits)
        clean_wrong = predict(clean_logits) != y
        tables["nonfinite"][:, clean_nonfinite] = True
        tables["success"][:, clean_wrong] = True
        tables["last_success"][:, clean_wrong] = True
        tables["success_step"][:, clean_wrong] = 0

        for k, eps in enumerate(config.epsilons):
            todo = ~success[k]
            if k > 0 and nested:
                inherit = success[k - 1] & ~clean_wrong
                todo &= ~inherit
                inherit_rows(tables, k, inherit, PER_SAMPLE_TABLES)
            indices = todo.nonzero().squeeze(1)
            for begin in range(0, indices.numel(), step):
                idx = indices[begin : begin + step]
                x0 = x[idx]
                eps_batch = torch.full((idx.numel(),), eps, dtype=x.dtype, device=x.device)
                batch = Batch(idx, x0, y[idx], eps_batch, k, clean_logits[idx])
                outcome = _retrying(functools.partial(attack, batch), config, x.device)
                if outcome.adversarial.shape != x0.shape:
                    raise ValueError(
                        f"attack {name!r} returned examples of shape "
                        f"{tuple(outcome.adversarial.shape)} for inputs of shape "
                        f"{tuple(x0.shape)}; an attack must return one example per input"
                    )
                example = geom.enforce(
                    outcome.adversarial.detach().to(x.dtype), x0, eps_batch, config.bounds
                )
                logits = evaluator.drawn_logits(example)
                prediction = predict(logits)
                broken = fooled(logits, y[idx])
                judged = {
                    **{name: getattr(outcome, name) for name in reported},
                    "attacked": torch.ones_like(broken, dtype=torch.bool),
                    "adversarial": example,
                    "nonfinite": ~is_finite_rows(logits),
                    "margin": judged_margin(logits, y[idx]),
                    "success": broken,
                    "success_step": _judged_steps(outcome.success_step, broken),
                    "target_success": None
                    if outcome.targets is None
                    else prediction == outcome.targets,
                }
                scatter(tables, judged, idx, PER_SAMPLE_TABLES, row=k)

    stats = None
    if gradients:
        stats = gradient_stats(
            tables["first_grad_norm"],
            vanishing_threshold=VANISHING_THRESHOLD,
            nonfinite_logits=evaluator.nonfinite_logits,
            nonfinite_gradients=evaluator.nonfinite_gradients,
        )
    own = arguments(tables, PER_SAMPLE_TABLES)
    # The optional tables: a targeted attack's targets, a gradient attack's first gradients.
    if not targeted:
        own.update(targets=None, target_success=None)
    if not gradients:
        own.update(first_grad_norm=None)
    return AttackResult(
        attack=name,
        norm=config.norm,
        epsilons=config.epsilons,
        objective=objective,
        num_forward=evaluator.num_forward,
        num_backward=evaluator.num_backward,
        wall_time=time.perf_counter() - start,
        seed=config.generator.initial_seed(),
        nonfinite_evaluations=evaluator.nonfinite_logits,
        backend=backend,
        params=params,
        gradient_stats=stats,
        **own,
    )


def _reported_tables() -> tuple[str, ...]:
    """The attributes of ``BatchResult`` that are tables of the result, placed into it as
    the attack reports them (the engine judges and replaces ``adversarial`` and
    ``success_step``)."""
    names = {f.name for f in PER_SAMPLE_TABLES}
    return tuple(f.name for f in dataclasses.fields(BatchResult) if f.name in names)


def _retrying(compute: Callable[[], T], config: Setup, device: torch.device) -> T:
    """``compute()``; after an out-of-memory error, again with the model's chunks halved.

    Only for a model in a ``ChunkedModel`` (the audit's): the generator, torch's global RNG
    and the evaluator's counters are put back as they were, so the batch draws and counts
    what it would have with the smaller chunks from the start.
    """
    evaluator = config.evaluator
    chunks = evaluator.chunks
    while True:
        if chunks is None:
            return compute()
        state = RngState([config.generator], device)
        counters = evaluator.counters()
        try:
            return compute()
        except Exception as err:
            if not is_out_of_memory(err) or chunks.chunk_size <= 1:
                raise
            state.restore()
            evaluator.restore_counters(counters)
            chunks.halve()
        empty_cache(device)


def _judged_steps(claimed: Tensor | None, broken: Tensor) -> Tensor:
    """``success_step`` of a batch: the attack's step where the engine's pass confirms the
    success, -1 where that pass finds the sample unbroken, -2 where the attack gave no step
    (or saw no success that the engine's pass found, as a stochastic model allows)."""
    unknown = torch.full(broken.shape, STEP_UNKNOWN, dtype=torch.long, device=broken.device)
    if claimed is not None:
        claimed = claimed.to(device=broken.device, dtype=torch.long)
        unknown = torch.where(claimed >= 0, claimed, unknown)
    return torch.where(broken, unknown, STEP_NOT_BROKEN)
