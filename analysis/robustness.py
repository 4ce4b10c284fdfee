"""The robustness section's records, built from the suite's tensors: per norm the attacks'
records, the sweeps and the adversarial examples with the model's prediction on each.
``analysis.pipeline`` calls ``norm_section`` once per norm of the suite.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import torch

from analysis.exampleencoding import encode_exact, encode_image
from attacks import AttackOutcome, NormOutcome, SuiteResult
from attacks.losses import NO_PREDICTION, predict
from attacks.result import PER_SAMPLE_TABLES, plain
from core.docfields import BitRows
from core.document import (
    AttackRecord,
    Example,
    NormResult,
    Proportion,
    Sweep,
    as_read,
)

__all__ = ["bit_rows", "norm_section"]


def _predictions(
    model: torch.nn.Module, images: torch.Tensor, padding: torch.Tensor
) -> list[int | None]:
    """The model's prediction for each image (None for logits holding NaN or Inf, or where
    the model refuses every batch tried).

    The batch is the audit's choice, not the model's: a model that refuses this batch size
    (a TorchScript model checking its batch) is asked again with the images padded by
    ``padding`` (clean images, a batch of the size the clean pass used), then one at a time.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    images = images.to(device)
    count = len(images)
    extra = padding[: max(len(padding) - count, 0)].to(device=device, dtype=images.dtype)
    attempts = (
        lambda: model(images),
        lambda: model(torch.cat([images, extra]))[:count],
        lambda: torch.cat([model(images[i : i + 1]) for i in range(count)]),
    )
    for attempt in attempts:
        try:
            with torch.no_grad():
                labels = predict(attempt()).tolist()
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - a refused batch size is the model's quirk
            continue
        return [None if label == NO_PREDICTION else int(label) for label in labels]
    return [None] * count


def _examples(
    outcome: NormOutcome,
    suite: SuiteResult,
    x: torch.Tensor,
    limit: int,
    model: torch.nn.Module,
    padding: torch.Tensor,
) -> tuple[Example, ...]:
    """Up to ``limit`` adversarial examples per attack and epsilon, each the example the run
    at that epsilon returned for that sample (projected, clipped and judged by the engine),
    with the model's prediction on it (one more forward pass, for display).

    The samples the attack broke come first, then samples it attacked without breaking them,
    so that ``fooled`` can be checked both ways.
    """
    out = []
    for attack in outcome.attacks:
        for k, epsilon in enumerate(outcome.epsilons):
            attacked = attack.attacked[k].cpu() & suite.clean_correct.cpu()
            fooled = attack.success[k].cpu()
            chosen = torch.cat([(attacked & fooled).nonzero(), (attacked & ~fooled).nonzero()])
            samples = chosen.flatten()[:limit].tolist()
            predicted = (
                _predictions(model, attack.adversarial[k, samples], padding) if samples else []
            )
            for sample, prediction in zip(samples, predicted, strict=True):
                adversarial = attack.adversarial[k, sample].cpu()
                dtype, exact = encode_exact(adversarial)
                _, original = encode_exact(x[sample].to(adversarial.dtype))
                out.append(
                    Example(
                        attack=attack.label,
                        epsilon=as_read(epsilon),
                        sample=sample,
                        label=int(suite.labels[sample]),
                        fooled=bool(fooled[sample]),
                        predicted=prediction,
                        margin=as_read(float(attack.margin[k, sample])),
                        success_step=int(attack.success_step[k, sample]),
                        shape=tuple(adversarial.shape),
                        original=encode_image(x[sample]),
                        adversarial=encode_image(adversarial),
                        dtype=dtype,  # type: ignore[arg-type]
                        original_exact=original,
                        adversarial_exact=exact,
                    )
                )
    return tuple(out)


def bit_rows(mask: torch.Tensor) -> tuple[tuple[bool, ...], ...]:
    """``[K, N]`` bool -> K tuples of N bools (the document's K bit strings)."""
    return tuple(tuple(bool(v) for v in row) for row in mask.tolist())


