"""Models with known gradient masking, built from a sound model: ground truth for the checks.

Each wrapper keeps the wrapped model's predictions (up to its mechanism) and breaks gradient
based evaluation in one documented way:

- :class:`SaturatedLogits`: logits multiplied by 10^4; the softmax saturates and the
  cross-entropy gradient underflows to zero (vanishing gradients).
- :class:`QuantizedInput`: inputs rounded to a few grey levels; the gradient is zero almost
  everywhere and the function is piecewise constant (shattered gradients).
- :class:`DropoutAtTest`: dropout-family layers stay active in eval mode (stochastic
  gradients and predictions).
- :class:`WrongGradient`: the identity in the forward pass whose backward pass returns the
  negated gradient (a non-differentiable or obfuscated layer).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from checkpoints.layers import QSD, Dropout, NormOut

__all__ = ["MASKED_MODELS", "QuantizedInput", "SaturatedLogits", "DropoutAtTest", "WrongGradient"]


class SaturatedLogits(nn.Module):
    """``scale * model(x)``: same predictions, saturated softmax."""

    def __init__(self, model: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.model = model
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale


class QuantizedInput(nn.Module):
    """``model(round(x * levels) / levels)``: zero input gradient almost everywhere."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model = model
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


class DropoutAtTest(nn.Module):
    """The model with its dropout-family layers left in training mode after ``eval()``.

    A model without such layers gets an inverted dropout on its input.
    """

    def __init__(self, model: nn.Module, p: float = 0.2) -> None:
        super().__init__()
        self.model = model
        kinds = (NormOut, QSD, Dropout, nn.Dropout)
        has_layers = any(isinstance(m, kinds) for m in model.modules())
        self.input_dropout: nn.Module = nn.Identity() if has_layers else Dropout(p)
        self._kinds = kinds

    def train(self, mode: bool = True) -> DropoutAtTest:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, self._kinds):
                module.training = True
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.input_dropout(x))


class _NegatedGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return -grad


class WrongGradient(nn.Module):
    """``model(x)`` through an identity whose backward pass negates the gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_NegatedGradient.apply(x))


MASKED_MODELS: dict[str, type[nn.Module]] = {
    "saturated-logits": SaturatedLogits,
    "quantized-input": QuantizedInput,
    "test-time-dropout": DropoutAtTest,
    "wrong-gradient": WrongGradient,
}
