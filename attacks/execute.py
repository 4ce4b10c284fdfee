"""The executor: runs a suite's plan (``attacks.plan``) and assembles its ``SuiteResult``.

For each stage in the plan's order it selects the stage's samples from what the earlier
stages found, draws the stage's generator, runs it (``attacks.shards.run_stage``) through the
resume memo when there is one, and folds the outcome into the norm's outcomes: a stage that
raised is recorded as a ``core.attackrecords.Failure`` (the document's record) with its status
and message and leaves its samples not attacked, never robust by default of an attack. Every
stage but the clean pass is then reported to the progress callback or bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attacks.evaluator import Evaluator
from attacks.losses import NO_PREDICTION, predict
from attacks.outcomes import (
    AttackOutcome,
    NormOutcome,
    Piece,
    SuiteResult,
    merge_per_epsilon,
    outcome_of,
)
from attacks.plan import NormPlan, Plan, Stage
from attacks.presets import SuiteConfig
from attacks.result import AttackResult
from attacks.shards import StageRun, expected_cost_order, run_stage
from core.attackrecords import FAILED, NOT_APPLICABLE, AttackStatus, Failure
from torchutil import Memo, any_batch, child_generator, distributed, model_mode

__all__ = ["Progress", "execute"]

Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``, called after each stage of a suite."""


@dataclass(frozen=True)
class _Ran:
    """What running (or loading) one stage gave."""

    result: AttackResult | None
    status: AttackStatus
    message: str
    resumed: bool

    def failure(self, stage: Stage, epsilon: float | None) -> Failure:
        """The document's record of this stage's failure: its role and status are among the
        values ``Failure`` declares (the clean pass and ``"ok"`` are not)."""
        assert stage.attack is not None and stage.role != "clean"
        assert self.status == FAILED or self.status == NOT_APPLICABLE, self.status
        return Failure(
            stage=stage.role,
            label=stage.attack.label,
            epsilon=None if epsilon is None else float(epsilon),
            status=FAILED if self.status == FAILED else NOT_APPLICABLE,
            message=self.message,
        )


