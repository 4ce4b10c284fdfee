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
- Baselines (``"baseline": true``, written by ``python -m analysis.gate ... --update-baseline``)
  carry only what the gate reads; the sections and fields they leave out are ``None``.
- Schema 1.0 documents lack what 1.1 added (``success_step``, attack ``statuses``, failures,
  exact examples, the newer probes); those fields are ``None`` there.

Strict JSON has no NaN or infinity, so a number that is NaN or infinite is written as one of
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (``NONFINITE_TOKENS``); ``null``
means a value that does not exist (not measured, not applicable). :func:`write_json` encodes
them and writes strict JSON only (``allow_nan=False``); :func:`read_document` (and so
:func:`read_result`) refuses the non-standard literals ``NaN``/``Infinity`` and decodes the
three strings back into floats wherever they stand, so no text field of the document may hold
exactly one of them.

Every problem (unknown version, missing or retyped field) raises :class:`DocumentError` with
one line naming the file, the field path and the fix.

Example::

    result = read_result("out/digits-mlp-dropout/audit.json")
    linf = result.norm("linf")
    print(result.clean_accuracy.value, linf.reliable_robust_accuracy[0].wilson_95)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import re
import struct
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from core.boundary import atomic_write_bytes, load_json
from core.stats import wilson_interval

__all__ = [
    "AUTOATTACK_STANDARD",
    "NONFINITE_TOKENS",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "ActivationStats",
    "AttackRecord",
    "AuditResult",
    "BatchSize",
    "BatchSizes",
    "CheckpointInfo",
    "DocumentError",
    "Eigenvalues",
    "Evaluation",
    "Example",
    "Failure",
    "Finding",
    "FisherRaoEstimate",
    "FlatnessResult",
    "GradientStats",
    "Landscape",
    "LayerSpec",
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
    "decode_nonfinite",
    "encode_nonfinite",
    "proportion",
    "read_document",
    "write_json",
    "read_result",
]

SCHEMA_VERSION = "1.8"
"""The schema version this toolkit writes."""
# 1.1 adds fields (success_step, attack statuses and failures, exact examples per epsilon, the
# new probes) and changes none of 1.0's, which is all the gate reads of a result or baseline.
# 1.2 writes NaN and infinite numbers as strings (``NONFINITE_TOKENS``; 1.1 had null or no
# document at all) and adds the non-finite counts; the fields the gate reads are unchanged.
# 1.3 adds flatness with the dropout-family layers active (``flatness.active_layers``) and the
# clean margins and input-gradient norms per sample (``probes``); nothing else changes.
# 1.4 adds the batch sizes the audit chose for the machine (``provenance.batch_sizes``).
# 1.5 adds the number of processes the audit ran in (``provenance.world_size``).
# 1.6 adds where a model of the user's own came from (``provenance.model_source``) and why some
# dropout-family layers have no activation statistics (``activations_note``).
# 1.7 adds where the normalisation and the bounds came from (``checkpoint.normalization_source``,
# ``checkpoint.bounds_source``).
# 1.8 adds how each flatness estimate was obtained: what stopped it (``stopped_by``: its target
# precision, its budget, or one pass over every sample), the draws of mini-batches behind the
# Fisher-Rao norms and the Hessian trace (``num_draws``, ``minibatch_size``), and the own sample
# of the landscapes and the spectral density (``sample_size``); the density's runs now stop at
# a target (``rel_stderr``). Older fields keep their meaning.
READABLE_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8")
"""Schema versions this toolkit reads (the writer in ``analysis.document`` and this reader)."""

NONFINITE_TOKENS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How the document writes each non-finite number, and the float each string reads back as."""

_FIX = "re-create it with python -m analysis.audit (or --update-baseline for a baseline)"
_BITS_PATTERN = re.compile(r"[01]*")


class DocumentError(ValueError):
    """A result document that cannot be read: missing, malformed or of an unknown version."""


class _BitsMarker:
    """Marks a field holding a bit string, decoded to a tuple of bools."""


class _ArrayMarker:
    """Marks a field holding a number or nested lists of numbers (None allowed)."""


Bits = Annotated[tuple[bool, ...], _BitsMarker]
BitRows = tuple[Bits, ...]
NumberArray = Annotated[Any, _ArrayMarker]
"""A float (or None) or nested tuples of them, e.g. a 2-D landscape's losses."""
Json = Mapping[str, Any]
"""An open-ended, read-only JSON object (lists become tuples)."""

