"""Direct measurements of the model that the red-flag checks read besides the attacks.

- the input gradient: whether it exists at all (a cut autograd graph has none) and how often
  the cross-entropy gradient is exactly zero on clean data;
- stochasticity: repeated forward passes in the evaluation mode, compared;
- batch dependence: each sample's logits in the audit's batch against the sample alone;
- train mode: submodules whose ``training`` flag stays on after ``eval()``;
- probability outputs: rows in [0, 1] that sum to 1;
- non-finite logits and gradients on clean data;
- gradients against finite differences of a fixed class margin along random directions, at
  several step sizes, in float64 where the model allows it.

Every probe survives a model without an input gradient or with NaN outputs: what it cannot
measure it records, and the checks turn that into a finding. So does a model that raises where
only a probe takes it (an input that requires grad, an input off the data): whatever it raises
there is recorded, with the line of its message that says what failed, as that probe not
measured, and the audit goes on.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import ChunkedModel
from core.boundary import error_line
from torchutil import any_batch, model_mode, shared_map

__all__ = ["FD_ROUNDING_ULPS", "ModelProbes", "probe_model"]

FD_ROUNDING_ULPS = 100.0
"""Rounding allowance of a finite difference: this many units in the last place of the largest
logit (of the evaluation precision), divided by the step."""


@dataclass(frozen=True)
class ModelProbes:
    """What the probes saw.

    Attributes:
        num_samples: samples probed for stochasticity, outputs and batch dependence (the first
            of the evaluation set).
        input_gradient_exists: the model's output depends differentiably on its input (False
            when the autograd graph is cut: ``detach``, a comparison, an integer cast, a NumPy
            round trip, or a backward pass that raises).
        input_gradient_note: why the input gradient does not exist, or was not measured (""
            when it exists).
        clean_zero_gradient_fraction: fraction of *all* evaluation samples whose cross-entropy
            input gradient at the clean point is exactly zero (a saturated softmax); 1.0 when
            the input gradient does not exist or was not measured.
        clean_margins: per evaluation sample, the clean logit margin: the true class' logit
            minus the largest other (negative when misclassified; NaN for non-finite logits).
        clean_gradient_norms: per evaluation sample, the L2 norm of the cross-entropy input
            gradient at the clean point (exactly 0 where the softmax saturates); empty when the
            input gradient does not exist.
        stochastic: repeated forward passes gave different logits.
        max_repeat_difference: largest absolute logit difference between repeats.
        repeat_samples: samples compared across repeated passes (the first batch).
        num_repeats: forward passes of each of them.
        prediction_flips: samples whose prediction changed between repeats.
        prediction_flip_fraction: ``prediction_flips / repeat_samples``.
        train_mode_modules: names of submodules still in training mode after ``eval()``.
        probability_outputs: every output row lies in [0, 1] and sums to 1.
        nonfinite_logits: samples with NaN or Inf logits.
        nonfinite_gradients: samples with NaN or Inf input gradients.
        batch_size: the batch size the audit evaluates and attacks with.
        batch_composition: how each sample was evaluated apart from its batch: ``single``
            (alone), ``pair`` (with one other sample, for a model that refuses a batch of one),
            ``refused`` (it raised on both) or ``""`` when not compared.
        batch_compared: samples with finite logits in both compositions.
        batch_tolerance: relative tolerance of the comparison: a sample differs when its
            largest logit change exceeds this share of its largest absolute logit.
        batch_max_relative_difference: largest relative logit change over the samples.
        batch_differing: samples whose logits changed beyond the tolerance.
        batch_prediction_flips: samples whose prediction changed with the composition.
        batch_grouped: for a stochastic model, samples whose two batched passes and two
            passes apart pair up by composition: the sum of the within-pair distances
            (batched with batched, apart with apart) is smaller than for either other pairing
            of the four. Under batch independence the four passes are exchangeable and this
            happens with probability 1/3; 0 for a deterministic model.
        batch_grouped_compared: samples in that comparison (finite in every pass).
        fd_applicable: the finite-difference check could run; ``fd_note`` says why not.
        fd_note: why the finite differences were not measured, or how they were evaluated.
        fd_precision: ``float64`` (a double copy of the model) or ``float32``.
        fd_steps: step sizes h in input space, largest first.
        fd_tolerance: relative error above which an estimate disagrees with the gradient.
        fd_samples: sample-direction pairs measured (one random direction per sample).
        fd_informative: pairs where the margin or its gradient changed measurably.
        fd_nonfinite: pairs left out because a margin or a gradient was NaN or Inf.
        fd_step_disagreement: per step, the fraction of informative pairs where none of the
            central, forward and backward differences agrees with the gradient.
        fd_disagreeing: informative pairs that disagree at every step.
        fd_disagreement_fraction: ``fd_disagreeing / fd_informative``.
        fd_median_ratio: over the pairs that disagree at every step (and have a non-zero
            directional derivative), the median of finite difference over directional
            derivative at the smallest step: -1 for a sign-flipped gradient, 0 for a gradient
            where the function is flat; None when there is none.
        input_gradient_error: what the model raised when its input gradient was measured (its
            type and the line of its message that says what failed); the input gradient is then
            not measured (``input_gradient_exists`` False, the note says so). "" when it did
            not raise.
    """

    num_samples: int
    input_gradient_exists: bool
    input_gradient_note: str
    clean_zero_gradient_fraction: float
    clean_margins: tuple[float, ...]
    clean_gradient_norms: tuple[float, ...]
    stochastic: bool
    max_repeat_difference: float
    repeat_samples: int
    num_repeats: int
    prediction_flips: int
    prediction_flip_fraction: float
    train_mode_modules: tuple[str, ...]
    probability_outputs: bool
    nonfinite_logits: int
    nonfinite_gradients: int
    batch_size: int
    batch_composition: str
    batch_compared: int
    batch_tolerance: float
    batch_max_relative_difference: float
    batch_differing: int
    batch_prediction_flips: int
    batch_grouped: int
    batch_grouped_compared: int
    fd_applicable: bool
    fd_note: str
    fd_precision: str
    fd_steps: tuple[float, ...]
    fd_tolerance: float
    fd_samples: int
    fd_informative: int
    fd_nonfinite: int
    fd_step_disagreement: tuple[float, ...]
    fd_disagreeing: int
    fd_disagreement_fraction: float
    fd_median_ratio: float | None
    input_gradient_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in (
            "train_mode_modules",
            "clean_margins",
            "clean_gradient_norms",
            "fd_steps",
            "fd_step_disagreement",
        ):
            data[key] = list(data[key])
        return data


def _input_gradient(function: Any, inputs: Tensor) -> tuple[Tensor | None, Tensor | None, str]:
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
        return None, output.detach(), f"the backward pass raised: {_raised(error)}"
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


def _raised(error: BaseException) -> str:
    """``Type: what failed``, in one line."""
    return error_line(f"{type(error).__name__}: {error}")


def _cross_entropy(model: nn.Module, y: Tensor) -> Any:
    return lambda inputs: F.cross_entropy(model(inputs), y, reduction="none")


def _gradient_census(
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
            gradient, _, note = _input_gradient(
                _cross_entropy(model, labels), x[start : start + batch_size]
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - the model's own error is a finding
            raised = _raised(error)
            note = f"not measured: the model raised {raised} when its input requires grad"
            return 0, 0, torch.empty(0, dtype=torch.float64), note, raised
        if gradient is None:
            return 0, 0, torch.empty(0, dtype=torch.float64), note, ""
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
    return zero, nonfinite, _rounded(torch.cat([batch[2] for batch in batches])), "", ""


def _rounded(values: Tensor) -> tuple[float, ...]:
    """Six significant digits: enough for a distribution, and a short document."""
    return tuple(float(f"{v:.6g}") for v in values.tolist())


def _margins(logits: Tensor, y: Tensor) -> Tensor:
    """True-class logit minus the largest other, per row (NaN where a logit is not finite)."""
    logits = logits.double()
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -math.inf).amax(1)
    margin = true - others
    return torch.where(torch.isfinite(logits).all(1), margin, torch.full_like(margin, math.nan))


def _batched(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        chunks = [x[s : s + batch_size] for s in range(0, len(x), batch_size)]
        return torch.cat([any_batch(model, chunk) for chunk in chunks])


def _shared_batched(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """``_batched``, each batch computed by one process under torch.distributed."""

    def logits(number: int) -> Tensor:
        with torch.no_grad():
            batch = x[number * batch_size : (number + 1) * batch_size]
            return any_batch(model, batch).cpu()

    return torch.cat(shared_map(-(-len(x) // batch_size), logits)).to(x.device)


def _apart(model: nn.Module, x: Tensor) -> tuple[Tensor | None, str]:
    """Each row of ``x`` evaluated apart from the others: alone, or with its successor where
    the model refuses a batch of one (batch norm in train mode on flat features, a TorchScript
    model that checks its batch); ``(None, "refused")`` when it refuses both. Whatever a model
    raises on a batch size the probe chose is the model's quirk, not a crash of the audit."""
    with torch.no_grad():
        try:
            return torch.cat([model(x[i : i + 1]) for i in range(len(x))]), "single"
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - any refusal of a batch of one (torch.jit.Error too)
            pass
        if len(x) < 2:
            return None, "refused"
        try:
            rows = [model(x[[i, (i + 1) % len(x)]])[:1] for i in range(len(x))]
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - as above, for a batch of two
            return None, "refused"
        return torch.cat(rows), "pair"


