"""Projected gradient descent: untargeted (PGD-CE) and targeted (PGD-T), under L∞ and L2.

The loop is written once; the norm enters only through its ``Geometry``. Each iteration costs
one forward and one backward pass on the samples still being attacked, and the forward pass
also judges the current iterate (which is already projected and clipped), so keeping the best
iterate needs no extra pass; only the final iterate needs one forward pass of its own.

The native loop draws per sample (see ``attacks._engine``): a random target from the sample's
``TARGET_STREAM`` (one uniform), and at the ``k``-th epsilon, from its ``epsilon_stream(k)``,
one random start per run it takes part in, in the order of the runs (targets in turn, each
with its restarts in turn). Which runs a sample takes part in depends on its own outcomes
only, so its draws, and its result, do not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attacks import backends
from attacks._engine import TARGET_STREAM, Batch, BatchOutcome, epsilon_stream
from attacks._model import Evaluator
from attacks._setup import prepare
from attacks.losses import NO_PREDICTION, Objective, describe, objective, predict, zero_nonfinite_
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Geometry, Norm, geometry, uniform

TARGET_MODES = ("random", "next", "least-likely", "all", "top")
Keep = Literal["best", "last"]

_UNTARGETED_STOP = 1
_TARGETED_STOP = 2
_NONFINITE_RANK = -1
_NO_RANK = -2


@dataclass
class _State:
    """Per-sample best-so-far over iterates, restarts and targets of one batch ``[n]``.

    A rank orders iterates: -1 logits not finite (no prediction), 0 correctly classified,
    1 misclassified, 2 target reached. Higher rank wins; among rank-0 iterates the higher
    objective wins (a NaN objective never does); among fooling iterates the first is kept.
    """

    best_x: Tensor
    best_logits: Tensor
    best_rank: Tensor
    best_loss: Tensor
    best_target: Tensor
    last_rank: Tensor
    trace: Tensor
    first_grad_norm: Tensor
    queries: Tensor
    first_step: Tensor

    @classmethod
    def empty(cls, x0: Tensor, num_classes: int, num_steps: int) -> _State:
        n = x0.shape[0]
        return cls(
            best_x=x0.clone(),
            best_logits=torch.zeros(n, num_classes, dtype=x0.dtype, device=x0.device),
            best_rank=torch.full((n,), _NO_RANK, dtype=torch.long, device=x0.device),
            best_loss=torch.full((n,), float("-inf"), dtype=x0.dtype, device=x0.device),
            best_target=torch.full((n,), -1, dtype=torch.long, device=x0.device),
            last_rank=torch.zeros(n, dtype=torch.long, device=x0.device),
            trace=torch.full((num_steps + 1, n), float("nan"), dtype=x0.dtype, device=x0.device),
            first_grad_norm=torch.full((n,), float("nan"), dtype=x0.dtype, device=x0.device),
            queries=torch.zeros(n, dtype=torch.long, device=x0.device),
            first_step=torch.full((n,), -1, dtype=torch.long, device=x0.device),
        )


@dataclass(frozen=True)
class _Descent:
    """Settings of one projected-gradient run."""

    evaluator: Evaluator
    geometry: Geometry
    bounds: Bounds
    objective: Objective
    num_steps: int
    random_start: bool
    keep: Keep
    early_stop: bool
    stop_rank: int


@dataclass
class _Best:
    """The best iterate so far of the samples one run attacks, row by row with them.

    A run reads these rows from ``_State`` once, updates them without indexing the batch at
    every step, and writes them back when samples leave the run and at its end.
    """

    x: Tensor
    logits: Tensor
    rank: Tensor
    loss: Tensor
    target: Tensor
    first_step: Tensor

    @classmethod
    def read(cls, state: _State, rows: Tensor) -> _Best:
        return cls(
            state.best_x[rows],
            state.best_logits[rows],
            state.best_rank[rows],
            state.best_loss[rows],
            state.best_target[rows],
            state.first_step[rows],
        )

    def write(self, state: _State, rows: Tensor, which: Tensor | None = None) -> None:
        """Store these rows (or those selected by the mask ``which``) at ``rows`` of the batch."""
        part = self if which is None else self.select(which)
        state.best_x[rows] = part.x
        state.best_logits[rows] = part.logits
        state.best_rank[rows] = part.rank
        state.best_loss[rows] = part.loss
        state.best_target[rows] = part.target
        state.first_step[rows] = part.first_step

    def select(self, which: Tensor) -> _Best:
        return _Best(
            self.x[which],
            self.logits[which],
            self.rank[which],
            self.loss[which],
            self.target[which],
            self.first_step[which],
        )

    def update(
        self,
        better: Tensor | None,
        x: Tensor,
        logits: Tensor,
        rank: Tensor,
        loss: Tensor,
        targets: Tensor | None,
    ) -> None:
        """Take the iterate where ``better`` holds (everywhere when it is None)."""
        logits, loss = logits.to(self.logits.dtype), loss.to(self.loss.dtype)
        target = self.target if targets is None else targets
        if better is None:
            # Fresh references, not copies: nothing writes into an iterate after this step.
            self.x, self.logits, self.rank, self.loss, self.target = x, logits, rank, loss, target
            return
        # In place: these rows are this run's own copies, and a fresh example-sized buffer per
        # step would cost more than the copy (new memory faults in page by page).
        rows = better.reshape(-1, *([1] * (x.dim() - 1)))
        torch.where(rows, x, self.x, out=self.x)
        torch.where(better[:, None], logits, self.logits, out=self.logits)
        torch.where(better, rank, self.rank, out=self.rank)
        torch.where(better, loss, self.loss, out=self.loss)
        if targets is not None:
            torch.where(better, targets, self.target, out=self.target)


def _descend(
    run: _Descent,
    state: _State,
    idx: Tensor,
    x0: Tensor,
    y: Tensor,
    eps: Tensor,
    step: Tensor,
    targets: Tensor | None,
    first_run: bool,
    streams: Sequence[torch.Generator],
) -> None:
    """One PGD run on the samples ``idx`` of the batch, folded into ``state``.

    Args:
        run: the settings.
        state: best-so-far of the whole batch, updated in place.
        idx: ``[m]`` positions in the batch to attack.
        x0, y, eps, step, targets: ``[m, ...]`` / ``[m]`` values of those samples.
        first_run: the batch's first run (on every sample): record the objective in
            ``state.trace`` and the first gradient's norm.
        streams: the generators of the batch's samples, one per position in the batch; the
            random start of the sample at ``idx[j]`` comes from ``streams[idx[j]]``.
    """
    geom, evaluator = run.geometry, run.evaluator
    if run.random_start:
        sources = [streams[i] for i in idx.tolist()]
        x = geom.random_start(x0, eps, sources).clamp_(run.bounds.lower, run.bounds.upper)
    else:
        x = x0.clone()
    active = idx
    best = _Best.read(state, active)

    def loss_fn(logits: Tensor) -> Tensor:
        # Reads ``y`` and ``targets`` when called, so it follows the compaction below.
        return run.objective(logits, y, targets)

    def leave(which: Tensor | None, rank: Tensor, evaluations: int) -> None:
        """Write back the samples leaving the run (``which``; all when None)."""
        rows = active if which is None else active[which]
        best.write(state, rows, which)
        state.last_rank[rows] = rank if which is None else rank[which]
        state.queries[rows] += evaluations * evaluator.eot_samples

    for t in range(run.num_steps + 1):
        if t < run.num_steps:
            logits, loss, grad = evaluator.value_and_grad(x, loss_fn)
        else:
            logits = evaluator.logits(x)
            loss = loss_fn(logits)
        prediction = predict(logits)
        rank = (prediction != y).long()
        # The first iterate of this run that fools a sample not fooled before.
        best.first_step = torch.where(
            (best.first_step < 0) & (rank > 0) & (prediction != NO_PREDICTION), t, best.first_step
        )
        if targets is not None:
            rank += (prediction == targets).long()
        rank = torch.where(prediction == NO_PREDICTION, _NONFINITE_RANK, rank)
        if first_run:
            state.trace[t, active] = loss.to(state.trace.dtype)

        better = None
        if run.keep == "best":
            # A NaN objective compares as the lowest, so a finite iterate replaces it.
            score = loss.nan_to_num(nan=float("-inf"))
            better = (rank > best.rank) | ((rank == 0) & (best.rank == 0) & (score > best.loss))
            loss = score
        best.update(better, x, logits, rank, loss, targets)
        if t == run.num_steps:
            break

        if t == 0 and first_run:
            norms = grad.flatten(1).norm(dim=1)
            state.first_grad_norm[active] = norms.to(state.first_grad_norm.dtype)
        x = geom.ascend(x, zero_nonfinite_(grad), step, x0, eps, run.bounds)

        if run.early_stop:
            going = rank < run.stop_rank
            if not going.all():
                # Compaction: stopped samples leave the batch, so later passes cost nothing
                # for them.
                leave(~going, rank, t + 1)
                active, x, x0, y, eps, step = (
                    active[going],
                    x[going],
                    x0[going],
                    y[going],
                    eps[going],
                    step[going],
                )
                targets = None if targets is None else targets[going]
                best = best.select(going)
                if active.numel() == 0:
                    return
    leave(None, rank, t + 1)


def _targets_for(
    mode: str, offset: int | None, y: Tensor, clean_logits: Tensor, draws: Tensor | None
) -> Tensor:
    """Target classes ``[n]``, never the true class.

    Args:
        mode: one of ``TARGET_MODES``; for ``"all"``, ``offset`` picks ``(y + offset) mod C``;
            for ``"top"``, the wrong class of rank ``offset`` (0: the most likely) by clean logit.
        offset: the class offset for mode ``"all"``, the rank for mode ``"top"``.
        y: true labels ``[n]``.
        clean_logits: ``[n, C]`` logits of the clean inputs (for ``"least-likely"``, ``"top"``).
        draws: ``[n]`` uniform draws in ``[0, 1)`` (for ``"random"``).
    """
    num_classes = clean_logits.shape[1]
    if mode == "top":
        if offset is None:
            raise ValueError("target mode 'top' needs a rank")
        # The true class sorts last; ties keep the lower class first (a stable sort).
        masked = clean_logits.scatter(1, y[:, None], float("-inf"))
        order = masked.sort(dim=1, descending=True, stable=True).indices
        return order[:, offset]
    if mode == "next":
        return (y + 1) % num_classes
    if mode == "all":
        if offset is None:
            raise ValueError("target mode 'all' needs an offset")
        return (y + offset) % num_classes
    if mode == "random":
        if draws is None:
            raise ValueError("target mode 'random' needs draws")
        shift = 1 + (draws * (num_classes - 1)).long().clamp_(max=num_classes - 2)
        return (y + shift) % num_classes
    masked = clean_logits.scatter(1, y[:, None], float("inf"))
    return masked.argmin(dim=1)


def _step_sizes(
    eps: Tensor, num_steps: int, rel_step_size: float | None, abs_step_size: float | None
) -> Tensor:
    if abs_step_size is not None:
        return torch.full_like(eps, abs_step_size)
    rel = 2.5 / num_steps if rel_step_size is None else rel_step_size
    return eps * rel


def step_fraction(
    num_steps: int,
    rel_step_size: float | None,
    abs_step_size: float | None,
    epsilons: Sequence[float] = (),
) -> float | None:
    """The largest step as a multiple of epsilon, or None where it is not known.

    A fixed step (``abs_step_size``) is a multiple of each epsilon; the largest is at the
    smallest positive one of ``epsilons`` (unknown without them).
    """
    if abs_step_size is None:
        return 2.5 / num_steps if rel_step_size is None else rel_step_size
    positive = [eps for eps in epsilons if eps > 0]
    return abs_step_size / min(positive) if positive else None


def _check_settings(
    num_steps: int,
    rel_step_size: float | None,
    abs_step_size: float | None,
    num_restarts: int,
    keep: str,
) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if num_restarts < 1:
        raise ValueError(f"num_restarts must be at least 1, got {num_restarts}")
    if rel_step_size is not None and abs_step_size is not None:
        raise ValueError(
            "give rel_step_size or abs_step_size, not both; got "
            f"rel_step_size={rel_step_size}, abs_step_size={abs_step_size}"
        )
    for name, value in (("rel_step_size", rel_step_size), ("abs_step_size", abs_step_size)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")


def _pgd(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str,
    num_steps: int,
    rel_step_size: float | None,
    abs_step_size: float | None,
    random_start: bool,
    num_restarts: int,
    loss: str,
    keep: Keep,
    early_stop: bool,
    nested: bool,
    bounds: Bounds | Sequence[float],
    batch_size: int | None,
    stochastic: bool,
    eot_samples: int,
    backend: str,
    generator: torch.Generator | int | None,
    target_mode: str | None,
    num_target_classes: int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    _check_settings(num_steps, rel_step_size, abs_step_size, num_restarts, keep)
    targeted = target_mode is not None
    if targeted and target_mode not in TARGET_MODES:
        raise ValueError(
            f"target_mode must be one of {', '.join(TARGET_MODES)}, got {target_mode!r}"
        )
    objective(loss, targeted=targeted)
    backends.check(backend)
    if num_target_classes is not None:
        if target_mode != "top":
            raise ValueError(
                "num_target_classes applies to target_mode 'top' only, got target_mode "
                f"{target_mode!r}; drop num_target_classes or use target_mode='top'"
            )
        if isinstance(num_target_classes, bool) or not isinstance(num_target_classes, int):
            raise TypeError(
                f"num_target_classes must be an int, got {type(num_target_classes).__name__}"
            )
        if num_target_classes < 1:
            raise ValueError(f"num_target_classes must be at least 1, got {num_target_classes}")
    call = prepare(
        model, x, y, epsilons, (norm, bounds), (generator, sample_ids), eot_samples=eot_samples
    )
    config = call.config
    backends.check_settings(
        backend,
        loss=loss,
        eot_samples=eot_samples,
        target_mode=target_mode,
        step_fraction=step_fraction(num_steps, rel_step_size, abs_step_size, config.epsilons),
    )
    params = {
        "num_steps": num_steps,
        "rel_step_size": rel_step_size,
        "abs_step_size": abs_step_size,
        "random_start": random_start,
        "num_restarts": num_restarts,
        "loss": loss,
        "keep": keep,
        "early_stop": early_stop,
        "nested": nested,
        "eot_samples": eot_samples,
        "stochastic": stochastic,
        "target_mode": target_mode,
    }
    if target_mode == "top":
        params["num_target_classes"] = num_target_classes

    def targets_for(batch: Batch, offset: int | None) -> Tensor | None:
        if target_mode is None:
            return None
        draws = None
        if target_mode == "random":
            # From the sample's own target stream: the same target at every epsilon.
            sources = config.streams(batch.index, TARGET_STREAM)
            draws = uniform((batch.index.numel(),), batch.x0, sources)
        return _targets_for(target_mode, offset, batch.y, batch.clean_logits, draws)

    def attack(batch: Batch) -> BatchOutcome:
        step = _step_sizes(batch.eps, num_steps, rel_step_size, abs_step_size)
        num_classes = batch.clean_logits.shape[1]
        offsets: list[int | None] = [None]
        if target_mode == "all":
            offsets = list(range(1, num_classes))
        elif target_mode == "top":
            offsets = list(range(min(num_target_classes or num_classes, num_classes - 1)))
        if backend != "native":
            return backends.pgd_batch(
                backend,
                config,
                batch,
                step,
                targets_for(batch, offsets[0]),
                num_steps=num_steps,
                random_start=random_start,
                num_restarts=num_restarts,
            )
        run = _Descent(
            evaluator=config.evaluator,
            geometry=geometry(config.norm),
            bounds=config.bounds,
            objective=objective(loss, targeted=targeted, num_classes=num_classes),
            num_steps=num_steps,
            random_start=random_start,
            keep=keep,
            early_stop=early_stop,
            # Mode "top" counts a misclassification as done (AutoAttack's APGD-T plan): what
            # robust accuracy counts, and the next target runs only where all earlier failed.
            stop_rank=_TARGETED_STOP if targeted and target_mode != "top" else _UNTARGETED_STOP,
        )
        streams = config.streams(batch.index, epsilon_stream(batch.k)) if random_start else []
        state = _State.empty(batch.x0, num_classes, num_steps)
        everyone = torch.arange(batch.x0.shape[0], device=batch.x0.device)
        first = True
        for offset in offsets:
            targets = targets_for(batch, offset)
            for _ in range(num_restarts):
                todo = everyone[state.best_rank < run.stop_rank]
                if todo.numel() == 0:
                    break
                _descend(
                    run,
                    state,
                    todo,
                    batch.x0[todo],
                    batch.y[todo],
                    batch.eps[todo],
                    step[todo],
                    None if targets is None else targets[todo],
                    first_run=first,
                    streams=streams,
                )
                first = False
        return BatchOutcome(
            adversarial=state.best_x,
            logits=state.best_logits,
            last_success=state.last_rank >= 1,
            loss_trace=state.trace,
            queries=state.queries,
            first_grad_norm=state.first_grad_norm,
            targets=state.best_target if targeted else None,
            success_step=state.first_step,
        )

    return call.run(
        name,
        attack,
        engine=(nested, batch_size, stochastic),
        trace_length=num_steps + 1 if backend == "native" else 1,
        objective=describe(loss, targeted=targeted),
        params=params,
        backend=backend,
        targeted=targeted,
        gradients=backend == "native",
    )


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    num_steps: int = 100,
    rel_step_size: float | None = None,
    abs_step_size: float | None = None,
    random_start: bool = True,
    num_restarts: int = 1,
    loss: str = "ce",
    keep: Keep = "best",
    early_stop: bool = True,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    eot_samples: int = 1,
    backend: str = "native",
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Untargeted PGD against the true labels (Madry et al.), one call for many epsilons.

    Args:
        model: maps inputs ``[N, ...]`` in ``bounds`` to logits ``[N, C]``.
        x: clean inputs ``[N, ...]`` in ``bounds``; never modified.
        y: true labels ``[N]``.
        epsilons: one radius, or ascending, non-negative radii in input space (a single
            number gives one row, K = 1).
        norm: ``"linf"`` or ``"l2"``.
        num_steps: gradient steps per restart.
        rel_step_size: step as a fraction of epsilon (default ``2.5 / num_steps``).
        abs_step_size: a fixed step instead, the same at every epsilon.
        random_start: start from a uniform point of the ball instead of the clean input.
        num_restarts: further runs, each on the samples no run has fooled yet.
        loss: ``"ce"``, ``"cw"`` (margin) or ``"dlr"``.
        keep: ``"best"`` returns the first fooling iterate (else the highest objective);
            ``"last"`` returns the final iterate, as Madry et al. and the reference libraries.
        early_stop: stop attacking a sample once an iterate fools the model; turn it off to
            observe the final iterate of every sample (``last_success``).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: the input box ``(lower, upper)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        eot_samples: forward passes averaged per gradient (EOT) for stochastic models.
        backend: ``"native"``, ``"cleverhans"`` or ``"torchattacks"``.
        generator: a ``torch.Generator`` or an int seed (default seed 0); the native backend
            draws one seed from it and each sample's random starts from that sample's own
            stream, the libraries draw per batch from torch's global RNG seeded from it.
        sample_ids: int64 ``[N]``, distinct: the samples' identities in the whole evaluation
            set (default ``arange(N)``). With the native backend a sample's random draws
            depend on its id and the generator only, so its result does not depend on the
            batch, the batch size or the other samples (for a deterministic model).

    Returns:
        ``AttackResult`` with ``K = len(epsilons)`` and ``T = num_steps``.

    Example:
        >>> result = pgd(model, x, y, [0.1, 0.3], norm="linf", num_steps=40)
        >>> result.robust_accuracy  # one value per epsilon
    """
    # Every argument as given: PGD is PGD-T without a target.
    return _pgd("pgd-" + loss, **locals(), target_mode=None)