# How much a field is required: always; in full documents (not baselines); in full
# documents of schema 1.1; or never (an absent key reads as None).
_ALWAYS, _FULL, _V11, _OPTIONAL = "always", "full", "1.1", "optional"


def _need(level: str) -> Any:
    return field(metadata={"need": level})


def _extra() -> Any:
    return field(default_factory=lambda: types.MappingProxyType({}), repr=False, compare=False)


@dataclass(frozen=True)
class _Context:
    file: str
    version: str
    baseline: bool


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error(context: _Context, where: str, expected: str, value: Any) -> DocumentError:
    return DocumentError(
        f"{context.file}: {where} should be {expected}, got {_shown(value)}; {_FIX}"
    )


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _number(value: Any, where: str, context: _Context) -> float:
    if isinstance(value, str) and value in NONFINITE_TOKENS:
        return NONFINITE_TOKENS[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _error(context, where, 'a number (or "NaN", "Infinity", "-Infinity")', value)
    return float(value)


def _array(value: Any, where: str, context: _Context) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(_array(v, f"{where}[{i}]", context) for i, v in enumerate(value))
    return _number(value, where, context)


def _parse(kind: Any, value: Any, where: str, context: _Context) -> Any:
    origin = typing.get_origin(kind)
    if origin is Annotated:
        marker = kind.__metadata__[0]
        if marker is _BitsMarker:
            if not isinstance(value, str) or not _BITS_PATTERN.fullmatch(value):
                raise _error(context, where, "a bit string of 0 and 1", value)
            return tuple(c == "1" for c in value)
        return _array(value, where, context)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        return _parse(options[0], value, where, context)
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise _error(context, where, f"one of {', '.join(map(repr, allowed))}", value)
        return value
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list):
            raise _error(context, where, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(args[0], v, f"{where}[{i}]", context) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _error(context, where, f"a list of {len(args)} items", value)
        return tuple(
            _parse(a, v, f"{where}[{i}]", context)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is Mapping:
        if not isinstance(value, dict):
            raise _error(context, where, "an object", value)
        return _freeze(value)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where, context)  # type: ignore[arg-type]
    if kind is float:
        return _number(value, where, context)
    if kind is bool:
        if not isinstance(value, bool):
            raise _error(context, where, "true or false", value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(context, where, "an integer", value)
        return value
    if kind is str:
        if not isinstance(value, str):
            raise _error(context, where, "a string", value)
        return value
    if kind is Any:
        return _freeze(value)
    raise TypeError(f"no reader for the field type {kind!r} at {where}")


def _required(level: str, context: _Context) -> bool:
    if level == _ALWAYS:
        return True
    if level == _FULL:
        return not context.baseline
    if level == _V11:
        return not context.baseline and context.version != "1.0"
    return False


_HINTS: dict[type, dict[str, Any]] = {}


def _build(cls: type, data: Any, where: str, context: _Context) -> Any:
    if not isinstance(data, dict):
        raise _error(context, where or "the document", "an object", data)
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    known = set()
    for item in dataclasses.fields(cls):
        if item.name == "extra":
            continue
        known.add(item.name)
        path = f"{where}.{item.name}" if where else item.name
        if item.name not in data:
            if _required(item.metadata.get("need", _ALWAYS), context):
                raise DocumentError(f"{context.file}: {path} is missing; {_FIX}")
            values[item.name] = None
            continue
        values[item.name] = _parse(hints[item.name], data[item.name], path, context)
    extra = {k: _freeze(v) for k, v in data.items() if k not in known}
    return cls(**values, extra=types.MappingProxyType(extra))


# --- the document as JSON: non-finite numbers, writing, reading --------------------------


def check_version(data: Any, source: str | Path) -> str:
    """The schema version of a parsed document, which must be an object of a version this
    toolkit reads; the one check of both readers (:func:`read_document`, :func:`read_result`)."""
    if not isinstance(data, dict):
        raise DocumentError(
            f"{source} is not an audit document: expected a JSON object, got "
            f"{type(data).__name__}; {_FIX}"
        )
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise DocumentError(
            f"{source} has schema_version {_shown(version)}; this toolkit reads "
            f"{', '.join(READABLE_VERSIONS)}; re-run the audit with this toolkit version, "
            "or read it with the version that wrote it"
        )
    return version  # type: ignore[no-any-return]


def proportion(count: int, total: int) -> dict[str, Any]:
    """A proportion with its 95 % Wilson interval."""
    low, high = wilson_interval(count, total)
    return {
        "value": count / total if total else None,
        "count": count,
        "total": total,
        "wilson_95": [low, high],
    }


def _token(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_nonfinite(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, tuples, scalars) with every NaN or infinite float
    replaced by its string in ``NONFINITE_TOKENS``; finite numbers stay numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _token(value)
    if isinstance(value, dict):
        return {k: encode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_nonfinite(v) for v in value]
    return value


def decode_nonfinite(value: Any) -> Any:
    """Inverse of :func:`encode_nonfinite`: the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` become floats again, everything else is returned as it is."""
    if isinstance(value, str):
        return NONFINITE_TOKENS.get(value, value)
    if isinstance(value, dict):
        return {k: decode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_nonfinite(v) for v in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as strict JSON, atomically (temporary file and rename).

    Non-finite numbers are encoded (see the module's docstring). The text is built before
    anything touches the disk, and folders created for it are removed again when the write
    fails, so a failure leaves neither a partial file nor an empty folder.
    """
    text = json.dumps(encode_nonfinite(document), indent=1, allow_nan=False)
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (text + "\n").encode())
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _refuse_constant(name: str) -> float:
    raise ValueError(
        f"the non-standard JSON literal {name} (strict JSON has none; a result document "
        f"writes it as the string {_token(float(name))!r})"
    )


def read_document(path: str | Path) -> dict[str, Any]:
    """Read an audit document, refusing unknown schema versions and non-standard JSON, with
    non-finite numbers decoded into floats."""
    path = Path(path)
    document = load_json(path, "result", DocumentError, parse_constant=_refuse_constant)
    check_version(document, path)
    return decode_nonfinite(document)  # type: ignore[no-any-return]


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Proportion:
    """A proportion with its 95 % Wilson interval.

    Attributes:
        value: ``count / total``; None when ``total`` is 0.
        count, total: the counts.
        wilson_95: ``(low, high)`` in [0, 1].
    """

    value: float | None
    count: int
    total: int
    wilson_95: tuple[float, float]
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class BatchSize:
    """One batch size the audit chose, and how (``torchutil.BatchChoice``).

    Attributes:
        size: samples per model evaluation (attacks) or per pass (flatness).
        how: ``fixed`` (asked for), ``estimated`` (from the measured peak and the free
            memory), ``limit`` (everything fits) or ``unmeasured``.
        per_sample_bytes, fixed_bytes: the fitted peak of one step, per sample and fixed.
        available_bytes: free memory when it was chosen.
        halvings: times it was halved after an out-of-memory error.
    """

    size: int
    how: Literal["fixed", "estimated", "limit", "unmeasured"]
    per_sample_bytes: float | None
    fixed_bytes: float | None
    available_bytes: int | None
    halvings: int
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class BatchSizes:
    """``--batch-size`` (None: auto) and what it gave the attacks and flatness (None when
    flatness did not run)."""

    requested: int | None
    attacks: BatchSize
    flatness: BatchSize | None
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where a model of the user's own class came from (``--model``, schema 1.6)."""

    reference: str
    kind: Literal["file", "module"]
    path: str | None
    module: str | None
    name: str
    kwargs: Json
    sha256: str | None
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Where a result comes from. A baseline keeps only the checkpoint, its hash, the seed and
    the versions; the rest is None there."""

    checkpoint: str
    checkpoint_sha256: str
    weights_sha256: str | None = _need(_OPTIONAL)
    model_source: ModelSource | None = _need(_OPTIONAL)
    """None for any model but one of the user's own class (``--model``)."""
    versions: Mapping[str, str | None]
    seed: int
    config: Json | None = _need(_FULL)
    command_line: tuple[str, ...] | None = _need(_FULL)
    started: float | None = _need(_FULL)
    finished: float | None = _need(_FULL)
    host: str | None = _need(_FULL)
    device: str | None = _need(_FULL)
    batch_sizes: BatchSizes | None = _need(_OPTIONAL)
    world_size: int | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """The checkpoint's dropout-family layer: kind, parameters and positions."""

    kind: str
    params: Json
    positions: tuple[int, ...] | None
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """The checkpoint's description (architecture, input, normalisation, how it was read).

    ``mean``/``std`` (None: no normalisation) and ``bounds`` are what the audit applied;
    ``normalization_source`` and ``bounds_source`` say where they came from (schema 1.7; None
    before)."""

    arch: str
    arch_kwargs: Json | None = _need(_OPTIONAL)
    num_classes: int
    input_shape: tuple[int, int, int]
    layer: LayerSpec
    dataset: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    bounds: tuple[float, float]
    source_format: str
    loading_notes: tuple[str, ...]
    training: Json | None = _need(_OPTIONAL)
    clean_accuracy: float | None = _need(_OPTIONAL)
    normalization_source: str | None = _need(_OPTIONAL)
    bounds_source: str | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """The evaluated samples: ``indices`` [N] into the dataset's test split, ``labels`` [N]."""

    dataset: str | None
    source: str | None = _need(_FULL)
    num_samples: int
    indices: tuple[int, ...]
    labels: tuple[int, ...] | None = _need(_FULL)
    classes: tuple[str, ...] | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class GradientStats:
    """Input-gradient health of one attack's run."""

    zero_fraction: float
    vanishing_fraction: float
    vanishing_threshold: float
    nonfinite_logits: int
    nonfinite_gradients: int
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class AttackRecord:
    """One attack's outcome under one norm, for each of the norm's K epsilons over N samples.

    Attributes:
        robust_accuracy_after: [K] reliable robust accuracy after this attack (and the ones
            before it).
        broken, attempted: [K] samples this attack broke / attacked.
        success, attacked, last_success: [K][N] per-sample bits.
        success_step: [K][N] iteration of the first success; -1 not broken, -2 unknown.
        mean_loss_trace: [K][T] mean loss per iteration (None where undefined).
    """

    label: str
    kind: str
    source: str | None = _need(_FULL)
    status: Literal["ok", "failed", "not-applicable"] | None = _need(_FULL)
    message: str | None = _need(_FULL)
    statuses: tuple[Literal["ok", "failed", "not-applicable"], ...] | None = _need(_V11)
    messages: tuple[str | None, ...] | None = _need(_V11)
    params: Json | None = _need(_FULL)
    backend: str | None = _need(_FULL)
    robust_accuracy_after: tuple[Proportion, ...]
    broken: tuple[int, ...] | None = _need(_FULL)
    attempted: tuple[int, ...] | None = _need(_FULL)
    success: BitRows
    attacked: BitRows
    last_success: BitRows | None = _need(_FULL)
    success_step: tuple[tuple[int, ...], ...] | None = _need(_V11)
    mean_loss_trace: tuple[tuple[float | None, ...], ...] | None = _need(_FULL)
    nonfinite: tuple[int, ...] | None = _need(_OPTIONAL)
    nonfinite_samples: BitRows | None = _need(_OPTIONAL)
    nonfinite_evaluations: int | None = _need(_OPTIONAL)
    queries: int | None = _need(_FULL)
    num_forward: int | None = _need(_FULL)
    num_backward: int | None = _need(_FULL)
    wall_time: float | None = _need(_FULL)
    gradient_stats: GradientStats | None = _need(_FULL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """A robustness curve: one attack at M epsilons over S samples.

    Attributes:
        success_rate: [M] share of the S samples broken.
        success: [M][S] per-sample bits.
        samples: [S] positions in the evaluation set (all of it for the nested sweep, a
            subsample for the independent one).
        mean_loss_trace: [M][T].
    """

    attack: str
    epsilons: tuple[float, ...]
    success_rate: tuple[Proportion, ...]
    success: BitRows
    samples: tuple[int, ...] | None = _need(_OPTIONAL)
    mean_loss_trace: tuple[tuple[float | None, ...], ...]
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Failure:
    """An attack or sweep run that failed or did not apply."""

    stage: Literal["attack", "sweep", "independent-sweep"]
    label: str
    epsilon: float | None
    status: Literal["failed", "not-applicable"]
    message: str
    extra: Json = _extra()


def _decode_floats(text: str, dtype: str, shape: tuple[int, ...]) -> tuple[float, ...]:
    codes = {"float16": "e", "float32": "f", "float64": "d"}
    if dtype not in codes:
        raise DocumentError(f"exact values have dtype {dtype!r}; expected float16/32/64")
    data = base64.b64decode(text)
    count = math.prod(shape)
    if len(data) != count * struct.calcsize(codes[dtype]):
        raise DocumentError(
            f"exact values hold {len(data)} bytes, expected {count} {dtype} values of shape "
            f"{list(shape)}"
        )
    return struct.unpack(f"<{count}{codes[dtype]}", data)


def _decode_pixels(text: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    data = base64.b64decode(text)
    if len(data) != math.prod(shape):
        raise DocumentError(f"image holds {len(data)} pixels, expected shape {list(shape)}")
    return tuple(data)


@dataclass(frozen=True, kw_only=True)
class Example:
    """An adversarial example beside its original (images base64-encoded, C×H×W);
    ``predicted`` is the model's prediction on it (None in older documents, or for NaN/Inf
    logits)."""

    attack: str
    epsilon: float
    sample: int
    label: int
    fooled: bool
    predicted: int | None = _need(_OPTIONAL)
    margin: float | None
    success_step: int | None = _need(_V11)
    shape: tuple[int, ...]
    original: str
    adversarial: str
    dtype: Literal["float16", "float32", "float64"] | None = _need(_V11)
    original_exact: str | None = _need(_V11)
    adversarial_exact: str | None = _need(_V11)
    extra: Json = _extra()

    def original_pixels(self) -> tuple[int, ...]:
        """The original's display pixels (0..255), flat, C×H×W order."""
        return _decode_pixels(self.original, self.shape)

    def adversarial_pixels(self) -> tuple[int, ...]:
        """The adversarial example's display pixels (0..255), flat, C×H×W order."""
        return _decode_pixels(self.adversarial, self.shape)

    def original_values(self) -> tuple[float, ...] | None:
        """The original's exact values, flat, C×H×W order (None in schema 1.0)."""
        if self.original_exact is None or self.dtype is None:
            return None
        return _decode_floats(self.original_exact, self.dtype, self.shape)

    def adversarial_values(self) -> tuple[float, ...] | None:
        """The adversarial example's exact values, flat, C×H×W order (None in schema 1.0)."""
        if self.adversarial_exact is None or self.dtype is None:
            return None
        return _decode_floats(self.adversarial_exact, self.dtype, self.shape)


AUTOATTACK_STANDARD = ("APGD-CE", "APGD-T", "FAB-T", "Square")
"""The attacks of AutoAttack's standard version, in its order (Croce and Hein, 2020)."""


def autoattack_components(kind: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """Which attacks of AutoAttack's standard version an attack of ``kind`` with ``params``
    (as the document records them) is: ``("APGD-T",)`` for targeted APGD, all four for
    AutoAttack's standard or plus version, ``()`` for an attack that is none of them."""
    if kind == "autoattack":
        version = params.get("version", "standard")
        return AUTOATTACK_STANDARD if version in ("standard", "plus") else ("APGD-CE",)
    if kind == "apgd":
        if params.get("targeted", False):
            return ("APGD-T",)
        return ("APGD-CE",) if params.get("loss", "ce") == "ce" else ()
    if kind == "fab":
        return ("FAB-T",) if params.get("targeted", True) else ()
    if kind == "square":
        return ("Square",)
    return ()


def _status(record: AttackRecord, k: int) -> str | None:
    """``ok``, ``failed`` or ``not-applicable`` at the ``k``-th epsilon; None when unknown."""
    if record.statuses is not None:
        return record.statuses[k]
    return record.status


def _ran(record: AttackRecord, k: int) -> bool:
    return _status(record, k) in ("ok", None)


@dataclass(frozen=True, kw_only=True)
class NormResult:
    """Everything measured under one norm at its K epsilons over the N samples.

    Attributes:
        reliable_robust_accuracy: [K] worst case over every attack.
        robust: [K][N] samples no attack broke.
        attacks: in the order they ran.
    """

    norm: Literal["linf", "l2"]
    epsilons: tuple[float, ...]
    reliable_robust_accuracy: tuple[Proportion, ...]
    robust: BitRows
    robust_nonfinite: tuple[int, ...] | None = _need(_OPTIONAL)
    attacks: tuple[AttackRecord, ...]
    unbounded_epsilon: float | None = _need(_FULL)
    sweep: Sweep | None = _need(_FULL)
    independent_sweep: Sweep | None = _need(_FULL)
    failures: tuple[Failure, ...] | None = _need(_V11)
    examples: tuple[Example, ...] | None = _need(_FULL)
    extra: Json = _extra()

    def attack(self, label: str) -> AttackRecord:
        """The attack with this label; KeyError names the labels present."""
        for record in self.attacks:
            if record.label == label:
                return record
        labels = ", ".join(r.label for r in self.attacks)
        raise KeyError(f"no attack {label!r} under {self.norm}; present: {labels}")

    def failed_attacks(self, k: int) -> tuple[str, ...]:
        """Labels of the attacks that raised at the ``k``-th epsilon, and ``"LABEL sweep"``
        for a failed sweep of an attack in the main list. Where one did, the samples it would
        have attacked count as robust: every robust accuracy at that epsilon is an upper bound.

        A sweep counts at every epsilon of its norm: at the epsilons it shares with the main
        list, its attack's outcome is the sweep's row, nested (a sample broken at a smaller
        radius of the sweep counts as broken), and when the sweep fails that attack runs on
        its own there instead, a weaker attack than the complete audit's; a document does not
        record the epsilons of a sweep that failed, so every one of its norm counts. The
        independent sweep never does: it runs on a subsample, for the sweep checks only, and
        no robust accuracy is taken from it. (A document of schema 1.0 says only whether an
        attack failed somewhere: it counts at every epsilon. A baseline does not say: none.)"""
        failed = []
        for record in self.attacks:
            if record.statuses is not None:
                if record.statuses[k] == "failed":
                    failed.append(record.label)
            elif record.status == "failed":
                failed.append(record.label)
        labels = {record.label for record in self.attacks}
        for failure in self.failures or ():
            if failure.stage == "sweep" and failure.status == "failed" and failure.label in labels:
                failed.append(f"{failure.label} sweep")
        return tuple(failed)

    def chain(self, k: int) -> tuple[str, ...]:
        """Labels of the attacks that ran at the ``k``-th epsilon, in the order they ran: the
        reliable robust accuracy there is the per-sample worst case over them. (Where a
        document does not say whether an attack ran, a baseline, it counts.)"""
        return tuple(record.label for record in self.attacks if _ran(record, k))

    def autoattack_not_run(self, k: int) -> tuple[str, ...]:
        """Each attack of AutoAttack's standard version (``AUTOATTACK_STANDARD``) that has no
        counterpart among the attacks that ran at the ``k``-th epsilon, with why:
        ``"APGD-CE (not in the suite)"``, ``"FAB-T (failed)"``, ``"FAB-T (not applicable)"``.
        A counterpart is the same algorithm (pyautoattack's APGD on the cross-entropy,
        untargeted; APGD-T; FAB-T; Square), whatever its budget; PGD-CE is not APGD-CE.
        Empty for a document that does not record the attacks' parameters (a baseline)."""
        if any(record.params is None for record in self.attacks):
            return ()
        found: dict[str, str] = {}
        for record in self.attacks:
            status = "ok" if _ran(record, k) else _status(record, k)
            for name in autoattack_components(record.kind, record.params or {}):
                if found.get(name) != "ok":
                    found[name] = status or "not run"
        reasons = {"failed": "failed", "not-applicable": "not applicable"}
        missing = []
        for name in AUTOATTACK_STANDARD:
            if name not in found:
                missing.append(f"{name} (not in the suite)")
            elif found[name] != "ok":
                missing.append(f"{name} ({reasons.get(found[name], 'not run')})")
        return tuple(missing)

    def eot_passes(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """The attacks whose gradients averaged more than one forward pass (EOT, for a
        stochastic model), grouped by the number of passes, fewest first:
        ``((8, ("pgd-ce", "pgd-t")), (20, ("eot-apgd-ce", "eot-apgd-dlr")))``."""
        groups: dict[int, list[str]] = {}
        for record in self.attacks:
            passes = (record.params or {}).get("eot_samples", 1)
            if isinstance(passes, int) and passes > 1:
                groups.setdefault(passes, []).append(record.label)
        return tuple((passes, tuple(groups[passes])) for passes in sorted(groups))

    def tested(self, k: int) -> bool:
        """Whether some attack ran at the ``k``-th epsilon (else its robust accuracy is only
        the clean accuracy). True when the document does not say (a baseline)."""
        known = [r for r in self.attacks if r.statuses is not None or r.status is not None]
        if not known:
            return True
        return any((r.statuses[k] if r.statuses is not None else r.status) == "ok" for r in known)


@dataclass(frozen=True, kw_only=True)
class Robustness:
    """The attack suite's outcome, per norm, with its cost."""

    eot_samples: int | None = _need(_FULL)
    norms: tuple[NormResult, ...]
    num_forward: int | None = _need(_FULL)
    num_backward: int | None = _need(_FULL)
    wall_time: float | None = _need(_FULL)
    extra: Json = _extra()


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
class FisherRaoEstimate:
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
class TraceEstimate:
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
class SharpnessEstimate:
    """ε-sharpness with its standard error."""

    value: float
    stderr: float | None
    epsilon: float | None = _need(_OPTIONAL)
    base_loss: float | None = _need(_OPTIONAL)
    max_loss: float | None = _need(_OPTIONAL)
    num_steps: int | None = _need(_OPTIONAL)
    num_draws: int | None = _need(_OPTIONAL)
    """Draws of a mini-batch (or the whole data) (schema 1.8)."""
    minibatch_size: int | None = _need(_OPTIONAL)
    """Samples per draw; None when every draw was the whole data (and before schema 1.8)."""
    stopped_by: str | None = _need(_OPTIONAL)
    """``target``, ``budget`` or ``all-samples`` (schema 1.8)."""
    provenance: MeasureProvenance | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Eigenvalues:
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
class SpectralDensity:
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
class Landscape:
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
    epsilon_sharpness: SharpnessEstimate | None = _need(_OPTIONAL)
    hessian_eigenvalues: Eigenvalues | None = _need(_OPTIONAL)
    spectral_density: SpectralDensity | None = _need(_OPTIONAL)
    landscape_1d: Landscape | None = _need(_OPTIONAL)
    landscape_2d: Landscape | None = _need(_OPTIONAL)
    active_layers: FlatnessResult | None = _need(_OPTIONAL)
    """The same measures with the dropout-family layers active (schema 1.3; None for a model
    without such layers)."""
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class ActivationStats:
    """Statistics of one dropout-family layer's input over the evaluation set."""

    name: str
    kind: Literal["normout", "qsd", "dropout"]
    description: str | None = _need(_OPTIONAL)
    mean: float
    std: float
    max: float
    zero_fraction: float
    num_elements: int
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Probes:
    """Direct measurements of the model (see ``analysis.probes.ModelProbes`` for each field);
    fields a document does not carry (schema 1.0) are None."""

    stochastic: bool
    train_mode_modules: tuple[str, ...]
    probability_outputs: bool
    input_gradient_exists: bool
    batch_differing: int
    fd_applicable: bool
    fd_disagreement_fraction: float
    num_samples: int | None = _need(_OPTIONAL)
    input_gradient_note: str | None = _need(_OPTIONAL)
    clean_zero_gradient_fraction: float | None = _need(_OPTIONAL)
    clean_margins: NumberArray = _need(_OPTIONAL)
    clean_gradient_norms: NumberArray = _need(_OPTIONAL)
    max_repeat_difference: float | None = _need(_OPTIONAL)
    repeat_samples: int | None = _need(_OPTIONAL)
    num_repeats: int | None = _need(_OPTIONAL)
    prediction_flips: int | None = _need(_OPTIONAL)
    prediction_flip_fraction: float | None = _need(_OPTIONAL)
    nonfinite_logits: int | None = _need(_OPTIONAL)
    nonfinite_gradients: int | None = _need(_OPTIONAL)
    batch_size: int | None = _need(_OPTIONAL)
    batch_composition: str | None = _need(_OPTIONAL)
    batch_compared: int | None = _need(_OPTIONAL)
    batch_tolerance: float | None = _need(_OPTIONAL)
    batch_max_relative_difference: float | None = _need(_OPTIONAL)
    batch_prediction_flips: int | None = _need(_OPTIONAL)
    batch_grouped: int | None = _need(_OPTIONAL)
    batch_grouped_compared: int | None = _need(_OPTIONAL)
    fd_note: str | None = _need(_OPTIONAL)
    fd_precision: str | None = _need(_OPTIONAL)
    fd_steps: tuple[float, ...] | None = _need(_OPTIONAL)
    fd_tolerance: float | None = _need(_OPTIONAL)
    fd_samples: int | None = _need(_OPTIONAL)
    fd_informative: int | None = _need(_OPTIONAL)
    fd_nonfinite: int | None = _need(_OPTIONAL)
    fd_step_disagreement: tuple[float, ...] | None = _need(_OPTIONAL)
    fd_disagreeing: int | None = _need(_OPTIONAL)
    fd_median_ratio: float | None = _need(_OPTIONAL)
    input_gradient_error: str | None = _need(_OPTIONAL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One red-flag check's outcome. A baseline keeps only code, status and explanation."""

    code: str
    title: str | None = _need(_FULL)
    status: Literal["pass", "warn", "fail", "n/a"]
    evidence: Json | None = _need(_FULL)
    explanation: str
    remedy: str | None = _need(_FULL)
    kind: Literal["masking", "reliability"] | None = _need(_FULL)
    extra: Json = _extra()


@dataclass(frozen=True, kw_only=True)
class AuditResult:
    """A whole audit document (or a baseline: ``baseline`` True, the sections it leaves out
    None).

    Attributes:
        clean_correct: [N] whether each evaluated sample is classified correctly.
        flatness: None when the audit ran without flatness (or for a baseline).
    """

    schema_version: str
    baseline: bool = _need(_OPTIONAL)
    provenance: Provenance
    checkpoint: CheckpointInfo | None = _need(_FULL)
    evaluation: Evaluation
    clean_accuracy: Proportion
    clean_correct: Bits
    clean_nonfinite: Bits | None = _need(_OPTIONAL)
    robustness: Robustness
    flatness: FlatnessResult | None = _need(_FULL)
    flatness_note: str | None = _need(_OPTIONAL)
    activations: tuple[ActivationStats, ...] | None = _need(_FULL)
    activations_note: str | None = _need(_OPTIONAL)
    probes: Probes | None = _need(_FULL)
    findings: tuple[Finding, ...]
    verdict: str
    extra: Json = _extra()

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
        context = _Context(str(source), version, data.get("baseline") is True)
        result = _build(cls, data, "", context)
        if result.baseline is None:
            result = dataclasses.replace(result, baseline=False)
        _check_lengths(result, context)
        return typing.cast(AuditResult, result)

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


def _check_lengths(result: AuditResult, context: _Context) -> None:
    """One index (a position in the test split) per evaluated sample, and per-sample rows of
    one bit per sample and one row per epsilon."""
    n = result.evaluation.num_samples
    indices = result.evaluation.indices
    if len(indices) != n:
        raise _error(context, "evaluation.indices", f"{n} indices (num_samples)", len(indices))
    if any(i < 0 for i in indices):
        raise _error(context, "evaluation.indices", "non-negative sample indices", min(indices))

    def rows(where: str, value: tuple[tuple[bool, ...], ...] | None, count: int) -> None:
        if value is None:
            return
        if len(value) != count:
            raise _error(context, where, f"{count} rows (one per epsilon)", f"{len(value)} rows")
        for i, row in enumerate(value):
            if len(row) != n:
                raise _error(context, f"{where}[{i}]", f"{n} bits (one per sample)", len(row))

    if len(result.clean_correct) != n:
        raise _error(context, "clean_correct", f"{n} bits", len(result.clean_correct))
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