@dataclass(frozen=True)
class _BatchProbe:
    composition: str
    compared: int
    max_relative: float
    differing: int
    flips: int
    grouped: int
    grouped_compared: int


def _batch_probe(
    batched: tuple[Tensor, Tensor],
    apart: tuple[Tensor] | tuple[Tensor, Tensor] | None,
    composition: str,
    tolerance: float,
) -> _BatchProbe:
    """Compare a batched pass with a pass apart (relative tolerance, flips) and, for a
    stochastic model (``apart`` holds two passes), the pairing of two passes of each kind."""
    first = batched[0]
    alone = apart[0] if apart is not None else batched[1]
    finite = torch.isfinite(first).all(1) & torch.isfinite(alone).all(1)
    change = (first - alone).abs().amax(1)
    scale = first.abs().amax(1).clamp_min(torch.finfo(first.dtype).tiny)
    relative = (change / scale)[finite]
    flips = (first.argmax(1) != alone.argmax(1)) & finite
    grouped = compared = 0
    if apart is not None and len(apart) == 2:
        b1, b2, s1, s2 = (t.double() for t in (*batched, *apart))

        def distance(u: Tensor, v: Tensor) -> Tensor:
            return (u - v).norm(dim=1)

        observed = distance(b1, b2) + distance(s1, s2)
        crossed = torch.minimum(
            distance(b1, s1) + distance(b2, s2), distance(b1, s2) + distance(b2, s1)
        )
        usable = torch.isfinite(torch.stack([b1, b2, s1, s2])).all(2).all(0)
        grouped = int(((observed < crossed) & usable).sum())
        compared = int(usable.sum())
    return _BatchProbe(
        composition=composition,
        compared=int(finite.sum()),
        max_relative=float(relative.max()) if relative.numel() else 0.0,
        differing=int((relative > tolerance).sum()),
        flips=int(flips.sum()),
        grouped=grouped,
        grouped_compared=compared,
    )


