"""The JSON schema of ``audit.json``: committed as the records declare it, and as strict as
the reader."""

from __future__ import annotations

from typing import Any


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


def _holders() -> dict[type, list[Any]]:
    """Each record of the document, with the fields that hold it (the document itself: none)."""
    import dataclasses
    import typing

    from core.document import AuditResult

    holders: dict[type, list[Any]] = {AuditResult: []}

    def records(kind: Any) -> list[type]:
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            return [kind]
        return [cls for arg in typing.get_args(kind) for cls in records(arg)]

    todo = [AuditResult]
    while todo:
        cls = todo.pop()
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            for record in records(hints[item.name]):
                if record not in holders:
                    holders[record] = []
                    todo.append(record)
                holders[record].append(item)
    return holders


def test_every_field_declares_a_readable_version_no_later_than_the_written_one() -> None:
    import dataclasses

    from core.docfields import added_in
    from core.document import READABLE_VERSIONS, SCHEMA_VERSION

    latest = READABLE_VERSIONS.index(SCHEMA_VERSION)
    for cls in _holders():
        for item in dataclasses.fields(cls):
            version = added_in(item)
            assert version in READABLE_VERSIONS, (cls.__name__, item.name, version)
            assert READABLE_VERSIONS.index(version) <= latest, (cls.__name__, item.name)


def test_what_a_document_of_schema_1_0_lacks_was_added_in_1_1() -> None:
    import dataclasses

    from core.docfields import FULL, added_in, required

    lacking = {
        (cls.__name__, item.name)
        for cls in _holders()
        for item in dataclasses.fields(cls)
        if required(item, "1.1") and not required(item, "1.0")
    }
    assert lacking == {
        ("NormResult", "failures"),
        ("AttackRecord", "statuses"),
        ("AttackRecord", "messages"),
        ("AttackRecord", "success_step"),
        ("Example", "success_step"),
        ("Example", "dtype"),
        ("Example", "original_exact"),
        ("Example", "adversarial_exact"),
    }
    for cls in _holders():
        for item in dataclasses.fields(cls):
            if (cls.__name__, item.name) in lacking:
                assert item.metadata["need"] == FULL and added_in(item) == "1.1"


def test_a_field_read_wherever_its_record_is_is_no_later_than_the_record() -> None:
    """A field required wherever its record stands (from every version on) cannot have been
    added after a field that holds the record: a document of the holder's version would be
    refused for lacking it."""
    import dataclasses

    from core.docfields import FIRST_VERSION, added_in, required
    from core.document import READABLE_VERSIONS

    for cls, holders in _holders().items():
        oldest = min(
            (READABLE_VERSIONS.index(added_in(h)) for h in holders),
            default=READABLE_VERSIONS.index(FIRST_VERSION),
        )
        for item in dataclasses.fields(cls):
            if item.name == "extra" or not required(item, FIRST_VERSION):
                continue
            assert READABLE_VERSIONS.index(added_in(item)) <= oldest, (cls.__name__, item.name)


def test_the_schema_says_which_version_added_each_later_field() -> None:
    import dataclasses

    from core.docfields import FIRST_VERSION, added_in
    from core.schema import _name, json_schema

    schema = json_schema()
    for cls in _holders():
        properties = (
            schema["properties"]
            if _name(cls) == "audit_result"
            else schema["$defs"][_name(cls)]["properties"]
        )
        for item in dataclasses.fields(cls):
            if item.name in ("extra", "schema_version"):
                continue
            description = properties[item.name].get("description", "")
            version = added_in(item)
            added = f"Added in schema {version}."
            assert description.endswith(added) == (version != FIRST_VERSION), (
                cls.__name__,
                item.name,
            )
    model_source = schema["$defs"]["provenance"]["properties"]["model_source"]
    assert model_source["description"].endswith("(``--model``). Added in schema 1.6.")


def test_need_refuses_a_version_the_reader_does_not_know() -> None:
    import pytest

    from core.docfields import OPTIONAL, need

    with pytest.raises(ValueError, match="'1.9' is not a schema version"):
        need(OPTIONAL, since="1.9")
