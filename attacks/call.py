"""What every attack does around its own batch function, written once.

An attack's public function checks its own settings, then ``prepare``: the inputs, the threat
model, the bounds (with ``unit_box``, refused unless they are ``[0, 1]``, for the attacks
that run through pyautoattack), the sample ids, the generator and its one stage seed, and the
evaluator with its EOT passes (``attacks.engine.setup``). It writes its batch function
against ``Call.config`` and hands it to ``Call.run``, which runs it in the engine with the
settings every attack shares (``nested``, ``batch_size``, ``stochastic``).

The attacks that call pyautoattack on a batch share the rest: ``library_seed`` wraps the
evaluator for the library and draws the batch's seed from the call's generator, and
``library_batch`` runs the library under a forked global RNG with the library's gradients and
torch's own default device, then judges its examples (cast to the inputs' dtype) as a
``BatchResult`` with the final margin loss as a one-point trace, which ``Call.run_library``
tells the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Required, TypedDict, Unpack

import torch
from torch import Tensor, nn

from attacks.engine import Batch, BatchAttack, BatchResult, Setup, run_attack, setup
from attacks.evaluator import CountingModule, library_gradients
from attacks.losses import fooled, judged_margin
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Norm
from torchutil import draw_seed, forked_global_rng, torch_default_device


class RunSettings(TypedDict, total=False):
    """What an attack tells ``run_attack`` about itself besides its name and batch function."""

    trace_length: Required[int]
    objective: Required[str]
    params: Required[dict[str, Any]]
    backend: Required[str]
    targeted: bool
    gradients: bool


@dataclass(frozen=True)
class Call:
    """One attack call, checked: what the engine needs besides the batch function.

    Attributes:
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: inputs ``[N, ...]``, never modified.
        y: true labels ``[N]``.
        config: the checked threat model, generator, evaluator and sample ids.
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    config: Setup

    def run(
        self,
        name: str,
        attack: BatchAttack,
        *,
        engine: tuple[bool, int | None, bool],
        **settings: Unpack[RunSettings],
    ) -> AttackResult:
        """``attacks.engine.run_attack`` on this call's inputs and config.

        Args:
            name: the attack's name in the result.
            attack: attacks one batch at one epsilon.
            engine: ``(nested, batch_size, stochastic)``, as every attack takes them.
            settings: the rest of ``run_attack``'s settings.
        """
        nested, batch_size, stochastic = engine
        return run_attack(
            name,
            self.model,
            self.x,
            self.y,
            self.config,
            attack,
            nested=nested,
            batch_size=batch_size,
            stochastic=stochastic,
            **settings,
        )

    def run_library(
        self,
        name: str,
        attack: BatchAttack,
        *,
        engine: tuple[bool, int | None, bool],
        params: dict[str, Any],
    ) -> AttackResult:
        """``run`` for an attack whose batches are ``library_batch``'s: pyautoattack's
        examples, traced by their final margin loss alone, no gradients of its own recorded."""
        return self.run(
            name,
            attack,
            engine=engine,
            trace_length=1,
            objective="cw",
            params=params,
            backend="pyautoattack",
            gradients=False,
        )


def prepare(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    threat: tuple[Norm | str, Bounds | Sequence[float]],
    randomness: tuple[torch.Generator | int | None, Tensor | None],
    *,
    eot_samples: int = 1,
    unit_box: str | None = None,
) -> Call:
    """Check an attack call's common arguments (``attacks.engine.setup``).

    Args:
        model, x, y, epsilons: as the attack takes them.
        threat: ``(norm, bounds)``.
        randomness: ``(generator, sample_ids)``.
        eot_samples: forward passes averaged per gradient.
        unit_box: the attack's name where it runs through pyautoattack, which clips to
            ``[0, 1]``: other bounds are refused.

    Raises:
        ValueError: for inputs, epsilons, norm, bounds or sample ids that ``setup`` refuses,
            or bounds other than ``[0, 1]`` with ``unit_box``.
    """
    norm, bounds = threat
    generator, sample_ids = randomness
    config = setup(
        model,
        x,
        y,
        epsilons,
        norm=norm,
        bounds=bounds,
        generator=generator,
        eot_samples=eot_samples,
        sample_ids=sample_ids,
    )
    if unit_box is not None:
        check_unit_box(unit_box, config.bounds)
    return Call(model, x, y, config)


def check_unit_box(name: str, bounds: Bounds) -> None:
    """pyautoattack clips to ``[0, 1]``; refuse other bounds instead of clipping wrongly."""
    if (bounds.lower, bounds.upper) != (0.0, 1.0):
        raise ValueError(
            f"{name} runs through pyautoattack, which clips to [0, 1]; got bounds "
            f"({bounds.lower}, {bounds.upper}); rescale the model's input to [0, 1]"
        )


def pyautoattack_norm(norm: Norm) -> str:
    """The norm's name in pyautoattack."""
    return "Linf" if norm is Norm.LINF else "L2"


def batch_outcome(batch: Batch, adversarial: Tensor, logits: Tensor) -> BatchResult:
    """The outcome of a library attack that returns only examples, with ``logits`` at them:
    the final margin loss as a one-point trace, no queries counted per sample."""
    return BatchResult(
        adversarial=adversarial,
        logits=logits,
        last_success=fooled(logits, batch.y),
        loss_trace=(-judged_margin(logits, batch.y)).unsqueeze(0),
        queries=torch.zeros_like(batch.y),
    )


def library_seed(config: Setup) -> tuple[CountingModule, int]:
    """The evaluator wrapped as a module for a library, and the batch's seed for it, drawn
    from the call's generator (one draw per batch)."""
    return CountingModule(config.evaluator), draw_seed(config.generator, bound=2**31)


def library_batch(config: Setup, batch: Batch, perturb: Callable[[], Tensor]) -> BatchResult:
    """Run ``perturb`` (a library's attack on ``batch``, returning its examples) and judge them.

    It runs under a forked global RNG (the caller's state is untouched), with the library's
    gradients of the model and with torch's own default device: pyautoattack creates tensors
    on the default device and then moves them (``torch.randn(x.shape).to(self.device)``).
    """
    with (
        forked_global_rng(batch.x0.device),
        library_gradients(config.evaluator.model, batch.x0),
        torch_default_device(),
    ):
        adversarial = perturb().detach().to(batch.x0.dtype)
    return batch_outcome(batch, adversarial, config.evaluator.logits(adversarial))
