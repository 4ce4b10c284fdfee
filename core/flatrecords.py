"""The records of the flatness section of the result document: each estimate with what it was
computed from (:class:`MeasureProvenance`). The estimators of ``flatness`` build and return
these records themselves, and ``flatness.measure`` a :class:`FlatnessResult`.

The estimates pickle (the resume cache keeps them), through :class:`_Picklable`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

from core.docfields import _OPTIONAL, Json, NumberArray, _extra, _need


class _Picklable:
    """A record that pickles (the resume cache keeps the estimates that carry it): its
    ``extra`` is read-only, which a pickle cannot hold, so it is stored as a plain dict."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        state["extra"] = dict(state["extra"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, extra=types.MappingProxyType(dict(state["extra"])))


@dataclass(frozen=True, kw_only=True)
class MeasureProvenance(_Picklable):
    """What a flatness estimate was computed from, so that a number in a report can be traced;
    the estimators of ``flatness`` produce it as their ``provenance``.

    Attributes:
        num_samples: Number of data points N the estimate averages over.
        batch_size: Batch size used to sweep the data (changes memory, not the value, except
            through batch-coupled layers in train mode).
        data_fingerprint: First 16 hex digits of SHA-256 over the inputs and labels.
        mode: ``"eval"`` or ``"train"`` (``flatness.Mode``).
        num_mc_samples: Dropout draws averaged per batch (always 1 in eval mode).
        seed: Initial seed of the generator the estimator drew from.
        definition: The quantity estimated, in words.
    """

    num_samples: int
    batch_size: int
    data_fingerprint: str
    mode: str
    num_mc_samples: int
    seed: int
    definition: str
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class FisherRaoEstimate(_Picklable):
    """The Fisher-Rao norm squared (``value``) with its standard error; ``norm`` its root."""

    value: float
    stderr: float | None
    ci_low: float | None = _need(_OPTIONAL)
    ci_high: float | None = _need(_OPTIONAL)
    confidence: float | None = _need(_OPTIONAL)
    norm: float | None = _need(_OPTIONAL)
    fisher: str | None = _need(_OPTIONAL)
    num_draws: int | None = _need(_OPTIONAL)
    """Mini-batches drawn (schema 1.8; before, one pass over every sample)."""
    minibatch_size: int | None = _need(_OPTIONAL)
    """Samples per draw; None for one pass over every sample (and before schema 1.8)."""
    stopped_by: str | None = _need(_OPTIONAL)
    """``target``, ``budget`` or ``all-samples`` (schema 1.8)."""
    rel_tol: float | None = _need(_OPTIONAL)
    max_draws: int | None = _need(_OPTIONAL)
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class TraceEstimate(_Picklable):
    """The Hessian trace with its standard error."""

    value: float
    stderr: float | None
    ci_low: float | None = _need(_OPTIONAL)
    ci_high: float | None = _need(_OPTIONAL)
    confidence: float | None = _need(_OPTIONAL)
    num_probes: int | None = _need(_OPTIONAL)
    num_draws: int | None = _need(_OPTIONAL)
    """Draws of a mini-batch (or the whole data) shared by their probes (schema 1.8)."""
    minibatch_size: int | None = _need(_OPTIONAL)
    """Samples per draw; None when every draw was the whole data (and before schema 1.8)."""
    num_matvecs: int | None = _need(_OPTIONAL)
    converged: bool | None = _need(_OPTIONAL)
    stopped_by: str | None = _need(_OPTIONAL)
    """``target`` or ``budget`` (schema 1.8; before, ``converged`` says which)."""
    rel_tol: float | None = _need(_OPTIONAL)
    max_probes: int | None = _need(_OPTIONAL)
    method: str | None = _need(_OPTIONAL)
    dimension: int | None = _need(_OPTIONAL)
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class SharpnessEstimate(_Picklable):
    """ε-sharpness with its standard error."""

    value: float
    stderr: float | None
    epsilon: float | None = _need(_OPTIONAL)
    base_loss: float | None = _need(_OPTIONAL)
    max_loss: float | None = _need(_OPTIONAL)
    num_steps: int | None = _need(_OPTIONAL)
    num_draws: int | None = _need(_OPTIONAL, omit=None)
    """Draws of a mini-batch (or the whole data) (schema 1.8)."""
    minibatch_size: int | None = _need(_OPTIONAL, omit=None)
    """Samples per draw; None when every draw was the whole data (and before schema 1.8)."""
    stopped_by: str | None = _need(_OPTIONAL, omit=None)
    """``target``, ``budget`` or ``all-samples`` (schema 1.8)."""
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Eigenvalues(_Picklable):
    """The largest Hessian eigenvalues, with their residual bounds."""

    eigenvalues: tuple[float, ...]
    residual_norms: tuple[float, ...] | None = _need(_OPTIONAL)
    num_iterations: int | None = _need(_OPTIONAL)
    converged: bool | None = _need(_OPTIONAL)
    stopped_by: str | None = _need(_OPTIONAL)
    """``target`` or ``budget`` (schema 1.8; before, ``converged`` says which)."""
    rel_tol: float | None = _need(_OPTIONAL)
    max_iterations: int | None = _need(_OPTIONAL)
    dimension: int | None = _need(_OPTIONAL)
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class SpectralDensity(_Picklable):
    """The Hessian's eigenvalue density on ``grid`` [G]; ``nodes``/``weights`` [R][S]."""

    grid: tuple[float, ...]
    density: tuple[float, ...]
    nodes: tuple[tuple[float, ...], ...] | None = _need(_OPTIONAL)
    weights: tuple[tuple[float, ...], ...] | None = _need(_OPTIONAL)
    bandwidth: float | None = _need(_OPTIONAL)
    trace: float | None = _need(_OPTIONAL)
    trace_stderr: float | None = _need(_OPTIONAL)
    rel_stderr: float | None = _need(_OPTIONAL)
    """The density's standard error over the runs, integrated over the grid (schema 1.8)."""
    stopped_by: str | None = _need(_OPTIONAL)
    """``target`` or ``budget`` (schema 1.8; before, a fixed number of runs)."""
    rel_tol: float | None = _need(_OPTIONAL)
    num_runs: int | None = _need(_OPTIONAL)
    num_steps: int | None = _need(_OPTIONAL)
    sample_size: int | None = _need(_OPTIONAL)
    """Samples of the Hessian, its own sample (schema 1.8; before, all of them)."""
    dimension: int | None = _need(_OPTIONAL)
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Landscape(_Picklable):
    """A loss-landscape slice: ``coordinates`` [P] along each direction; ``losses``,
    ``loss_stderrs`` and ``accuracies`` [P] (1-D) or [P][P] (2-D), None where undefined."""

    coordinates: tuple[float, ...]
    losses: NumberArray
    loss_stderrs: NumberArray = _need(_OPTIONAL)
    accuracies: NumberArray = _need(_OPTIONAL)
    num_directions: int | None = _need(_OPTIONAL)
    sample_size: int | None = _need(_OPTIONAL)
    """Samples at every point, its own sample (schema 1.8; before, all of them)."""
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class FlatnessResult:
    """The flatness measures the audit ran (None for those it did not)."""

    seed: int
    config: Json
    fisher_rao_empirical: FisherRaoEstimate | None = _need(_OPTIONAL)
    fisher_rao_model: FisherRaoEstimate | None = _need(_OPTIONAL)
    hessian_trace: TraceEstimate | None = _need(_OPTIONAL)
    hessian_eigenvalues: Eigenvalues | None = _need(_OPTIONAL)
    spectral_density: SpectralDensity | None = _need(_OPTIONAL)
    landscape_1d: Landscape | None = _need(_OPTIONAL)
    landscape_2d: Landscape | None = _need(_OPTIONAL)
    epsilon_sharpness: SharpnessEstimate | None = _need(_OPTIONAL)
    active_layers: FlatnessResult | None = _need(_OPTIONAL, omit_nested=True)
    """The same measures with the dropout-family layers active (schema 1.3; None for a model
    without such layers)."""
    extra: Json = _extra()
