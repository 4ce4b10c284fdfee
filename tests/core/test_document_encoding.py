"""Writing the typed records of ``audit.json`` back: every record encodes to what it was read
from."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from document_helpers import ROOT, _load

from core.document import AuditResult, read_result


def _records(value: Any) -> list[Any]:
    """Every record inside ``value`` (a record, a tuple of them), ``value`` first."""
    if isinstance(value, tuple):
        return [r for v in value for r in _records(v)]
    if not dataclasses.is_dataclass(value):
        return []
    found = [value]
    for item in dataclasses.fields(value):
        found += _records(getattr(value, item.name))
    return found


def _round_trips(raw: dict[str, Any], source: str) -> list[Any]:
    """The records of the document ``raw``: it reads, and writes back, into itself."""
    result = AuditResult.from_dict(raw, source)
    assert result.to_dict() == raw
    again = AuditResult.from_dict(json.loads(json.dumps(result.to_dict())), source)
    assert again == result
    return _records(result)


def _declared_records() -> set[type]:
    from core import attackrecords, document, flatrecords

    return {
        value
        for module in (document, attackrecords, flatrecords)
        for value in vars(module).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == module.__name__
        and not value.__name__.startswith("_")
    }


@pytest.mark.data
def test_every_record_encodes_to_what_it_was_read_from(
    documents: dict[str, Path], baseline: Path
) -> None:
    from core.docfields import ReadContext, build_record
    from core.document import encode

    found: list[Any] = []
    for path in (
        *documents.values(),
        baseline,
        ROOT / ".ci" / "baselines" / "digits-mlp-dropout.json",
    ):
        found += _round_trips(_load(path), str(path))
    # What these audits do not hold: a model of the user's own, failed runs.
    raw = _load(documents["no_flatness"])
    raw["provenance"]["model_source"] = {
        "reference": "net.py:Net",
        "kind": "file",
        "path": "/models/net.py",
        "module": None,
        "name": "Net",
        "kwargs": {"width": 2, "sizes": [1, "NaN"]},
        "sha256": None,
    }
    raw["robustness"]["norms"][0]["failures"] = [
        {"stage": "sweep", "label": "pgd", "epsilon": None, "status": "failed", "message": "x"},
        {
            "stage": "attack",
            "label": "fab",
            "epsilon": 0.1,
            "status": "not-applicable",
            "message": "y",
        },
    ]
    found += _round_trips(raw, "<failures>")
    # Byte for byte as the audit wrote it (a baseline is written by the gate, in its order).
    for path in documents.values():
        text = json.dumps(read_result(path).to_dict(), indent=1, allow_nan=False) + "\n"
        assert text == path.read_text()
    # Each record on its own: decode(encode(record)) == record (the whole result above).
    context = ReadContext("<record>", "1.8", baseline=False)
    for record in found:
        if not isinstance(record, AuditResult):
            assert build_record(type(record), encode(record), "", context) == record
    assert {type(r) for r in found} == _declared_records()


@pytest.mark.data
def test_a_schema_1_0_document_encodes_without_the_later_fields(
    documents: dict[str, Path],
) -> None:
    raw = _load(documents["flatness"])
    for section in raw["robustness"]["norms"]:
        del section["failures"]
        for attack in section["attacks"]:
            for key in ("success_step", "statuses", "messages"):
                del attack[key]
        for example in section["examples"]:
            for key in ("success_step", "dtype", "original_exact", "adversarial_exact"):
                del example[key]
    raw["schema_version"] = "1.0"
    _round_trips(raw, "<1.0>")


def test_encoding_keeps_unknown_keys_and_non_finite_numbers() -> None:
    from core.docfields import ReadContext, build_record
    from core.document import Proportion, encode

    raw = {"value": "NaN", "count": 0, "total": 0, "wilson_95": [0.0, "Infinity"], "new": [1]}
    record = build_record(Proportion, raw, "", ReadContext("<p>", "1.8", baseline=False))
    assert math.isnan(record.value) and record.extra == {"new": (1,)}
    assert encode(record) == raw
    assert json.dumps(encode(record), allow_nan=False)


@pytest.mark.data
def test_a_baseline_is_the_document_cut_to_what_the_gate_reads(
    documents: dict[str, Path], baseline: Path
) -> None:
    raw = _load(documents["flatness"])
    made = AuditResult.from_dict(raw).to_baseline()
    assert json.dumps(made, indent=1) + "\n" == baseline.read_text()  # what the gate wrote
    assert list(made) == [
        "schema_version",
        "baseline",
        "provenance",
        "evaluation",
        "clean_accuracy",
        "clean_correct",
        "robustness",
        "findings",
        "verdict",
    ]
    assert made["baseline"] is True and made["verdict"] == raw["verdict"]
    # The order baselines have always been written in: the seed before the versions.
    assert list(made["provenance"]) == [
        "checkpoint",
        "checkpoint_sha256",
        "weights_sha256",
        "seed",
        "versions",
    ]
    assert list(made["evaluation"]) == ["dataset", "num_samples", "indices"]
    assert made["clean_accuracy"] == raw["clean_accuracy"]
    for cut, norm in zip(made["robustness"]["norms"], raw["robustness"]["norms"], strict=True):
        assert list(cut) == ["norm", "epsilons", "reliable_robust_accuracy", "robust", "attacks"]
        for attack in cut["attacks"]:
            assert list(attack) == [
                "label",
                "kind",
                "status",
                "statuses",
                "robust_accuracy_after",
                "success",
                "attacked",
            ]
        assert cut["attacks"][0]["success"] == norm["attacks"][0]["success"]
    assert [list(f) for f in made["findings"]] == [["code", "status", "explanation"]] * len(
        raw["findings"]
    )
    # Unknown keys: a record the baseline keeps whole (a proportion) keeps them, a record it
    # cuts down loses them with the fields it leaves out.
    raw["clean_accuracy"]["new"] = 1
    raw["provenance"]["new"] = 2
    raw["findings"][0]["new"] = 3
    raw["new"] = 4
    made = AuditResult.from_dict(raw).to_baseline()
    assert made["clean_accuracy"]["new"] == 1
    assert "new" not in made and "new" not in made["provenance"]
    assert "new" not in made["findings"][0]
    # A checkpoint without a hash of its weights (a graph archive) says so.
    raw["provenance"]["weights_sha256"] = None
    assert AuditResult.from_dict(raw).to_baseline()["provenance"]["weights_sha256"] is None
