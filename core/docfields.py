"""How a record of the result document declares its fields, and the reader that checks a parsed
document against those declarations and builds the frozen records.

A record is a frozen dataclass whose field names are the document's keys and whose types say
how each value is read: bit strings (:data:`Bits`) become tuples of bools, open-ended objects
(:data:`Json`) read-only mappings whose lists are tuples, a string of a vocabulary
(``Annotated[str, SomeStrEnum]``) one of that enumeration's values, kept as the plain string;
numbers may be the strings of ``NONFINITE_TOKENS``. ``need`` says how much a field is required
(always, in full documents, or never), the schema version that added it (``since``: a full
document older than that lacks it), when the writer leaves it out and whether a baseline keeps
it; keys the reader does not know are kept in the record's ``extra``.

:func:`encode` is the reader backwards, driven by the same declarations: it turns a record into
the JSON object the document holds, its keys in the order of the record's fields (the order
the audit writes them in), and reading that object gives the record back. :func:`encode_baseline`
writes the baseline made from a record: only the fields a baseline keeps.

It serves the modules that declare the records (:mod:`core.document`, :mod:`core.attackrecords`,
:mod:`core.flatrecords`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar

from core.docjson import (
    FIX_ADVICE,
    NONFINITE_TOKENS,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    DocumentError,
    decode_nonfinite,
    encode_nonfinite,
    short_repr,
)

T = TypeVar("T")

_BITS_PATTERN = re.compile(r"[01]*")


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

# How much a field is required: always; in full documents (not baselines) of the schema
# version that added it or later; or never (an absent key reads as None).
ALWAYS, FULL, OPTIONAL = "always", "full", "optional"

FIRST_VERSION = READABLE_VERSIONS[0]
"""The first schema version: what a field declares when it has been in the document from the
start (``need``'s ``since``)."""

_KEEP = object()


def need(
    level: str = ALWAYS,
    *,
    since: str = FIRST_VERSION,
    omit: Any = _KEEP,
    omit_nested: bool = False,
    baseline: bool = False,
) -> Any:
    """A field required at ``level`` and added to the document in schema version ``since``
    (one of ``READABLE_VERSIONS``): a full document older than that does not hold it, so a
    ``FULL`` field is required only from ``since`` on. The writer leaves the field out of the
    document when it holds ``omit`` (None for a field written only when it has a value), or,
    with ``omit_nested``, when it is None in a record that is itself this field's value (the
    flatness with the dropout-family layers active has none of its own). A baseline keeps the
    fields required always and, of the others, those declared with ``baseline`` (what the gate
    reads of them)."""
    if since not in READABLE_VERSIONS:
        raise ValueError(f"since={since!r} is not a schema version: {READABLE_VERSIONS}")
    return field(
        metadata={
            "need": level,
            "since": since,
            "omit": omit,
            "omit_nested": omit_nested,
            "baseline": baseline,
        }
    )


def in_baseline(item: dataclasses.Field[Any]) -> bool:
    """Whether a baseline keeps the field ``item`` (see :func:`need`)."""
    return item.metadata.get("need", ALWAYS) == ALWAYS or bool(item.metadata.get("baseline"))


def added_in(item: dataclasses.Field[Any]) -> str:
    """The schema version that added the field ``item`` to its record."""
    return str(item.metadata.get("since", FIRST_VERSION))


def _older(version: str, added: str) -> bool:
    """Whether a document of ``version`` is older than the schema version ``added``."""
    return (
        added != FIRST_VERSION
        and version in READABLE_VERSIONS
        and READABLE_VERSIONS.index(version) < READABLE_VERSIONS.index(added)
    )


def required(item: dataclasses.Field[Any], version: str, *, baseline: bool = False) -> bool:
    """Whether a document of ``version`` (a baseline with ``baseline``) must hold the field
    ``item`` wherever it holds the field's record."""
    level = item.metadata.get("need", ALWAYS)
    if level == ALWAYS:
        return True
    if level == FULL:
        return not baseline and not _older(version, added_in(item))
    return False


def extra_field() -> Any:
    return field(default_factory=lambda: types.MappingProxyType({}), repr=False, compare=False)


class Picklable:
    """A record that pickles (the resume cache keeps the results that carry it): its
    ``extra`` is read-only, which a pickle cannot hold, so it is stored as a plain dict."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        state["extra"] = dict(state["extra"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, extra=types.MappingProxyType(dict(state["extra"])))


@dataclass(frozen=True)
class ReadContext:
    file: str
    version: str
    baseline: bool


def field_error(context: ReadContext, where: str, expected: str, value: Any) -> DocumentError:
    return DocumentError(
        f"{context.file}: {where} should be {expected}, got {short_repr(value)}; {FIX_ADVICE}"
    )


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _number(value: Any, where: str, context: ReadContext) -> float:
    if isinstance(value, str) and value in NONFINITE_TOKENS:
        return NONFINITE_TOKENS[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field_error(context, where, 'a number (or "NaN", "Infinity", "-Infinity")', value)
    return float(value)


def _array(value: Any, where: str, context: ReadContext) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(_array(v, f"{where}[{i}]", context) for i, v in enumerate(value))
    return _number(value, where, context)


def _parse(kind: Any, value: Any, where: str, context: ReadContext) -> Any:
    origin = typing.get_origin(kind)
    if origin is Annotated:
        marker = kind.__metadata__[0]
        if marker is _BitsMarker:
            if not isinstance(value, str) or not _BITS_PATTERN.fullmatch(value):
                raise field_error(context, where, "a bit string of 0 and 1", value)
            return tuple(c == "1" for c in value)
        if isinstance(marker, type) and issubclass(marker, Enum):
            allowed = tuple(member.value for member in marker)
            if value not in allowed:
                raise field_error(context, where, f"one of {', '.join(map(repr, allowed))}", value)
            return value
        return _array(value, where, context)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        return _parse(options[0], value, where, context)
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise field_error(context, where, f"one of {', '.join(map(repr, allowed))}", value)
        return value
    if origin is tuple:
        args = typing.get_args(kind)
        if not isinstance(value, list):
            raise field_error(context, where, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(args[0], v, f"{where}[{i}]", context) for i, v in enumerate(value))
        if len(value) != len(args):
            raise field_error(context, where, f"a list of {len(args)} items", value)
        return tuple(
            _parse(a, v, f"{where}[{i}]", context)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is Mapping:
        if not isinstance(value, dict):
            raise field_error(context, where, "an object", value)
        return _freeze(value)
    if dataclasses.is_dataclass(kind):
        return build_record(kind, value, where, context)  # type: ignore[arg-type]
    if kind is float:
        return _number(value, where, context)
    if kind is bool:
        if not isinstance(value, bool):
            raise field_error(context, where, "true or false", value)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise field_error(context, where, "an integer", value)
        return value
    if kind is str:
        if not isinstance(value, str):
            raise field_error(context, where, "a string", value)
        return value
    if kind is Any:
        return _freeze(value)
    raise TypeError(f"no reader for the field type {kind!r} at {where}")


_HINTS: dict[type, dict[str, Any]] = {}


def build_record(cls: type, data: Any, where: str, context: ReadContext) -> Any:
    if not isinstance(data, dict):
        raise field_error(context, where or "the document", "an object", data)
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
            if required(item, context.version, baseline=context.baseline):
                raise DocumentError(f"{context.file}: {path} is missing; {FIX_ADVICE}")
            values[item.name] = None
            continue
        values[item.name] = _parse(hints[item.name], data[item.name], path, context)
    extra = {k: _freeze(v) for k, v in data.items() if k not in known}
    return cls(**values, extra=types.MappingProxyType(extra))


def as_read(value: Any) -> Any:
    """A JSON-able value (numbers, strings, lists, tuples, dicts) as the reader holds it:
    read-only mappings, tuples for lists, non-finite numbers as the floats of
    ``NONFINITE_TOKENS``; for a record built in memory to equal the one read back."""
    return _freeze(decode_nonfinite(encode_nonfinite(value)))


def decode(cls: type[T], data: Any, source: str = "<record>", where: str = "") -> T:
    """The record ``cls`` of ``data`` (JSON-able, as a writer would write it at ``where`` in
    a full document of this version), checked as :func:`core.document.read_result` checks it.

    Raises:
        DocumentError: a field missing or of the wrong type, named with ``source``.
    """
    context = ReadContext(str(source), SCHEMA_VERSION, baseline=False)
    return build_record(cls, decode_nonfinite(encode_nonfinite(data)), where, context)  # type: ignore[no-any-return]


def _thaw(value: Any) -> Any:
    """A frozen open-ended value as JSON: mappings become dicts, tuples lists, non-finite
    floats the strings of ``NONFINITE_TOKENS``."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    return encode_nonfinite(value)


def _unparse(kind: Any, value: Any, context: ReadContext, name: str, cut: bool) -> Any:
    """The JSON of a value of the declared type ``kind``: :func:`_parse` backwards (``cut``:
    as a baseline made from it holds it)."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin is Annotated:
        if kind.__metadata__[0] is _BitsMarker:
            return "".join("1" if bit else "0" for bit in value)
        return _thaw(value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return _unparse(options[0], value, context, name, cut)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return [_unparse(args[0], v, context, name, cut) for v in value]
        return [_unparse(a, v, context, name, cut) for a, v in zip(args, value, strict=True)]
    if dataclasses.is_dataclass(kind):
        return _encode(value, context, name, cut)
    return _thaw(value)


def _omitted(item: dataclasses.Field[Any], value: Any, context: ReadContext, within: str) -> bool:
    level = item.metadata.get("need", ALWAYS)
    # What a baseline, or a full document older than the field, does not carry.
    absent = context.baseline or (level == FULL and _older(context.version, added_in(item)))
    if value is None and level != ALWAYS and absent:
        return True
    if item.metadata.get("omit_nested") and value is None and within == item.name:
        return True
    omit = item.metadata.get("omit", _KEEP)
    return omit is not _KEEP and value is omit


def _encode(record: Any, context: ReadContext, within: str, cut: bool) -> dict[str, Any]:
    cls = type(record)
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    declared = [item for item in dataclasses.fields(cls) if item.name != "extra"]
    kept = [item for item in declared if not cut or in_baseline(item)]
    out: dict[str, Any] = {}
    for item in kept:
        value = getattr(record, item.name)
        if not _omitted(item, value, context, within):
            out[item.name] = _unparse(hints[item.name], value, context, item.name, cut)
    if len(kept) == len(declared):
        out.update(_thaw(record.extra))
    return out


def encode(record: Any, *, version: str = SCHEMA_VERSION, baseline: bool = False) -> dict[str, Any]:
    """The JSON object of a record, as a document of ``version`` (a baseline with
    ``baseline``) holds it: the inverse of the reader, driven by the same field declarations.
    Bit strings, non-finite numbers as the strings of ``NONFINITE_TOKENS``, lists for tuples;
    a field the document leaves out when it has no value is left out (see :func:`need`),
    every other one written, null for None; the keys of ``extra`` follow the declared ones."""
    return _encode(record, ReadContext("", version, baseline), "", cut=False)


def encode_baseline(record: Any, *, version: str = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON object of the baseline made from a record of a document of ``version``: the
    fields a baseline keeps (see :func:`need`), each written as that document writes it, in
    the same order; a record a baseline keeps whole (every field of it, as a proportion) keeps
    the keys of its ``extra`` too, of a record it cuts down only the kept fields remain."""
    return _encode(record, ReadContext("", version, baseline=False), "", cut=True)
