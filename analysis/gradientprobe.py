"""The model's input gradient on clean data: whether it exists, how often the cross-entropy
gradient is zero or not finite, and each sample's gradient norm and clean margin.

One of the probes that :mod:`analysis.probes` runs; its gradient helpers serve the finite
differences too.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.boundary import error_line
from torchutil import shared_map


def input_gradient(function: Any, inputs: Tensor) -> tuple[Tensor | None, Tensor | None, str]:
    """``(gradient of function(inputs).sum(), output, "")``, or ``(None, output, why)`` when the
    output has no gradient with respect to the input."""
    inputs = inputs.detach().clone().requires_grad_(True)
    output = function(inputs)
    if not output.requires_grad:
        return (
            None,
            output.detach(),
            (
                "the output does not require grad: the autograd graph is cut (detach, a "
                "comparison, an integer cast or a NumPy round trip)"
            ),
        )
    try:
        (gradient,) = torch.autograd.grad(output.sum(), inputs, allow_unused=True)
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the model's backward pass
        return None, output.detach(), f"the backward pass raised: {raised_message(error)}"
    if gradient is None:
        return (
            None,
            output.detach(),
            (
                "the output is not connected to the input in the autograd graph (it depends on "
                "the parameters only; the input passes through a non-differentiable operation)"
            ),
        )
    return gradient, output.detach(), ""


def raised_message(error: BaseException) -> str:
    """``Type: what failed``, in one line."""
    return error_line(f"{type(error).__name__}: {error}")


def _cross_entropy(model: nn.Module, y: Tensor) -> Any:
    return lambda inputs: F.cross_entropy(model(inputs), y, reduction="none")


def gradient_census(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int
) -> tuple[int, int, tuple[float, ...], str, str]:
    """Zero and non-finite cross-entropy input gradients over all of ``x`` and each one's L2
    norm, or the reason the input gradient does not exist or was not measured, and what the
    model raised (then it was not measured). Under torch.distributed each batch is computed by
    one process."""

    def census(number: int) -> tuple[int, int, Tensor, str, str]:
        start = number * batch_size
        labels = y[start : start + batch_size]
        try:
            gradient, _, note = input_gradient(
                _cross_entropy(model, labels), x[start : start + batch_size]
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - the model's own error is a finding
            raised = raised_message(error)
            note = f"not measured: the model raised {raised} when its input requires grad"
            return 0, 0, torch.empty(0, dtype=torch.float64, device="cpu"), note, raised
        if gradient is None:
            return 0, 0, torch.empty(0, dtype=torch.float64, device="cpu"), note, ""
        flat = gradient.flatten(1)
        zero = int((flat.abs().amax(1) == 0).sum())
        nonfinite = int((~torch.isfinite(flat)).any(1).sum())
        return zero, nonfinite, flat.double().norm(dim=1).cpu(), "", ""

    batches = shared_map(-(-len(x) // batch_size), census)
    # A batch where the model raised outranks one without a gradient: nothing is measured.
    note, error = next(((batch[3], batch[4]) for batch in batches if batch[4]), ("", ""))
    note = note or next((batch[3] for batch in batches if batch[3]), "")
    if note:
        return len(x), 0, (), note, error
    zero = sum(batch[0] for batch in batches)
    nonfinite = sum(batch[1] for batch in batches)
    return zero, nonfinite, six_digits(torch.cat([batch[2] for batch in batches])), "", ""


def six_digits(values: Tensor) -> tuple[float, ...]:
    """Six significant digits: enough for a distribution, and a short document."""
    return tuple(float(f"{v:.6g}") for v in values.tolist())


def logit_margins(logits: Tensor, y: Tensor) -> Tensor:
    """True-class logit minus the largest other, per row (NaN where a logit is not finite)."""
    logits = logits.double()
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -math.inf).amax(1)
    margin = true - others
    return torch.where(torch.isfinite(logits).all(1), margin, torch.full_like(margin, math.nan))