def pgd_targeted(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    target_mode: str = "random",
    num_target_classes: int | None = None,
    norm: Norm | str = Norm.LINF,
    num_steps: int = 100,
    rel_step_size: float | None = None,
    abs_step_size: float | None = None,
    random_start: bool = True,
    num_restarts: int = 1,
    loss: str = "ce",
    keep: Keep = "best",
    early_stop: bool = True,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    eot_samples: int = 1,
    backend: str = "native",
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Targeted PGD (PGD-T): minimise the loss of a target class, never the true one.

    ``success`` is misclassification (what robust accuracy counts); ``target_success`` says
    whether the prediction is the target, and ``targets`` which target the example belongs to.
    An iterate that reaches its target beats one that is only misclassified.

    Args:
        target_mode: ``"random"`` (a uniform wrong class per sample, drawn from its own
            stream, the same at every epsilon), ``"next"`` (``(y + 1) mod C``),
            ``"least-likely"`` (lowest clean logit among the wrong classes), ``"all"`` (every
            wrong class in turn, each on the samples no earlier target reached) or ``"top"``
            (the ``num_target_classes`` most likely wrong classes by clean logit, most likely
            first, each on the samples that no earlier target misclassified: AutoAttack's
            APGD-T plan; a sample stops as soon as it is misclassified). A reference backend
            runs only the first target.
        num_target_classes: for ``"top"``, how many targets (default all ``C - 1``; fewer
            when the model has fewer wrong classes).
        Other arguments: as for ``pgd``; ``early_stop`` stops a sample once it reaches its
            target (in mode ``"top"``, once it is misclassified).

    Returns:
        ``AttackResult`` with ``targets`` and ``target_success`` set.
    """
    return _pgd("pgd-t", **locals())