@dataclass
class _Found:
    """What the stages of one norm have found so far."""

    plan: NormPlan
    robust: Tensor | None = None
    sweep: AttackOutcome | None = None
    independent: AttackOutcome | None = None
    outcomes: list[AttackOutcome] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class _Executor:
    """Runs the stages of one plan, in order, keeping what they found."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        config: SuiteConfig,
        generator: torch.Generator,
        memo: Memo[str] | None,
        order: Tensor | None,
    ) -> None:
        self.model, self.x, self.y, self.config = model, x, y, config
        self.generator, self.memo, self.order = generator, memo, order
        self.num_forward = self.num_backward = 0
        self.everyone = torch.arange(x.shape[0], device=x.device)
        self.clean_correct: Tensor | None = None
        self.clean_nonfinite: Tensor | None = None

    def run(self, stage: Stage, index: Tensor) -> _Ran:
        """``stage`` on samples ``index``, with a generator drawn for it, or its stored
        outcome; its model evaluations counted either way."""
        generator = child_generator(self.generator)

        def compute() -> StageRun:
            return run_stage(
                stage, self.model, self.x, self.y, index, self.config, generator, self.order
            )

        if self.memo is None or stage.unit is None:
            done, resumed = compute(), False
        else:
            done, resumed = self.memo(stage.unit, compute)
        result, status, message = done
        if result is not None:
            self.num_forward += result.num_forward
            self.num_backward += result.num_backward
        return _Ran(result, status, message, resumed)

    def stage(self, stage: Stage, found: _Found | None) -> tuple[str, bool]:
        """Run ``stage`` and keep what it found under its norm; its progress label and
        whether it was resumed."""
        if stage.role == "clean":
            self.clean_correct, self.clean_nonfinite = self._clean()
            return stage.label, False
        assert found is not None and stage.attack is not None and stage.norm is not None
        spec, norm = stage.attack, stage.norm
        if stage.role == "sweep":
            ran = self.run(stage, self.everyone)
            if ran.result is None:
                found.failures.append(ran.failure(stage, None))
            else:
                found.sweep = outcome_of(spec, norm, ran.result, self.everyone, self.x)
            return stage.label, ran.resumed
        if stage.role == "independent-sweep":
            if found.sweep is None:
                return f"{stage.label} (skipped: the sweep did not complete)", False
            if stage.subsample == 0:
                return stage.label, False
            num_samples = self.x.shape[0]
            size = min(stage.subsample, num_samples)
            subset = torch.randperm(
                num_samples, generator=self.generator, device=self.generator.device
            )
            subset = subset[:size].sort().values.to(self.x.device)
            ran = self.run(stage, subset)
            if ran.result is None:
                found.failures.append(ran.failure(stage, None))
            else:
                found.independent = outcome_of(spec, norm, ran.result, subset, self.x)
            return stage.label, ran.resumed
        return stage.label, self._attack(stage, found)

    def _attack(self, stage: Stage, found: _Found) -> bool:
        """One main-list stage: its piece of the attack's outcome, the outcome once the
        attack's last epsilon has run; whether it was resumed."""
        assert stage.attack is not None and stage.norm is not None
        assert self.clean_correct is not None
        epsilons = found.plan.epsilons
        if found.robust is None:
            found.robust = self.clean_correct.unsqueeze(0).repeat(len(epsilons), 1)
        resumed = False
        if stage.sweep_row is not None and found.sweep is not None:
            found.pieces.append(Piece(found.sweep.result, stage.sweep_row, self.everyone, "sweep"))
        else:
            todo = found.robust[stage.row] if stage.samples == "robust" else self.clean_correct
            index = todo.nonzero().squeeze(1)
            if index.numel() == 0:
                found.pieces.append(Piece(None, 0, index, "run"))
            else:
                ran = self.run(stage, index)
                resumed = ran.resumed
                if ran.result is None:
                    found.failures.append(ran.failure(stage, stage.epsilons[0]))
                    found.pieces.append(Piece(None, 0, index, "run", ran.status, ran.message))
                else:
                    found.pieces.append(Piece(ran.result, 0, index, "run"))
        if stage.row == len(epsilons) - 1:
            outcome, found.robust = merge_per_epsilon(
                stage.attack, stage.norm, epsilons, found.pieces, self.x, found.robust
            )
            found.outcomes.append(outcome)
            found.pieces = []
        return resumed

    def _clean(self) -> tuple[Tensor, Tensor]:
        """``[N]`` clean-correct and ``[N]`` clean logits not finite (``NO_PREDICTION``); under
        torch.distributed each batch is evaluated by one process."""
        model, x, config = self.model, self.x, self.config
        evaluator = Evaluator(model)
        step = config.batch_size or max(x.shape[0], 1)

        def batch(number: int) -> Tensor:
            chunk = x[number * step : (number + 1) * step]
            return predict(any_batch(evaluator.logits, chunk)).cpu()

        with model_mode(model, train=config.stochastic):
            predictions = torch.cat(distributed.shared_map(-(-x.shape[0] // step), batch))
        # Every evaluation counts, whichever process made it.
        self.num_forward += x.shape[0]
        predictions = predictions.to(x.device)
        return predictions == self.y, predictions == NO_PREDICTION


def execute(
    plan: Plan,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: SuiteConfig,
    generator: torch.Generator,
    *,
    progress: Progress | bool = False,
    memo: Memo[str] | None = None,
) -> SuiteResult:
    """Run ``plan``, the plan of ``config`` for ``x`` (``attacks.plan.plan_suite``), and
    return the suite's result (see ``attacks.suite.run_suite``, which checks the inputs)."""
    start = time.perf_counter()
    seed = generator.initial_seed()
    report = _Reporter(progress, plan.total)
    # The bar is closed however the suite ends, so that an error or Ctrl-C message is
    # printed on a line of its own, not after a half-drawn bar.
    try:
        # Under torch.distributed, each stage's samples are shared out by expected cost.
        order = expected_cost_order(model, x, y, config) if distributed.world_size() > 1 else None
        executor = _Executor(model, x, y, config, generator, memo, order)
        found = {item.norm: _Found(item) for item in plan.norms}
        for stage in plan.stages:
            label, resumed = executor.stage(
                stage, None if stage.norm is None else found[stage.norm]
            )
            if stage.reported:
                report(label, resumed)
        clean_correct, clean_nonfinite = executor.clean_correct, executor.clean_nonfinite
        assert clean_correct is not None and clean_nonfinite is not None
        outcomes = tuple(
            NormOutcome(
                norm=item.plan.norm,
                epsilons=item.plan.epsilons,
                robust=(
                    clean_correct.unsqueeze(0).repeat(len(item.plan.epsilons), 1)
                    if item.robust is None
                    else item.robust
                ),
                attacks=tuple(item.outcomes),
                sweep_epsilons=item.plan.sweep_epsilons,
                unbounded_epsilon=item.plan.unbounded_epsilon,
                sweep=item.sweep,
                independent_sweep=item.independent,
                failures=tuple(item.failures),
            )
            for item in found.values()
        )
        return SuiteResult(
            config=config,
            seed=seed,
            num_samples=x.shape[0],
            labels=y.cpu(),
            clean_correct=clean_correct,
            clean_nonfinite=clean_nonfinite,
            norms=outcomes,
            num_forward=executor.num_forward,
            num_backward=executor.num_backward,
            wall_time=time.perf_counter() - start,
        )
    finally:
        report.close()


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
