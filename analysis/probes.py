"""Direct measurements of the model that the red-flag checks read besides the attacks.

- stochasticity: repeated forward passes in the evaluation mode, compared;
- train mode: submodules whose ``training`` flag stays on after ``eval()``;
- probability outputs: rows in [0, 1] that sum to 1;
- non-finite logits and gradients on clean data;
- gradients against finite differences of the loss along random directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ModelProbes", "probe_model"]


@dataclass(frozen=True)
class ModelProbes:
    """What the probes saw.

    Attributes:
        num_samples: samples probed (the first of the evaluation set).
        clean_zero_gradient_fraction: fraction of *all* evaluation samples whose cross-entropy
            input gradient at the clean point is exactly zero (a saturated softmax).
        stochastic: repeated forward passes gave different logits.
        max_repeat_difference: largest absolute logit difference between repeats.
        prediction_flip_fraction: fraction of samples whose prediction changed between repeats.
        train_mode_modules: names of submodules still in training mode after ``eval()``.
        probability_outputs: every output row lies in [0, 1] and sums to 1.
        nonfinite_logits: samples with NaN or Inf logits.
        nonfinite_gradients: samples with NaN or Inf input gradients.
        fd_informative: sample-direction pairs where the loss changed measurably.
        fd_disagreement_fraction: fraction of informative pairs where the gradient's
            directional derivative and the central finite difference disagree (sign differs or
            relative error above ``fd_tolerance``).
        fd_step: finite-difference step in input space.
        fd_tolerance: relative error above which a pair disagrees.
    """

    num_samples: int
    clean_zero_gradient_fraction: float
    stochastic: bool
    max_repeat_difference: float
    prediction_flip_fraction: float
    train_mode_modules: tuple[str, ...]
    probability_outputs: bool
    nonfinite_logits: int
    nonfinite_gradients: int
    fd_informative: int
    fd_disagreement_fraction: float
    fd_step: float
    fd_tolerance: float

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["train_mode_modules"] = list(self.train_mode_modules)
        return data


def _loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y, reduction="none")


def _margin(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Best other logit minus the true logit: piecewise linear for ReLU networks and, unlike
    the cross-entropy, not flat on confidently classified samples."""
    logits = model(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - true


def _zero_gradient_count(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> int:
    count = 0
    for start in range(0, len(x), batch_size):
        inputs = x[start : start + batch_size].clone().requires_grad_(True)
        loss = _loss(model, inputs, y[start : start + batch_size])
        (gradient,) = torch.autograd.grad(loss.sum(), inputs)
        count += int((gradient.flatten(1).abs().amax(1) == 0).sum())
    return count


def probe_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    *,
    num_samples: int = 64,
    num_repeats: int = 4,
    num_directions: int = 4,
    fd_step: float = 1e-3,
    fd_tolerance: float = 0.5,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 500,
) -> ModelProbes:
    """Probe ``model`` (evaluated in eval mode) on the first ``num_samples`` of ``x``.

    The finite-difference check compares ``g · d`` with ``(M(x + h d) - M(x - h d)) / 2h`` for
    the margin M (best other logit minus true logit) and unit random directions ``d``
    (L2-normalised Gaussian), sample by sample. Pairs whose two estimates are both below 1e-4
    (a flat function) are uninformative and not counted.
    """
    was_training = model.training
    model.eval()
    try:
        zero_gradients = _zero_gradient_count(model, x, y, batch_size)
        all_samples = len(x)
        x = x[:num_samples]
        y = y[:num_samples]
        with torch.no_grad():
            first = model(x)
            repeats = [model(x) for _ in range(num_repeats - 1)]
        difference = max((float((r - first).abs().max()) for r in repeats), default=0.0)
        flips = torch.zeros(len(x), dtype=torch.bool)
        for r in repeats:
            flips |= r.argmax(1) != first.argmax(1)
        train_modules = tuple(name or "<model>" for name, m in model.named_modules() if m.training)
        rows = first.double()
        probability = bool(
            ((rows >= 0) & (rows <= 1)).all()
            and torch.allclose(rows.sum(1), torch.ones(len(rows), dtype=rows.dtype), atol=1e-4)
        )
        nonfinite_logits = int((~torch.isfinite(first)).any(1).sum())

        inputs = x.clone().requires_grad_(True)
        loss = _loss(model, inputs, y)
        (gradient,) = torch.autograd.grad(loss.sum(), inputs)
        nonfinite_gradients = int((~torch.isfinite(gradient)).flatten(1).any(1).sum())

        # Directions stay inside the box: evaluate at points pulled inward by one step.
        low, high = bounds
        centre = x.clamp(low + fd_step, high - fd_step)
        inputs = centre.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(_margin(model, inputs, y).sum(), inputs)
        informative = 0
        disagree = 0
        with torch.no_grad():
            for _ in range(num_directions):
                direction = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                direction /= direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
                analytic = (gradient * direction).flatten(1).sum(1).double()
                plus = _margin(model, centre + fd_step * direction, y).double()
                minus = _margin(model, centre - fd_step * direction, y).double()
                numeric = (plus - minus) / (2 * fd_step)
                scale = torch.maximum(analytic.abs(), numeric.abs())
                mask = scale > 1e-4
                wrong = (torch.sign(analytic) != torch.sign(numeric)) | (
                    (analytic - numeric).abs() > fd_tolerance * scale
                )
                informative += int(mask.sum())
                disagree += int((wrong & mask).sum())
    finally:
        model.train(was_training)
    return ModelProbes(
        num_samples=len(x),
        clean_zero_gradient_fraction=zero_gradients / all_samples if all_samples else 0.0,
        stochastic=difference > 0,
        max_repeat_difference=difference,
        prediction_flip_fraction=float(flips.double().mean()) if len(x) else 0.0,
        train_mode_modules=train_modules,
        probability_outputs=probability,
        nonfinite_logits=nonfinite_logits,
        nonfinite_gradients=nonfinite_gradients,
        fd_informative=informative,
        fd_disagreement_fraction=disagree / informative if informative else 0.0,
        fd_step=fd_step,
        fd_tolerance=fd_tolerance,
    )