def _counts(values: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _values(table: torch.Tensor) -> Any:
    """``[K, N]`` -> K tuples of N numbers, NaN and Inf kept (the document encodes them)."""
    return as_read(plain(table, keep_nonfinite=True))


_TABLE_FORMS: dict[Any, Callable[[torch.Tensor], Any]] = {
    BitRows: bit_rows,
    tuple[tuple[int, ...], ...]: _values,
    tuple[tuple[float | None, ...], ...]: _values,
    tuple[int, ...]: lambda table: _counts(table.sum(1)),
    int: lambda table: int(table.sum()),
}
"""How a ``[K, N]`` table of an outcome is written into a field of the document's record, by
the field's type: per epsilon and sample (bits, or numbers), per epsilon (the sum over the
samples), or one number (the sum over all)."""


def _table_form(name: str, hint: Any) -> Callable[[torch.Tensor], Any]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if hint not in _TABLE_FORMS:
        raise TypeError(f"AttackRecord.{name} is named as a per-sample table but has type {hint}")
    return _TABLE_FORMS[hint]


_HINTS = typing.get_type_hints(AttackRecord, include_extras=True)
_FROM_TABLES = {
    f.name: _table_form(f.name, _HINTS[f.name]) for f in PER_SAMPLE_TABLES if f.name in _HINTS
}
"""The fields of the document's ``AttackRecord`` named as a per-sample table of
``AttackResult`` (declared in ``attacks.result``), each with how the outcome's table becomes
its value: a table declared there and a field of its name here need no line in between."""


def _tables(attack: AttackOutcome) -> dict[str, Any]:
    """The fields of the record of ``attack`` that are its tables (see ``_FROM_TABLES``); None
    for an optional table the attack does not give."""
    out: dict[str, Any] = {}
    for name, form in _FROM_TABLES.items():
        table = attack.tables[name]
        out[name] = None if table is None else form(table)
    return out


def norm_section(
    outcome: NormOutcome,
    suite: SuiteResult,
    x: torch.Tensor,
    limit: int,
    model: torch.nn.Module,
    padding: torch.Tensor,
) -> NormResult:
    n = suite.num_samples
    attacks = []
    for attack in outcome.attacks:
        attacks.append(
            AttackRecord(
                label=attack.label,
                kind=attack.kind,
                source=attack.source,
                status=attack.status,
                message=attack.message,
                statuses=tuple(attack.statuses),
                messages=tuple(attack.messages),
                params=as_read({} if attack.result is None else attack.result.params),
                backend=None if attack.result is None else attack.result.backend,
                robust_accuracy_after=attack.robust_accuracy_after,
                broken=_counts((attack.success & attack.attacked).sum(1)),
                attempted=_counts(attack.attacked.sum(1)),
                mean_loss_trace=as_read(plain(attack.mean_loss_trace, keep_nonfinite=True)),
                nonfinite_samples=bit_rows(attack.nonfinite),
                nonfinite_evaluations=attack.nonfinite_evaluations,
                num_forward=0 if attack.result is None else attack.result.num_forward,
                num_backward=0 if attack.result is None else attack.result.num_backward,
                wall_time=0.0 if attack.result is None else as_read(attack.result.wall_time),
                gradient_stats=None if attack.result is None else attack.result.gradient_stats,
                **_tables(attack),
            )
        )
    robust_counts = outcome.robust.sum(1).tolist()
    hit = torch.zeros_like(outcome.robust)
    for attack in outcome.attacks:
        hit |= attack.nonfinite.to(hit.device)
    return NormResult(
        norm=outcome.norm.value,  # type: ignore[arg-type]
        epsilons=as_read(list(outcome.epsilons)),
        reliable_robust_accuracy=tuple(Proportion.of(int(c), n) for c in robust_counts),
        robust=bit_rows(outcome.robust),
        robust_nonfinite=_counts((outcome.robust & hit).sum(1)),
        attacks=tuple(attacks),
        unbounded_epsilon=as_read(outcome.unbounded_epsilon),
        sweep=_sweep(outcome.sweep),
        independent_sweep=_sweep(outcome.independent_sweep),
        failures=outcome.failures,
        examples=_examples(outcome, suite, x, limit, model, padding),
    )


def _sweep(outcome: AttackOutcome | None) -> Sweep | None:
    """A sweep on its own samples (all, or the independent runs' subsample)."""
    if outcome is None:
        return None
    columns = outcome.sample_index
    success = outcome.success[:, columns]
    return Sweep(
        attack=outcome.label,
        epsilons=as_read(list(outcome.epsilons)),
        success_rate=tuple(Proportion.of(int(b), len(columns)) for b in success.sum(1).tolist()),
        success=bit_rows(success),
        samples=tuple(columns.tolist()),
        mean_loss_trace=as_read(
            plain(outcome.loss_trace[:, :, columns].nanmean(dim=2), keep_nonfinite=True)
        ),
    )
