"""The JSON Schema of the result document, generated from the records of ``core.document``.

The records are the one declaration of the document: each field with its type, whether a full
document of this version must hold it, the schema version that added it (its description ends
"Added in schema 1.6." when that is later than the first) and what it means (the record's
docstring and the string under each field). :func:`json_schema` turns them into a JSON Schema
(draft 2020-12) that accepts what :func:`core.document.read_result` reads, field for field; the
committed ``audit.schema.json`` beside this module is its output, and a test keeps it current.
Write it again after changing a record::

    python -m core.schema > core/audit.schema.json

The schema describes a full document of the version this toolkit writes; a baseline (which
carries only what the gate reads) and older versions are read by ``read_result`` alone.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from core import document
from core.docfields import FIRST_VERSION, added_in, required
from core.document import NONFINITE_TOKENS, SCHEMA_VERSION, AuditResult

__all__ = ["SCHEMA_PATH", "json_schema"]

SCHEMA_PATH = Path(__file__).resolve().parent / "audit.schema.json"
"""The committed schema: :func:`json_schema`'s output."""


def _name(cls: type) -> str:
    """``NormResult`` -> ``norm_result``: the record's name among the schema's definitions."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def _described(cls: type) -> tuple[str | None, dict[str, str]]:
    """The record's own docstring (its first paragraph) and the string under each field."""
    own = cls.__dict__.get("__doc__") or ""
    summary = None if own.startswith(f"{cls.__name__}(") else own.split("\n\n")[0]
    fields: dict[str, str] = {}
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    statements = body.body if isinstance(body, ast.ClassDef) else []
    for before, after in zip(statements, statements[1:], strict=False):
        if (
            isinstance(before, ast.AnnAssign)
            and isinstance(before.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            fields[before.target.id] = after.value.value
    return (_flat(summary) if summary else None), {k: _flat(v) for k, v in fields.items()}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _description(note: str | None, since: str) -> str | None:
    """A field's description: the string under it, then the schema version that added it when
    that is not the first ("Added in schema 1.6.")."""
    if since == FIRST_VERSION:
        return note
    added = f"Added in schema {since}."
    if not note:
        return added
    return f"{note} {added}" if note.endswith(".") else f"{note}. {added}"


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {
            "real": {
                "description": "a number; NaN and the infinities are written as these strings",
                "oneOf": [{"type": "number"}, {"enum": list(NONFINITE_TOKENS)}],
            },
            "bits": {
                "description": "one character per evaluated sample, in the order of "
                "evaluation.indices",
                "type": "string",
                "pattern": "^[01]*$",
            },
            "numbers": {
                "description": "a number, null, or nested lists of them",
                "anyOf": [
                    {"$ref": "#/$defs/real"},
                    {"type": "null"},
                    {"type": "array", "items": {"$ref": "#/$defs/numbers"}},
                ],
            },
        }

    def kind(self, kind: Any) -> dict[str, Any]:
        """The schema of one field type, as ``core.document``'s reader reads it."""
        origin = typing.get_origin(kind)
        if origin is Annotated:
            marker = kind.__metadata__[0]
            if isinstance(marker, type) and issubclass(marker, Enum):
                return {"enum": [member.value for member in marker]}
            bits = marker is typing.get_args(document.Bits)[1]
            return {"$ref": "#/$defs/bits" if bits else "#/$defs/numbers"}
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(kind) if a is not type(None)]
            first = self.kind(options[0])
            if len(options) < len(typing.get_args(kind)):
                return {"anyOf": [first, {"type": "null"}]}
            return first
        if origin is Literal:
            return {"enum": list(typing.get_args(kind))}
        if origin is tuple:
            args = typing.get_args(kind)
            if len(args) == 2 and args[1] is Ellipsis:
                return {"type": "array", "items": self.kind(args[0])}
            return {
                "type": "array",
                "prefixItems": [self.kind(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        if origin is Mapping:
            return {"type": "object"}
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            name = _name(kind)
            if name not in self.defs:
                self.defs[name] = {}  # placeholder: a record may hold itself
                self.defs[name] = self.record(kind)
            return {"$ref": f"#/$defs/{name}"}
        simple: dict[type, dict[str, str]] = {
            float: {"$ref": "#/$defs/real"},
            bool: {"type": "boolean"},
            int: {"type": "integer"},
            str: {"type": "string"},
        }
        if kind in simple:
            return dict(simple[kind])
        if kind is Any:
            return {}
        raise TypeError(f"no schema for the field type {kind!r}")

    def record(self, cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls, include_extras=True)
        summary, notes = _described(cls)
        properties: dict[str, Any] = {}
        needed = []
        for item in dataclasses.fields(cls):
            if item.name == "extra":
                continue
            schema = self.kind(hints[item.name])
            description = _description(notes.get(item.name), added_in(item))
            if description:
                schema = {"description": description, **schema}
            properties[item.name] = schema
            if required(item, SCHEMA_VERSION):
                needed.append(item.name)
        out: dict[str, Any] = {"description": summary} if summary else {}
        return out | {"type": "object", "required": needed, "properties": properties}


def json_schema() -> dict[str, Any]:
    """The document's JSON Schema (draft 2020-12), from the records of ``core.document``."""
    builder = _Builder()
    root = builder.record(AuditResult)
    root["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://robaudit.invalid/audit.schema.json",
        "title": "robaudit audit result",
        **root,
        "$defs": dict(sorted(builder.defs.items())),
    }


def text() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(json_schema(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
