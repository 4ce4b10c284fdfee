"""The input gradient against finite differences of a fixed class margin along random
directions, at several step sizes, in float64 where the model allows it.

One of the probes that :mod:`analysis.probes` runs.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from analysis.gradientprobe import input_gradient

FD_ROUNDING_ULPS = 100.0
"""Rounding allowance of a finite difference: this many units in the last place of the largest
logit (of the evaluation precision), divided by the step."""


def double_copy(model: nn.Module, probe: Tensor) -> tuple[nn.Module, str]:
    """A float64 copy of ``model`` in the same mode, or the model itself and why not."""
    try:
        with warnings.catch_warnings():
            # TorchScript modules warn about reading .grad of their parameters while casting.
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor")
            double = copy.deepcopy(model).double()
        with torch.no_grad():
            output = double(probe.double())
    except torch.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any refusal of float64 (torch.jit.Error too)
        return model, f"float32: the model does not run in float64 ({type(error).__name__})"
    if not isinstance(output, Tensor) or output.dtype != torch.float64:
        return model, "float32: the model's float64 copy does not return float64 logits"
    return double, "float64"


def _pair_margin(logits: Tensor, y: Tensor, other: Tensor) -> Tensor:
    """``logits[other] - logits[y]`` per row: a fixed class pair, so no argmax can switch
    inside a step."""
    return logits.gather(1, other[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)


@dataclass(frozen=True)
class FiniteDifferences:
    informative: int
    nonfinite: int
    step_disagreement: tuple[float, ...]
    disagreeing: int
    median_ratio: float | None


def _fd_pairs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    steps: tuple[float, ...],
    tolerance: float,
    bounds: tuple[float, float],
) -> dict[str, Tensor] | str:
    """Directional derivatives of a fixed class margin against finite differences, per pair.

    At a centre ``c`` (the sample pulled inside the box and jittered), with the best other
    class ``j`` fixed at ``c`` and M = logit_j - logit_y, each sample gets one unit random
    direction ``d``; the gradient's ``a = ∇M(c)·d`` is compared at every step h with the
    central ``(M(c+hd) - M(c-hd)) / 2h``, forward ``(M(c+hd) - M(c)) / h`` and backward
    ``(M(c) - M(c-hd)) / h`` differences. An estimate agrees when
    ``|n - a| <= tolerance·max(|n|, |a|) + r/h``, r being the rounding allowance
    (``FD_ROUNDING_ULPS`` units in the last place of the largest logit). A ReLU or max-pool
    kink on one side of ``c`` within h spoils the central and that one-sided difference but
    not the other one, and kinks on both sides become rare as h shrinks; a wrong backward
    pass disagrees with all three at every h.

    The jitter (uniform, 1 % of the box) breaks the exact ties of the data (identical pixels
    give identical pre-activations and tied max-pool windows, i.e. kinks at ``c`` itself).

    Returns:
        Boolean masks [N] ``counted`` (informative and finite), ``finite``, ``disagreeing``
        (at every step), ``step`` [S, N] (disagreeing per step) and ``ratio`` [N] (central
        difference over directional derivative at the smallest step), or a string saying why
        nothing could be measured.
    """
    dtype = x.dtype
    low, high = bounds
    width = high - low
    jitter = 0.01 * width
    inset = jitter + max(steps) * width
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=generator.device)
    centre = x.clamp(low + inset, high - inset) + jitter * (2 * noise - 1).to(x.device, dtype)
    direction = torch.randn(
        x.shape, generator=generator, dtype=torch.float64, device=generator.device
    ).to(x.device, dtype)
    direction /= direction.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))

    seen: dict[str, Tensor] = {}

    def margin(inputs: Tensor) -> Tensor:
        logits = model(inputs)
        other = logits.detach().scatter(1, y[:, None], float("-inf")).argmax(1)
        seen.update(logits=logits.detach(), other=other)
        return _pair_margin(logits, y, other)

    gradient, value, note = input_gradient(margin, centre)
    if gradient is None or value is None:
        return note
    other = seen["other"]
    analytic = (gradient * direction).flatten(1).sum(1)
    ulp = torch.finfo(dtype).eps * (seen["logits"].abs().amax(1) + 1)
    finite = torch.isfinite(value) & torch.isfinite(analytic) & torch.isfinite(ulp)
    informative = analytic != 0
    disagreeing = torch.ones_like(finite)
    per_step: list[Tensor] = []
    ratio = analytic
    with torch.no_grad():
        for h in (s * width for s in steps):
            plus = _pair_margin(model(centre + h * direction), y, other)
            minus = _pair_margin(model(centre - h * direction), y, other)
            allowance = FD_ROUNDING_ULPS * ulp / h
            estimates = ((plus - minus) / (2 * h), (plus - value) / h, (value - minus) / h)
            agree = torch.zeros_like(finite)
            for estimate in estimates:
                bound = tolerance * torch.maximum(estimate.abs(), analytic.abs()) + allowance
                agree |= (estimate - analytic).abs() <= bound
                informative |= estimate.abs() > allowance
            finite &= torch.isfinite(plus) & torch.isfinite(minus)
            disagreeing &= ~agree
            per_step.append(~agree)
            ratio = estimates[0] / torch.where(analytic != 0, analytic, torch.ones_like(analytic))
    counted = informative & finite
    return {
        "counted": counted,
        "finite": finite,
        "disagreeing": disagreeing & counted,
        "step": torch.stack(per_step) & counted,
        "ratio": torch.where(analytic != 0, ratio, torch.full_like(ratio, float("nan"))),
    }


def finite_differences(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    steps: tuple[float, ...],
    tolerance: float,
    bounds: tuple[float, float],
    batch_size: int,
) -> FiniteDifferences | str:
    """:func:`_fd_pairs` in batches of ``batch_size``, summarised."""
    low, high = bounds
    if not high - low > 2 * (0.01 + max(steps)) * (high - low):
        return f"the input box [{low}, {high}] is degenerate"
    parts: list[dict[str, Tensor]] = []
    for start in range(0, len(x), batch_size):
        part = _fd_pairs(
            model,
            x[start : start + batch_size],
            y[start : start + batch_size],
            generator,
            steps,
            tolerance,
            bounds,
        )
        if isinstance(part, str):
            return part
        parts.append(part)
    merged = {key: torch.cat([p[key] for p in parts], dim=-1) for key in parts[0]}
    total = int(merged["counted"].sum())
    disagreeing = merged["disagreeing"]
    ratios = merged["ratio"][disagreeing]
    ratios = ratios[~ratios.isnan()]
    return FiniteDifferences(
        informative=total,
        nonfinite=int((~merged["finite"]).sum()),
        step_disagreement=tuple(int(row.sum()) / total if total else 0.0 for row in merged["step"]),
        disagreeing=int(disagreeing.sum()),
        median_ratio=float(ratios.double().median()) if ratios.numel() else None,
    )
