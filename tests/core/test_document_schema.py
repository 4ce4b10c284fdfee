"""The JSON schema of ``audit.json``: committed as the records declare it, and as strict as
the reader."""

from __future__ import annotations


def test_the_committed_schema_is_the_one_the_records_declare() -> None:
    from core.schema import SCHEMA_PATH, text

    assert SCHEMA_PATH.read_text() == text(), (
        "core/audit.schema.json is stale: python -m core.schema > core/audit.schema.json"
    )


def test_the_schema_requires_what_the_reader_requires_of_a_full_document() -> None:
    import jsonschema

    from core.schema import json_schema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    proportion = {"value": 0.5, "count": 1, "total": 2, "wilson_95": [0.1, 0.9]}
    validator = jsonschema.Draft202012Validator(
        {"$defs": schema["$defs"], "$ref": "#/$defs/proportion"}
    )
    assert validator.is_valid(proportion)
    assert validator.is_valid(dict(proportion, value="NaN"))  # a non-finite number's string
    assert not validator.is_valid(dict(proportion, value="nan"))
    assert not validator.is_valid({k: v for k, v in proportion.items() if k != "count"})
    assert validator.is_valid(dict(proportion, unknown_key=1))  # kept by the reader in extra


def test_the_status_constants_are_the_declared_vocabularies() -> None:
    from typing import get_args

    from core.document import FAILED, NOT_APPLICABLE, OK, AttackStatus, FailureStatus

    assert get_args(AttackStatus) == (OK, FAILED, NOT_APPLICABLE)
    assert get_args(FailureStatus) == (FAILED, NOT_APPLICABLE)


def test_the_flatness_measures_are_the_fields_of_the_flatness_section() -> None:
    from dataclasses import fields

    from core.flatrecords import MEASURES, FlatnessResult

    named = [f.name for f in fields(FlatnessResult)]
    assert tuple(name for name in named if name in MEASURES) == MEASURES
    assert set(named) - set(MEASURES) == {"seed", "config", "active_layers", "extra"}
