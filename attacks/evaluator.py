"""The attacks' one way to evaluate a model: counted forward/backward passes, EOT, library
wrappers.

A model is any ``nn.Module`` mapping inputs in the bounds to logits ``[N, C]``. Attacks never
touch it directly; they go through an ``Evaluator`` that counts every sample that passes
through it, averages over EOT draws and watches for NaN/Inf. The engine puts the model in the
requested mode for the duration (``torchutil.model_mode``).

A model wrapped in ``ChunkedModel`` is evaluated at most ``chunk_size`` samples at a time,
whatever batch the attack works on: the chunk bounds the memory of the model's activations,
while the attack's batch, and so its random draws and its results, stay the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attacks.losses import is_finite_rows, zero_nonfinite_
from core.document import BatchSize
from torchutil import chosen_batch_size

NO_INPUT_GRADIENT = "the input gradient does not exist"
"""The reason recorded for a gradient attack on a model whose output has no input gradient."""


class NoInputGradient(RuntimeError):
    """The model's output does not depend differentiably on its input (the graph is cut).

    Raised where a gradient is asked for: the output does not require a gradient (a
    comparison, an integer cast, ``.detach()`` or a round trip through numpy cut the graph),
    or autograd finds no path from the input to it.
    """

    def __init__(self, detail: str = "") -> None:
        super().__init__(NO_INPUT_GRADIENT + (f" ({detail})" if detail else ""))


def input_gradient_exists(model: nn.Module, x: Tensor) -> bool:
    """Whether the model's summed output has a gradient with respect to ``x`` ``[n, ...]``.

    One forward and (if the output requires a gradient) one backward pass, in the model's
    current mode; an exactly zero gradient exists, a cut graph does not.
    """
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        output = model(x_var)
        if not output.requires_grad:
            return False
        (grad,) = torch.autograd.grad(output.sum(), x_var, allow_unused=True)
    return grad is not None


_AUTOGRAD_ERRORS = ("does not require grad", "not have been used in the graph")
"""What autograd says, inside a reference library, when the input gradient does not exist."""


@contextlib.contextmanager
def library_gradients(model: nn.Module, x: Tensor) -> Iterator[None]:
    """Around a reference library's attack on ``x``: turn autograd's error about a missing
    input gradient into ``NoInputGradient``, once a direct check on one sample confirms that
    the gradient does not exist; every other error passes unchanged."""
    try:
        yield
    except RuntimeError as err:
        if isinstance(err, NoInputGradient) or not any(p in str(err) for p in _AUTOGRAD_ERRORS):
            raise
        if input_gradient_exists(model, x[:1]):
            raise
        raise NoInputGradient("autograd finds no path from the input to the output") from err


class ChunkedModel(nn.Module):
    """``model`` evaluated at most ``chunk_size`` samples at a time.

    Samples do not interact in a model without batch-coupled layers, so chunking changes the
    memory, not the outputs (up to floating-point rounding of a kernel that blocks its work by
    the batch size). Under autograd each chunk is checkpointed, so that only one chunk's
    activations are alive at a time, at the cost of one more forward pass of the chunk in the
    backward pass; a batch no larger than the chunk runs as it is.

    Attributes:
        model: the wrapped model.
        batch: the chunk size as the result document records it (``core.document.BatchSize``):
            the one chosen (a number given is ``fixed``), halved after each out-of-memory
            error.
    """

    def __init__(self, model: nn.Module, batch: BatchSize | int) -> None:
        super().__init__()
        if not isinstance(batch, BatchSize):
            batch = chosen_batch_size(int(batch), "fixed")
        if batch.size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {batch.size}")
        self.model = model
        self.batch = batch
        self.training = model.training

    @property
    def chunk_size(self) -> int:
        """Samples per evaluation."""
        return self.batch.size

    @property
    def halvings(self) -> int:
        """Times the chunk size was halved after an out-of-memory error."""
        return self.batch.halvings

    def halve(self) -> None:
        """After an out-of-memory error: half the chunk size (ValueError at one sample)."""
        if self.chunk_size <= 1:
            raise ValueError("out of memory with chunks of one sample; nothing left to halve")
        self.batch = self.batch.halved()

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] <= self.chunk_size:
            return self.model(x)  # type: ignore[no-any-return]
        pieces = x.split(self.chunk_size)
        if torch.is_grad_enabled() and x.requires_grad:
            outputs = [checkpoint(self.model, piece, use_reentrant=False) for piece in pieces]
        else:
            outputs = [self.model(piece) for piece in pieces]
        return torch.cat(outputs)  # type: ignore[arg-type]


class Evaluator:
    """Counted access to a model.

    Attributes:
        num_forward: sample-forward passes so far (one sample through the model once).
        num_backward: sample-backward passes so far.
        nonfinite_logits: sample evaluations whose logits held NaN or Inf.
        nonfinite_gradients: sample gradients that held NaN or Inf.
    """

    def __init__(self, model: nn.Module, *, eot_samples: int = 1) -> None:
        if eot_samples < 1:
            raise ValueError(f"eot_samples must be at least 1, got {eot_samples}")
        self.model = model
        self.chunks = model if isinstance(model, ChunkedModel) else None
        self.eot_samples = eot_samples
        self.num_forward = 0
        self.num_backward = 0
        # Counted on the model's device and read once at the end: no host sync per pass.
        self._nonfinite_logits: Tensor | int = 0
        self._nonfinite_gradients: Tensor | int = 0

    def counters(self) -> tuple[int, int, Tensor | int, Tensor | int]:
        """The counts so far, for `restore_counters` when a computation is redone."""
        return (
            self.num_forward,
            self.num_backward,
            self._nonfinite_logits,
            self._nonfinite_gradients,
        )

    def restore_counters(self, counters: tuple[int, int, Tensor | int, Tensor | int]) -> None:
        (
            self.num_forward,
            self.num_backward,
            self._nonfinite_logits,
            self._nonfinite_gradients,
        ) = counters

    @property
    def nonfinite_logits(self) -> int:
        return int(self._nonfinite_logits)

    @property
    def nonfinite_gradients(self) -> int:
        return int(self._nonfinite_gradients)

    def _check_logits(self, logits: Tensor) -> None:
        if logits.dim() != 2:
            raise ValueError(
                f"the model must return logits of shape [N, C], got {tuple(logits.shape)}"
            )
        self._nonfinite_logits = self._nonfinite_logits + (~is_finite_rows(logits)).sum()

    def logits(self, x: Tensor) -> Tensor:
        """Logits ``[N, C]`` of ``x`` ``[N, ...]`` without a graph, averaged over EOT draws."""
        with torch.no_grad():
            total = self.model(x)
            for _ in range(self.eot_samples - 1):
                total = total + self.model(x)
        self.num_forward += x.shape[0] * self.eot_samples
        logits = total / self.eot_samples if self.eot_samples > 1 else total
        self._check_logits(logits)
        return logits

    def drawn_logits(self, x: Tensor) -> Tensor:
        """Logits ``[N, C]`` of one forward pass of ``x`` ``[N, ...]``, without a graph,
        whatever ``eot_samples``: one draw of a stochastic model, the prediction a user of it
        gets (and the one AutoAttack judges by)."""
        with torch.no_grad():
            logits = self.model(x)
        self.num_forward += x.shape[0]
        self._check_logits(logits)
        return logits  # type: ignore[no-any-return]

    def value_and_grad(
        self, x: Tensor, loss_fn: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Logits, per-sample loss and input gradient, each averaged over the EOT draws.

        Args:
            x: inputs ``[N, ...]``.
            loss_fn: maps logits ``[N, C]`` to per-sample losses ``[N]``.

        Returns:
            ``(logits [N, C], loss [N], grad [N, ...])``. Samples do not interact in eval mode,
            so the gradient of the summed loss is each sample's own gradient.
        """
        logits, loss, grad = self._value_and_grad(x, loss_fn)
        for _ in range(self.eot_samples - 1):
            more_logits, more_loss, more_grad = self._value_and_grad(x, loss_fn)
            logits, loss, grad = logits + more_logits, loss + more_loss, grad + more_grad
        self.num_forward += x.shape[0] * self.eot_samples
        self.num_backward += x.shape[0] * self.eot_samples
        if self.eot_samples > 1:
            logits = logits / self.eot_samples
            loss = loss / self.eot_samples
            grad = grad / self.eot_samples
        self._check_logits(logits)
        self._nonfinite_gradients = self._nonfinite_gradients + (~is_finite_rows(grad)).sum()
        return logits, loss, grad

    def _value_and_grad(
        self, x: Tensor, loss_fn: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            logits = self.model(x_var)
            if not logits.requires_grad:
                raise NoInputGradient("the output does not require a gradient")
            loss = loss_fn(logits)
            (grad,) = torch.autograd.grad(loss.sum(), x_var, allow_unused=True)
        if grad is None:
            raise NoInputGradient("autograd finds no path from the input to the output")
        return logits.detach(), loss.detach(), grad


class _FiniteGradient(torch.autograd.Function):
    """The identity, whose backward pass zeroes the NaN and infinite entries of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return zero_nonfinite_(grad.clone())


class CountingModule(nn.Module):
    """Wraps a model for a reference library so that its passes land in our counters.

    A forward with gradients enabled on its input counts as a forward and a backward: the
    reference attacks differentiate every forward they record a graph for. Logits holding NaN
    or Inf are counted like the evaluator's own, and the input gradient the library receives
    has its non-finite entries set to zero, the rule of the native loops (cleverhans' L2 step
    asserts on a NaN gradient, and a NaN step would spread over the whole example).
    """

    def __init__(self, evaluator: Evaluator) -> None:
        super().__init__()
        self.model = evaluator.model
        self.evaluator = evaluator
        # Only the flag: the wrapped model's modes are already set and must not change.
        self.training = evaluator.model.training

    def forward(self, x: Tensor) -> Tensor:
        self.evaluator.num_forward += x.shape[0]
        wants_gradient = torch.is_grad_enabled() and x.requires_grad
        if wants_gradient:
            self.evaluator.num_backward += x.shape[0]
        output = self.model(_FiniteGradient.apply(x) if wants_gradient else x)
        if wants_gradient and not output.requires_grad:
            # The library would fail later with autograd's own message; say what it means.
            raise NoInputGradient("the output does not require a gradient")
        self.evaluator._check_logits(output.detach())
        return output
