"""The result document as JSON: its schema versions, the error every unreadable document ends
in, non-finite numbers as strings, and writing and reading the file.

Strict JSON has no NaN or infinity, so a number that is NaN or infinite is written as one of
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (``NONFINITE_TOKENS``); ``null``
means a value that does not exist (not measured, not applicable). :func:`write_json` encodes
them and writes strict JSON only (``allow_nan=False``); :func:`read_document` refuses the
non-standard literals ``NaN``/``Infinity`` and decodes the three strings back into floats
wherever they stand, so no text field of the document may hold exactly one of them.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from core.boundary import atomic_write_bytes, load_json

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
"""Schema versions this toolkit reads (the writer, :func:`write_json`, and this reader)."""

NONFINITE_TOKENS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""How the document writes each non-finite number, and the float each string reads back as."""

FIX_ADVICE = "re-create it with python -m analysis.audit (or --update-baseline for a baseline)"


class DocumentError(ValueError):
    """A result document that cannot be read: missing, malformed or of an unknown version."""


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_version(data: Any, source: str | Path) -> str:
    """The schema version of a parsed document, which must be an object of a version this
    toolkit reads; the one check of both readers (:func:`read_document`, :func:`read_result`)."""
    if not isinstance(data, dict):
        raise DocumentError(
            f"{source} is not an audit document: expected a JSON object, got "
            f"{type(data).__name__}; {FIX_ADVICE}"
        )
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise DocumentError(
            f"{source} has schema_version {short_repr(version)}; this toolkit reads "
            f"{', '.join(READABLE_VERSIONS)}; re-run the audit with this toolkit version, "
            "or read it with the version that wrote it"
        )
    return version  # type: ignore[no-any-return]


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
