"""The records of the flatness section of the result document: each estimate with what it was
computed from (:class:`MeasureProvenance`). The estimators of ``flatness`` build and return
these records themselves, and ``flatness.measure`` a :class:`FlatnessResult`.

The estimates pickle (the resume cache keeps them), through ``core.docfields.Picklable``.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.docfields import OPTIONAL, Json, NumberArray, Picklable, extra_field, need


@dataclass(frozen=True, kw_only=True)
class MeasureProvenance(Picklable):
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
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class FisherRaoEstimate(Picklable):
    """The Fisher-Rao norm squared (``value``) with its standard error; ``norm`` its root."""

    value: float
    stderr: float | None
    ci_low: float | None = need(OPTIONAL)
    ci_high: float | None = need(OPTIONAL)
    confidence: float | None = need(OPTIONAL)
    norm: float | None = need(OPTIONAL)
    fisher: str | None = need(OPTIONAL)
    num_draws: int | None = need(OPTIONAL, since="1.8")
    """Mini-batches drawn (schema 1.8; before, one pass over every sample)."""
    minibatch_size: int | None = need(OPTIONAL, since="1.8")
    """Samples per draw; None for one pass over every sample (and before schema 1.8)."""
    stopped_by: str | None = need(OPTIONAL, since="1.8")
    """``target``, ``budget`` or ``all-samples`` (schema 1.8)."""
    rel_tol: float | None = need(OPTIONAL, since="1.8")
    max_draws: int | None = need(OPTIONAL, since="1.8")
    provenance: MeasureProvenance | None = need(OPTIONAL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class TraceEstimate(Picklable):
    """The Hessian trace with its standard error."""

    value: float
    stderr: float | None
    ci_low: float | None = need(OPTIONAL)
    ci_high: float | None = need(OPTIONAL)
    confidence: float | None = need(OPTIONAL)
    num_probes: int | None = need(OPTIONAL)
    num_draws: int | None = need(OPTIONAL, since="1.8")
    """Draws of a mini-batch (or the whole data) shared by their probes (schema 1.8)."""
    minibatch_size: int | None = need(OPTIONAL, since="1.8")
    """Samples per draw; None when every draw was the whole data (and before schema 1.8)."""
    num_matvecs: int | None = need(OPTIONAL)
    converged: bool | None = need(OPTIONAL)
    stopped_by: str | None = need(OPTIONAL, since="1.8")
    """``target`` or ``budget`` (schema 1.8; before, ``converged`` says which)."""
    rel_tol: float | None = need(OPTIONAL)
    max_probes: int | None = need(OPTIONAL, since="1.8")
    method: str | None = need(OPTIONAL)
    dimension: int | None = need(OPTIONAL)
    provenance: MeasureProvenance | None = need(OPTIONAL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class SharpnessEstimate(Picklable):
    """ε-sharpness with its standard error."""

    value: float
    stderr: float | None
    epsilon: float | None = need(OPTIONAL)
    base_loss: float | None = need(OPTIONAL)
    max_loss: float | None = need(OPTIONAL)
    num_steps: int | None = need(OPTIONAL)
    num_draws: int | None = need(OPTIONAL, since="1.8", omit=None)
    """Draws of a mini-batch (or the whole data) (schema 1.8)."""
    minibatch_size: int | None = need(OPTIONAL, since="1.8", omit=None)
    """Samples per draw; None when every draw was the whole data (and before schema 1.8)."""
    stopped_by: str | None = need(OPTIONAL, since="1.8", omit=None)
    """``target``, ``budget`` or ``all-samples`` (schema 1.8)."""
    provenance: MeasureProvenance | None = need(OPTIONAL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class Eigenvalues(Picklable):
    """The largest Hessian eigenvalues, with their residual bounds."""

    eigenvalues: tuple[float, ...]
    residual_norms: tuple[float, ...] | None = need(OPTIONAL)
    num_iterations: int | None = need(OPTIONAL)
    converged: bool | None = need(OPTIONAL)
    stopped_by: str | None = need(OPTIONAL, since="1.8")
    """``target`` or ``budget`` (schema 1.8; before, ``converged`` says which)."""
    rel_tol: float | None = need(OPTIONAL)
    max_iterations: int | None = need(OPTIONAL, since="1.8")
    dimension: int | None = need(OPTIONAL)
    provenance: MeasureProvenance | None = need(OPTIONAL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class SpectralDensity(Picklable):
    """The Hessian's eigenvalue density on ``grid`` [G]; ``nodes``/``weights`` [R][S]."""

    grid: tuple[float, ...]
    density: tuple[float, ...]
    nodes: tuple[tuple[float, ...], ...] | None = need(OPTIONAL)
    weights: tuple[tuple[float, ...], ...] | None = need(OPTIONAL)
    bandwidth: float | None = need(OPTIONAL)
    trace: float | None = need(OPTIONAL)
    trace_stderr: float | None = need(OPTIONAL)
    rel_stderr: float | None = need(OPTIONAL, since="1.8")
    """The density's standard error over the runs, integrated over the grid (schema 1.8)."""
    stopped_by: str | None = need(OPTIONAL, since="1.8")
    """``target`` or ``budget`` (schema 1.8; before, a fixed number of runs)."""
    rel_tol: float | None = need(OPTIONAL, since="1.8")
    num_runs: int | None = need(OPTIONAL)
    num_steps: int | None = need(OPTIONAL)
    sample_size: int | None = need(OPTIONAL, since="1.8")
    """Samples of the Hessian, its own sample (schema 1.8; before, all of them)."""
    dimension: int | None = need(OPTIONAL)
    provenance: MeasureProvenance | None = need(OPTIONAL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class Landscape(Picklable):
    """A loss-landscape slice: ``coordinates`` [P] along each direction; ``losses``,
    ``loss_stderrs`` and ``accuracies`` [P] (1-D) or [P][P] (2-D), None where undefined."""

    coordinates: tuple[float, ...]
    losses: NumberArray
    loss_stderrs: NumberArray = need(OPTIONAL)
    accuracies: NumberArray = need(OPTIONAL)
    num_directions: int | None = need(OPTIONAL)
    sample_size: int | None = need(OPTIONAL, since="1.8")
    """Samples at every point, its own sample (schema 1.8; before, all of them)."""
    provenance: MeasureProvenance | None = need(OPTIONAL)
    extra: Json = extra_field()


MEASURES = (
    "fisher_rao_empirical",
    "fisher_rao_model",
    "hessian_trace",
    "hessian_eigenvalues",
    "spectral_density",
    "landscape_1d",
    "landscape_2d",
    "epsilon_sharpness",
)
"""The flatness measures, in the order the audit runs and reports them: the fields of
:class:`FlatnessResult`, the values of ``flatness.Measure`` and the names in a flatness config."""


@dataclass(frozen=True, kw_only=True)
class FlatnessResult:
    """The flatness measures the audit ran (None for those it did not)."""

    seed: int
    config: Json
    fisher_rao_empirical: FisherRaoEstimate | None = need(OPTIONAL)
    fisher_rao_model: FisherRaoEstimate | None = need(OPTIONAL)
    hessian_trace: TraceEstimate | None = need(OPTIONAL)
    hessian_eigenvalues: Eigenvalues | None = need(OPTIONAL)
    spectral_density: SpectralDensity | None = need(OPTIONAL)
    landscape_1d: Landscape | None = need(OPTIONAL)
    landscape_2d: Landscape | None = need(OPTIONAL)
    epsilon_sharpness: SharpnessEstimate | None = need(OPTIONAL)
    active_layers: FlatnessResult | None = need(OPTIONAL, since="1.3", omit_nested=True)
    """The same measures with the dropout-family layers active (schema 1.3; None for a model
    without such layers)."""
    extra: Json = extra_field()
