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

This module runs the probes and returns what they saw as the document's record,
``core.document.Probes``; the rest are its parts:
``analysis.gradientprobe`` (the input gradient on clean data), ``analysis.batchprobe`` (batch
dependence) and ``analysis.finitedifferences`` (the gradient against finite differences).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from analysis.batchprobe import (
    BatchProbe,
    batch_probe,
    batched_logits,
    evaluate_apart,
    shared_batched_logits,
)
from analysis.finitedifferences import (
    FD_ROUNDING_ULPS,
    FiniteDifferences,
    double_copy,
    finite_differences,
)
from analysis.gradientprobe import gradient_census, logit_margins, raised_message, six_digits
from attacks import ChunkedModel
from core.checks import CHECKS
from core.document import Probes
from torchutil import model_mode

__all__ = ["FD_ROUNDING_ULPS", "probe_model"]


_FD_TOLERANCE = CHECKS["gradient-disagrees-with-finite-differences"].thresholds["tolerance"]
_BATCH_TOLERANCE = CHECKS["batch-dependent-outputs"].thresholds["tolerance"]


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
    fd_tolerance: float = _FD_TOLERANCE,
    batch_tolerance: float = _BATCH_TOLERANCE,
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 500,
) -> Probes:
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
        fd_tolerance: relative error above which an estimate disagrees with the gradient
            (default: the threshold ``core.checks`` declares).
        batch_tolerance: relative logit change (of the row's largest absolute logit) above
            which a sample's output depends on its batch; batched and single matrix products
            differ by rounding only, far below it (default: the threshold ``core.checks``
            declares).
        bounds: the input box.
        batch_size: the batch size the audit uses; the first ``batch_size`` samples are
            evaluated as one batch, as the attacks see them.

    Returns:
        The measurements, the document's record.
    """
    if num_repeats < 2:
        raise ValueError(f"num_repeats must be at least 2, got {num_repeats}")
    if not 0 < fd_tolerance < 1:
        raise ValueError(f"fd_tolerance must lie in (0, 1), got {fd_tolerance}")
    if fd_steps is not None and (not fd_steps or any(not 0 < s < 0.1 for s in fd_steps)):
        raise ValueError(f"fd_steps must be fractions of the box width in (0, 0.1), got {fd_steps}")
    with model_mode(model, train=False):
        zero, nonfinite_gradients, gradient_norms, gradient_note, gradient_error = gradient_census(
            model, x, y, batch_size
        )
        all_samples = len(x)
        # Named as in the model itself, not in the audit's chunking wrapper.
        named = model.model if isinstance(model, ChunkedModel) else model
        train_modules = tuple(name or "<model>" for name, m in named.named_modules() if m.training)

        # Repeats compare the whole first batch: the passes are needed for the batch probe
        # anyway, and a randomness that flips few decisions needs many samples to show.
        first_batch = batched_logits(model, x[:batch_size], batch_size)
        repeats = [
            batched_logits(model, x[:batch_size], batch_size) for _ in range(num_repeats - 1)
        ]
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
        clean_logits = shared_batched_logits(model, x, batch_size)
        nonfinite_logits = int((~torch.isfinite(clean_logits)).any(1).sum())
        margins = six_digits(logit_margins(clean_logits, y))

        apart, composition = evaluate_apart(model, x[:count])
        if apart is None:
            batch = BatchProbe(composition, 0, 0.0, 0, 0, 0, 0)
        else:
            second = evaluate_apart(model, x[:count])[0] if stochastic else None
            batch = batch_probe(
                (first, repeats[0][:count]),
                (apart,) if second is None else (apart, second),
                composition,
                batch_tolerance,
            )

        fd_x, fd_y = x[:fd_samples], y[:fd_samples]
        steps: tuple[float, ...] = ()
        precision = ""
        if gradient_error:
            fd_result: FiniteDifferences | str = (
                f"the input gradient is not measurable: the model raised {gradient_error} when "
                "its input requires grad"
            )
        elif gradient_note:
            fd_result = "the input gradient does not exist"
        elif stochastic:
            fd_result = "the model is stochastic: finite differences of a random function"
        else:
            evaluated, precision = double_copy(model, fd_x[:2])
            double = precision == "float64"
            steps = fd_steps or ((1e-3, 1e-4, 1e-5) if double else (1e-2, 3e-3, 1e-3))
            steps = tuple(sorted(steps, reverse=True))
            try:
                fd_result = finite_differences(
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
                    f"the model raised {raised_message(error)} on the inputs near the data "
                    "that the finite differences take"
                )
    measured = isinstance(fd_result, FiniteDifferences)
    fd = fd_result if isinstance(fd_result, FiniteDifferences) else None
    return Probes(
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
        batch_tolerance=float(batch_tolerance),
        batch_max_relative_difference=batch.max_relative,
        batch_differing=batch.differing,
        batch_prediction_flips=batch.flips,
        batch_grouped=batch.grouped,
        batch_grouped_compared=batch.grouped_compared,
        fd_applicable=measured,
        fd_note=precision if measured else str(fd_result),
        fd_precision=precision.split(":")[0],
        fd_steps=tuple(float(step) for step in steps),
        fd_tolerance=float(fd_tolerance),
        fd_samples=len(fd_x) if measured else 0,
        fd_informative=fd.informative if fd else 0,
        fd_nonfinite=fd.nonfinite if fd else 0,
        fd_step_disagreement=fd.step_disagreement if fd else (),
        fd_disagreeing=fd.disagreeing if fd else 0,
        fd_disagreement_fraction=fd.disagreeing / fd.informative if fd and fd.informative else 0.0,
        fd_median_ratio=fd.median_ratio if fd else None,
        input_gradient_error=gradient_error,
    )
