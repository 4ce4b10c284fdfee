"""A typed, read-only view of the audit result document ``audit.json``.

:func:`read_result` (or :meth:`AuditResult.from_dict`) checks the document once and builds
frozen dataclasses, so that a report, a comparison, a gate or a summary never digs through
``dict[str, Any]``. The records are the one declaration of the document: ``core.schema``
generates ``core/audit.schema.json`` from them. Pure standard library: no torch, no numpy.

Conventions:

- Field names are the document's keys; keys this reader does not know are kept, read-only,
  in each record's ``extra`` mapping.
- Per-sample bit strings (``"0101..."``, one character per evaluated sample in the order of
  ``evaluation.indices``) are decoded to tuples of bools; a ``[K, N]`` row list to a tuple of
  K such tuples.
- Floats written as the strings ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` are decoded to
  ``float("nan")`` and ``±float("inf")``; ``None`` stays ``None`` (a value the writer found
  undefined or non-finite).
- Open-ended objects (configurations, attack parameters, a finding's evidence, versions) are
  read-only mappings whose lists are tuples.
- Baselines (``"baseline": true``, :meth:`AuditResult.to_baseline`, written by
  ``--update-baseline``) carry only what the gate reads; the sections and fields they leave
  out are ``None``.
- Schema 1.0 documents lack what 1.1 added (``success_step``, attack ``statuses``, failures,
  exact examples, the newer probes); those fields are ``None`` there.

Strict JSON has no NaN or infinity, so a number that is NaN or infinite is written as one of
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (``NONFINITE_TOKENS``); ``null``
means a value that does not exist (not measured, not applicable). :func:`write_json` encodes
them and writes strict JSON only (``allow_nan=False``); :func:`read_document` (and so
:func:`read_result`) refuses the non-standard literals ``NaN``/``Infinity`` and decodes the
three strings back into floats wherever they stand, so no text field of the document may hold
exactly one of them.

:meth:`AuditResult.to_dict` (:func:`encode` for any record) is the reader backwards: the
document as JSON, which :func:`write_json` writes and which reads back into an equal result.

Every problem (unknown version, missing or retyped field) raises :class:`DocumentError` with
one line naming the file, the field path and the fix.

This module declares the document's top level and is the public face of its parts:
``core.docjson`` (versions, non-finite numbers, writing and reading the JSON),
``core.docfields`` (how a record declares its fields, and the reader that checks them),
``core.attackrecords`` (the robustness section) and ``core.flatrecords`` (the flatness
section).

Example::

    result = read_result("out/digits-mlp-dropout/audit.json")
    linf = result.norm("linf")
    print(result.clean_accuracy.value, linf.reliable_robust_accuracy[0].wilson_95)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from core.attackrecords import (
    AUTOATTACK_STANDARD,
    AUTOATTACK_VERSIONS,
    FAILED,
    NOT_APPLICABLE,
    OK,
    AttackRecord,
    AttackStatus,
    Example,
    Failure,
    FailureStatus,
    GradientStats,
    NormResult,
    Proportion,
    Robustness,
    Sweep,
    autoattack_components,
)
from core.docfields import (
    ALWAYS,
    FULL,
    OPTIONAL,
    Bits,
    Json,
    NumberArray,
    Picklable,
    ReadContext,
    as_read,
    build_record,
    decode,
    encode,
    encode_baseline,
    extra_field,
    field_error,
    need,
)
from core.docjson import (
    NONFINITE_TOKENS,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    DocumentError,
    check_version,
    decode_nonfinite,
    encode_nonfinite,
    read_document,
    write_json,
)
from core.flatrecords import (
    Eigenvalues,
    FisherRaoEstimate,
    FlatnessResult,
    Landscape,
    MeasureProvenance,
    SharpnessEstimate,
    SpectralDensity,
    TraceEstimate,
)

__all__ = [
    "AUTOATTACK_STANDARD",
    "AUTOATTACK_VERSIONS",
    "FAILED",
    "NONFINITE_TOKENS",
    "NOT_APPLICABLE",
    "OK",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "UNNAMED",
    "WARN_OR_FAIL",
    "ActivationStats",
    "AttackRecord",
    "AttackStatus",
    "AuditResult",
    "BatchSize",
    "BatchSizes",
    "CheckpointInfo",
    "DocumentError",
    "Eigenvalues",
    "Evaluation",
    "Example",
    "Failure",
    "FailureStatus",
    "Finding",
    "FindingStatus",
    "FisherRaoEstimate",
    "FlatnessResult",
    "GradientStats",
    "Landscape",
    "LayerInfo",
    "MeasureProvenance",
    "ModelSource",
    "NormResult",
    "Probes",
    "Proportion",
    "Provenance",
    "Robustness",
    "SharpnessEstimate",
    "SpectralDensity",
    "Sweep",
    "TraceEstimate",
    "autoattack_components",
    "preset_caveat",
    "check_version",
    "as_read",
    "decode",
    "decode_nonfinite",
    "encode",
    "encode_nonfinite",
    "read_document",
    "write_json",
    "read_result",
]


@dataclass(frozen=True, kw_only=True)
class BatchSize(Picklable):
    """One batch size the audit chose, and how (``torchutil.choose_batch_size``).

    Attributes:
        size: samples per model evaluation (attacks) or per pass (flatness).
        how: ``fixed`` (asked for), ``estimated`` (from the measured peak and the free
            memory), ``limit`` (the largest batch ever used: the estimate allows it, or it is
            too small to need a measurement) or ``unmeasured`` (no memory measurement: the
            largest batch ever used, halved on out-of-memory where the device reports it).
        per_sample_bytes, fixed_bytes: the fitted peak of one step, per sample and fixed
            (None unless estimated).
        available_bytes: free memory when it was chosen (None if unknown).
        halvings: times it was halved after an out-of-memory error.
    """

    size: int = need(ALWAYS, since="1.4")
    how: Literal["fixed", "estimated", "limit", "unmeasured"] = need(ALWAYS, since="1.4")
    per_sample_bytes: float | None = need(ALWAYS, since="1.4")
    fixed_bytes: float | None = need(ALWAYS, since="1.4")
    available_bytes: int | None = need(ALWAYS, since="1.4")
    halvings: int = need(ALWAYS, since="1.4")
    extra: Json = extra_field()

    def halved(self) -> BatchSize:
        """This batch size after an out-of-memory error at ``size``: half of it (at least 1),
        one more halving.

        Raises:
            ValueError: at one sample, which cannot be halved.
        """
        if self.size <= 1:
            raise ValueError("a batch of one sample cannot be halved")
        return dataclasses.replace(self, size=self.size // 2, halvings=self.halvings + 1)


@dataclass(frozen=True, kw_only=True)
class BatchSizes:
    """``--batch-size`` (None: auto) and what it gave the attacks and flatness (None when
    flatness did not run).

    Memory chunks, none of them part of the result: ``attacks`` is the samples the model
    evaluated at once within the attacks' batch (``provenance.config.batch_size``), and in the
    probes and activation statistics; ``flatness`` is the samples per flatness pass."""

    requested: int | None = need(ALWAYS, since="1.4")
    attacks: BatchSize = need(ALWAYS, since="1.4")
    flatness: BatchSize | None = need(ALWAYS, since="1.4")
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where a model of the user's own class came from (``--model``, schema 1.6)."""

    reference: str = need(ALWAYS, since="1.6")
    kind: Literal["file", "module"] = need(ALWAYS, since="1.6")
    path: str | None = need(ALWAYS, since="1.6")
    module: str | None = need(ALWAYS, since="1.6")
    name: str = need(ALWAYS, since="1.6")
    kwargs: Json = need(ALWAYS, since="1.6")
    sha256: str | None = need(ALWAYS, since="1.6")
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a result comes from. A baseline keeps only the checkpoint, its hashes, the seed
    and the versions; the rest is None there."""

    checkpoint: str
    checkpoint_sha256: str
    weights_sha256: str | None = need(OPTIONAL, baseline=True)
    model_source: ModelSource | None = need(OPTIONAL, since="1.6")
    """None for any model but one of the user's own class (``--model``)."""
    versions: Mapping[str, str | None]
    seed: int
    config: Json | None = need(FULL)
    command_line: tuple[str, ...] | None = need(FULL)
    started: float | None = need(FULL)
    finished: float | None = need(FULL)
    host: str | None = need(FULL)
    device: str | None = need(FULL)
    world_size: int | None = need(OPTIONAL, since="1.5")
    batch_sizes: BatchSizes | None = need(OPTIONAL, since="1.4")
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class LayerInfo:
    """The checkpoint's dropout-family layer: kind, parameters and positions."""

    kind: str
    params: Json
    positions: tuple[int, ...] | None
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """The checkpoint's description (architecture, input, normalisation, how it was read).

    ``mean``/``std`` (None: no normalisation) and ``bounds`` are what the audit applied;
    ``normalization_source`` and ``bounds_source`` say where they came from (schema 1.7; None
    before)."""

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    layer: LayerInfo
    arch_kwargs: Json | None = need(OPTIONAL)
    dataset: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    bounds: tuple[float, float]
    training: Json | None = need(OPTIONAL)
    clean_accuracy: float | None = need(OPTIONAL)
    source_format: str
    normalization_source: str | None = need(OPTIONAL, since="1.7")
    bounds_source: str | None = need(OPTIONAL, since="1.7")
    loading_notes: tuple[str, ...]
    extra: Json = extra_field()