def _double_copy(model: nn.Module, probe: Tensor) -> tuple[nn.Module, str]:
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
class _FiniteDifferences:
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

    gradient, value, note = _input_gradient(margin, centre)
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


def _finite_differences(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    steps: tuple[float, ...],
    tolerance: float,
    bounds: tuple[float, float],
    batch_size: int,
) -> _FiniteDifferences | str:
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
    return _FiniteDifferences(
        informative=total,
        nonfinite=int((~merged["finite"]).sum()),
        step_disagreement=tuple(int(row.sum()) / total if total else 0.0 for row in merged["step"]),
        disagreeing=int(disagreeing.sum()),
        median_ratio=float(ratios.double().median()) if ratios.numel() else None,
    )


def probe_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    *,
    num_samples: int = 64,
    num_repeats: int = 4,
    fd_samples: int = 256,
    fd_steps: tuple[float, ...] | None = None,
    fd_tolerance: float = 0.1,
    batch_tolerance: float = 1e-3,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 500,
) -> ModelProbes:
    """Probe ``model`` (evaluated in eval mode; its mode is restored).

    Args:
        model: maps images in ``bounds`` to logits [N, K].
        x: evaluation images [N, C, H, W] (any shape [N, ...]) in ``bounds``.
        y: labels [N].
        generator: source of the finite-difference directions and jitter (any device).
        num_samples: samples (the first of ``x``) for stochasticity, outputs and batch
            dependence.
        num_repeats: forward passes compared for stochasticity (at least 2).
        fd_samples: samples (the first of ``x``) for the finite differences, one random
            direction each. With 256 pairs the check (tolerated rate 1 %, fails from 13
            pairs, 5 %) fails a model whose gradient is wrong on 10 % of pairs with
            probability 0.998, while an honest network (0 of 1000 pairs measured on max-pool,
            batch-norm, residual and GELU networks, i.e. below 0.3 % at 95 %) would need 13;
            the cost is about seven forward passes per sample, far below the attacks'.
        fd_steps: finite-difference steps as fractions of the box width, largest first;
            default (1e-3, 1e-4, 1e-5) in float64 and (1e-2, 3e-3, 1e-3) when the model only
            runs in float32 (where rounding limits small steps).
        fd_tolerance: relative error above which an estimate disagrees with the gradient.
        batch_tolerance: relative logit change (of the row's largest absolute logit) above
            which a sample's output depends on its batch; batched and single matrix products
            differ by rounding only, far below it.
        bounds: the input box.
        batch_size: the batch size the audit uses; the first ``batch_size`` samples are
            evaluated as one batch, as the attacks see them.

    Returns:
        The measurements.
    """
    if num_repeats < 2:
        raise ValueError(f"num_repeats must be at least 2, got {num_repeats}")
    if not 0 < fd_tolerance < 1:
        raise ValueError(f"fd_tolerance must lie in (0, 1), got {fd_tolerance}")
    if fd_steps is not None and (not fd_steps or any(not 0 < s < 0.1 for s in fd_steps)):
        raise ValueError(f"fd_steps must be fractions of the box width in (0, 0.1), got {fd_steps}")
    with model_mode(model, train=False):
        zero, nonfinite_gradients, gradient_norms, gradient_note, gradient_error = _gradient_census(
            model, x, y, batch_size
        )
        all_samples = len(x)
        # Named as in the model itself, not in the audit's chunking wrapper.
        named = model.model if isinstance(model, ChunkedModel) else model
        train_modules = tuple(name or "<model>" for name, m in named.named_modules() if m.training)

        # Repeats compare the whole first batch: the passes are needed for the batch probe
        # anyway, and a randomness that flips few decisions needs many samples to show.
        first_batch = _batched(model, x[:batch_size], batch_size)
        repeats = [_batched(model, x[:batch_size], batch_size) for _ in range(num_repeats - 1)]
        count = min(num_samples, first_batch.shape[0])
        first = first_batch[:count]
        differences = [(r - first_batch).abs() for r in repeats]
        difference = max(
            (float(d[torch.isfinite(d)].max()) if torch.isfinite(d).any() else 0.0)
            for d in differences
        )
        stochastic = any(
            bool(((r != first_batch) & ~(r.isnan() & first_batch.isnan())).any()) for r in repeats
        )
        flips = torch.zeros(first_batch.shape[0], dtype=torch.bool, device=first.device)
        for r in repeats:
            flips |= r.argmax(1) != first_batch.argmax(1)
        rows = first.double()
        probability = bool(
            ((rows >= 0) & (rows <= 1)).all()
            and torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]), atol=1e-4)
        )
        clean_logits = _shared_batched(model, x, batch_size)
        nonfinite_logits = int((~torch.isfinite(clean_logits)).any(1).sum())
        margins = _rounded(_margins(clean_logits, y))

        apart, composition = _apart(model, x[:count])
        if apart is None:
            batch = _BatchProbe(composition, 0, 0.0, 0, 0, 0, 0)
        else:
            second = _apart(model, x[:count])[0] if stochastic else None
            batch = _batch_probe(
                (first, repeats[0][:count]),
                (apart,) if second is None else (apart, second),
                composition,
                batch_tolerance,
            )

        fd_x, fd_y = x[:fd_samples], y[:fd_samples]
        steps: tuple[float, ...] = ()
        precision = ""
        if gradient_error:
            fd_result: _FiniteDifferences | str = (
                f"the input gradient is not measurable: the model raised {gradient_error} when "
                "its input requires grad"
            )
        elif gradient_note:
            fd_result = "the input gradient does not exist"
        elif stochastic:
            fd_result = "the model is stochastic: finite differences of a random function"
        else:
            evaluated, precision = _double_copy(model, fd_x[:2])
            double = precision == "float64"
            steps = fd_steps or ((1e-3, 1e-4, 1e-5) if double else (1e-2, 3e-3, 1e-3))
            steps = tuple(sorted(steps, reverse=True))
            try:
                fd_result = _finite_differences(
                    evaluated,
                    fd_x.double() if double else fd_x,
                    fd_y,
                    generator,
                    steps,
                    fd_tolerance,
                    bounds,
                    batch_size,
                )
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # noqa: BLE001 - the model's own error is a finding
                fd_result = (
                    f"the model raised {_raised(error)} on the inputs near the data that the "
                    "finite differences take"
                )
    measured = isinstance(fd_result, _FiniteDifferences)
    fd = fd_result if isinstance(fd_result, _FiniteDifferences) else None
    return ModelProbes(
        num_samples=count,
        input_gradient_exists=not gradient_note,
        input_gradient_note=gradient_note,
        clean_zero_gradient_fraction=zero / all_samples if all_samples else 0.0,
        clean_margins=margins,
        clean_gradient_norms=gradient_norms,
        stochastic=stochastic,
        max_repeat_difference=difference,
        repeat_samples=len(flips),
        num_repeats=num_repeats,
        prediction_flips=int(flips.sum()),
        prediction_flip_fraction=float(flips.double().mean()) if len(flips) else 0.0,
        train_mode_modules=train_modules,
        probability_outputs=probability,
        nonfinite_logits=nonfinite_logits,
        nonfinite_gradients=nonfinite_gradients,
        batch_size=batch_size,
        batch_composition=batch.composition,
        batch_compared=batch.compared,
        batch_tolerance=batch_tolerance,
        batch_max_relative_difference=batch.max_relative,
        batch_differing=batch.differing,
        batch_prediction_flips=batch.flips,
        batch_grouped=batch.grouped,
        batch_grouped_compared=batch.grouped_compared,
        fd_applicable=measured,
        fd_note=precision if measured else str(fd_result),
        fd_precision=precision.split(":")[0],
        fd_steps=tuple(steps),
        fd_tolerance=fd_tolerance,
        fd_samples=len(fd_x) if measured else 0,
        fd_informative=fd.informative if fd else 0,
        fd_nonfinite=fd.nonfinite if fd else 0,
        fd_step_disagreement=fd.step_disagreement if fd else (),
        fd_disagreeing=fd.disagreeing if fd else 0,
        fd_disagreement_fraction=fd.disagreeing / fd.informative if fd and fd.informative else 0.0,
        fd_median_ratio=fd.median_ratio if fd else None,
        input_gradient_error=gradient_error,
    )
