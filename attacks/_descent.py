"""The projected-gradient run of PGD and PGD-T, written once for every norm and target.

The norm enters only through its ``Geometry``. Each iteration costs one forward and one
backward pass on the samples still being attacked, and the forward pass also judges the
current iterate (which is already projected and clipped), so keeping the best iterate needs no
extra pass; only the final iterate needs one forward pass of its own. A run draws one random
start per sample it attacks, from that sample's generator (see ``attacks.pgd`` for the order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from attacks.evaluator import Evaluator
from attacks.losses import NO_PREDICTION, Objective, predict, zero_nonfinite_
from attacks.threat import Bounds, Geometry

Keep = Literal["best", "last"]

UNTARGETED_STOP = 1
"""The rank at which a run stops attacking a sample when it stops early: misclassified."""
TARGETED_STOP = 2
"""The same for a targeted run: the target reached."""
NONFINITE_RANK = -1
"""The rank of an iterate whose logits are not finite (no prediction)."""
NO_RANK = -2
"""The rank of a sample no iterate has been judged for yet."""


@dataclass
class State:
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
    def empty(cls, x0: Tensor, num_classes: int, num_steps: int) -> State:
        n = x0.shape[0]
        return cls(
            best_x=x0.clone(),
            best_logits=torch.zeros(n, num_classes, dtype=x0.dtype, device=x0.device),
            best_rank=torch.full((n,), NO_RANK, dtype=torch.long, device=x0.device),
            best_loss=torch.full((n,), float("-inf"), dtype=x0.dtype, device=x0.device),
            best_target=torch.full((n,), -1, dtype=torch.long, device=x0.device),
            last_rank=torch.zeros(n, dtype=torch.long, device=x0.device),
            trace=torch.full((num_steps + 1, n), float("nan"), dtype=x0.dtype, device=x0.device),
            first_grad_norm=torch.full((n,), float("nan"), dtype=x0.dtype, device=x0.device),
            queries=torch.zeros(n, dtype=torch.long, device=x0.device),
            first_step=torch.full((n,), -1, dtype=torch.long, device=x0.device),
        )


@dataclass(frozen=True)
class Descent:
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
class Best:
    """The best iterate so far of the samples one run attacks, row by row with them.

    A run reads these rows from ``State`` once, updates them without indexing the batch at
    every step, and writes them back when samples leave the run and at its end.
    """

    x: Tensor
    logits: Tensor
    rank: Tensor
    loss: Tensor
    target: Tensor
    first_step: Tensor

    @classmethod
    def read(cls, state: State, rows: Tensor) -> Best:
        return cls(
            state.best_x[rows],
            state.best_logits[rows],
            state.best_rank[rows],
            state.best_loss[rows],
            state.best_target[rows],
            state.first_step[rows],
        )

    def write(self, state: State, rows: Tensor, which: Tensor | None = None) -> None:
        """Store these rows (or those selected by the mask ``which``) at ``rows`` of the batch."""
        part = self if which is None else self.select(which)
        state.best_x[rows] = part.x
        state.best_logits[rows] = part.logits
        state.best_rank[rows] = part.rank
        state.best_loss[rows] = part.loss
        state.best_target[rows] = part.target
        state.first_step[rows] = part.first_step

    def select(self, which: Tensor) -> Best:
        return Best(
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


def descend(
    run: Descent,
    state: State,
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
    best = Best.read(state, active)

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
        rank = torch.where(prediction == NO_PREDICTION, NONFINITE_RANK, rank)
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