UNNAMED = "tensors"
"""``evaluation.dataset`` of images and labels handed over as tensors (``analysis.audit_model``
without ``dataset=``): no named dataset, so nothing to compare by name."""


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """The evaluated samples: ``indices`` [N] into the dataset's test split, ``labels`` [N];
    ``dataset`` is the dataset's name, ``"tensors"`` for images and labels of no named dataset
    (``UNNAMED``)."""

    dataset: str | None
    source: str | None = need(FULL)
    num_samples: int
    indices: tuple[int, ...]
    labels: tuple[int, ...] | None = need(FULL)
    classes: tuple[str, ...] | None = need(OPTIONAL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class ActivationStats:
    """Statistics of one dropout-family layer's input over the evaluation set."""

    name: str
    kind: Literal["normout", "qsd", "dropout"]
    description: str | None = need(OPTIONAL)
    mean: float
    std: float
    max: float
    zero_fraction: float
    num_elements: int
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class Probes(Picklable):
    """Direct measurements of the model, as ``analysis.probes.probe_model`` takes them; fields
    a document does not carry (schema 1.0) are None.

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
        batch_size: the attacks' batch (``provenance.config.batch_size``), whose first batch
            the probes evaluate; not the memory chunk (``BatchSizes.attacks``).
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

    num_samples: int | None = need(OPTIONAL)
    input_gradient_exists: bool
    input_gradient_note: str | None = need(OPTIONAL)
    clean_zero_gradient_fraction: float | None = need(OPTIONAL)
    clean_margins: NumberArray = need(OPTIONAL, since="1.3")
    clean_gradient_norms: NumberArray = need(OPTIONAL, since="1.3")
    stochastic: bool
    max_repeat_difference: float | None = need(OPTIONAL)
    repeat_samples: int | None = need(OPTIONAL, since="1.1")
    num_repeats: int | None = need(OPTIONAL, since="1.1")
    prediction_flips: int | None = need(OPTIONAL, since="1.1")
    prediction_flip_fraction: float | None = need(OPTIONAL)
    train_mode_modules: tuple[str, ...]
    probability_outputs: bool
    nonfinite_logits: int | None = need(OPTIONAL)
    nonfinite_gradients: int | None = need(OPTIONAL)
    batch_size: int | None = need(OPTIONAL)
    batch_composition: str | None = need(OPTIONAL)
    batch_compared: int | None = need(OPTIONAL)
    batch_tolerance: float | None = need(OPTIONAL)
    batch_max_relative_difference: float | None = need(OPTIONAL)
    batch_differing: int
    batch_prediction_flips: int | None = need(OPTIONAL)
    batch_grouped: int | None = need(OPTIONAL)
    batch_grouped_compared: int | None = need(OPTIONAL)
    fd_applicable: bool
    fd_note: str | None = need(OPTIONAL)
    fd_precision: str | None = need(OPTIONAL)
    fd_steps: tuple[float, ...] | None = need(OPTIONAL)
    fd_tolerance: float | None = need(OPTIONAL)
    fd_samples: int | None = need(OPTIONAL)
    fd_informative: int | None = need(OPTIONAL)
    fd_nonfinite: int | None = need(OPTIONAL)
    fd_step_disagreement: tuple[float, ...] | None = need(OPTIONAL)
    fd_disagreeing: int | None = need(OPTIONAL)
    fd_disagreement_fraction: float
    fd_median_ratio: float | None = need(OPTIONAL)
    input_gradient_error: str | None = need(OPTIONAL, since="1.8")
    extra: Json = extra_field()


class FindingStatus(StrEnum):
    """A red-flag check's judgement. A finding holds its value, a plain string
    (``Finding.status``), as the document does."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"


WARN_OR_FAIL = (FindingStatus.WARN, FindingStatus.FAIL)
"""The statuses of a check that warned or failed: the ones a finding explains with its check's
flagged sentence, and a report and the summary list. Only the failed masking checks count as
the verdict's red flags (``core.checks.red_flags``)."""


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One red-flag check's outcome. A baseline keeps only code, status and explanation."""

    code: str
    title: str | None = need(FULL)
    status: Annotated[str, FindingStatus]
    evidence: Json | None = need(FULL)
    explanation: str
    remedy: str | None = need(FULL)
    kind: Literal["masking", "reliability"] | None = need(FULL)
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class AuditResult:
    """A whole audit document (or a baseline: ``baseline`` True, the sections it leaves out
    None).

    Attributes:
        clean_correct: [N] whether each evaluated sample is classified correctly.
        flatness: None when the audit ran without flatness (or for a baseline).
    """

    schema_version: str
    baseline: bool = need(OPTIONAL, omit=False, baseline=True)
    provenance: Provenance
    checkpoint: CheckpointInfo | None = need(FULL)
    evaluation: Evaluation
    clean_accuracy: Proportion
    clean_correct: Bits
    clean_nonfinite: Bits | None = need(OPTIONAL, since="1.2")
    robustness: Robustness
    flatness: FlatnessResult | None = need(FULL)
    flatness_note: str | None = need(OPTIONAL, since="1.2")
    activations: tuple[ActivationStats, ...] | None = need(FULL)
    activations_note: str | None = need(OPTIONAL, since="1.6")
    probes: Probes | None = need(FULL)
    findings: tuple[Finding, ...]
    verdict: str
    extra: Json = extra_field()

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "<document>") -> AuditResult:
        """Check ``data`` (the parsed JSON) and build the typed result.

        Args:
            data: the document as ``json.loads`` returns it.
            source: the file name to put in error messages.

        Raises:
            DocumentError: unknown schema version, or a field missing or of the wrong type.
        """
        version = check_version(data, source)
        context = ReadContext(str(source), version, data.get("baseline") is True)
        result = build_record(cls, data, "", context)
        if result.baseline is None:
            result = dataclasses.replace(result, baseline=False)
        return typing.cast(AuditResult, result).checked(source)

    def checked(self, source: str | Path = "<document>") -> AuditResult:
        """This result, once the lengths that must agree do (one index per evaluated sample,
        one bit per sample, one row per epsilon): what :meth:`from_dict` checks beyond each
        field, for a result built in memory.

        Raises:
            DocumentError: a length that does not agree, named with ``source``.
        """
        _check_lengths(self, ReadContext(str(source), self.schema_version, self.baseline))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The document (the baseline) as JSON: what :meth:`from_dict` reads back into an
        equal result, and what :func:`write_json` writes."""
        return encode(self, version=self.schema_version, baseline=self.baseline)

    def to_baseline(self) -> dict[str, Any]:
        """The baseline made from this result, as JSON (what ``--update-baseline`` writes with
        :func:`write_json`): the fields a baseline keeps, which are what the gate reads (see
        :func:`core.docfields.need`), each as this result's document writes it. Read back, it
        is the result the gate compares with."""
        document = encode_baseline(
            dataclasses.replace(self, baseline=True), version=self.schema_version
        )
        # A baseline has always written the seed before the versions, the document after them:
        # kept, so that a baseline remade from the same audit is the same file.
        provenance = document["provenance"]
        provenance["versions"] = provenance.pop("versions")
        return document

    def norm(self, name: str) -> NormResult:
        """The section of norm ``name`` (``"linf"`` or ``"l2"``); KeyError names those present."""
        for section in self.robustness.norms:
            if section.norm == name:
                return section
        present = ", ".join(s.norm for s in self.robustness.norms)
        raise KeyError(f"no norm {name!r} in this result; present: {present}")


QUICK_CAVEAT = (
    "the quick preset is a smoke test (PGD with 10 steps, Square with 200 queries, a small "
    "sweep): its robust accuracies may overstate robustness; audit with --preset standard for "
    "figures to report"
)


def preset_caveat(result: AuditResult) -> str | None:
    """``QUICK_CAVEAT`` for a result of the ``quick`` preset, else None."""
    suite = (result.provenance.config or {}).get("suite") or {}
    return QUICK_CAVEAT if suite.get("name") == "quick" else None


def _check_lengths(result: AuditResult, context: ReadContext) -> None:
    """One index (a position in the test split) per evaluated sample, and per-sample rows of
    one bit per sample and one row per epsilon."""
    n = result.evaluation.num_samples
    indices = result.evaluation.indices
    if len(indices) != n:
        raise field_error(context, "evaluation.indices", f"{n} indices (num_samples)", len(indices))
    if any(i < 0 for i in indices):
        raise field_error(
            context, "evaluation.indices", "non-negative sample indices", min(indices)
        )

    def rows(where: str, value: tuple[tuple[bool, ...], ...] | None, count: int) -> None:
        if value is None:
            return
        if len(value) != count:
            raise field_error(
                context, where, f"{count} rows (one per epsilon)", f"{len(value)} rows"
            )
        for i, row in enumerate(value):
            if len(row) != n:
                raise field_error(context, f"{where}[{i}]", f"{n} bits (one per sample)", len(row))

    if len(result.clean_correct) != n:
        raise field_error(context, "clean_correct", f"{n} bits", len(result.clean_correct))
    for i, section in enumerate(result.robustness.norms):
        where = f"robustness.norms[{i}]"
        k = len(section.epsilons)
        rows(f"{where}.robust", section.robust, k)
        for j, attack in enumerate(section.attacks):
            for name in ("success", "attacked", "last_success"):
                rows(f"{where}.attacks[{j}].{name}", getattr(attack, name), k)


def read_result(path: str | Path) -> AuditResult:
    """Read ``audit.json`` (or a baseline) into an :class:`AuditResult`.

    Raises:
        DocumentError: the file is missing, not JSON, of an unknown schema version, or
            malformed; the message is one line naming the file and the field.
    """
    path = Path(path)
    return AuditResult.from_dict(read_document(path), path)
