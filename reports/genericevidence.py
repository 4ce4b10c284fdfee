"""Any evidence, readably: the fallback for a check this version does not know, an object of
another shape (an older or newer document), or keys a renderer does not read.

It shows a two-column table of humanised keys and values, lists summarised (``12 values from
0.1 to 0.9``), and lists of records as a compact row table (capped at ``MAX_ROWS``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from core.checks import RUN_KEY
from reports.cells import NORM_NAMES
from reports.evidenceblocks import (
    Block,
    Table,
    capped,
    counted,
    format_number,
    format_p,
    format_percent,
    json_float,
    norm_name,
)

_LIST_SHOWN = 6
"""A list of at most this many values is written out; a longer one is summarised."""


_WORDS = {
    "pct": "%",
    "p value": "p",
    "num": "number of",
    "eps": "ε",
    "epsilon": "ε",
    "epsilons": "ε",
}


def _humanise(key: str) -> str:
    """``last_10pct_rise`` → ``last 10 % rise``; ``p_value`` → ``p``; a run key
    ``pgd-t/linf/0.1`` → ``pgd-t L∞ ε=0.1``."""
    match = RUN_KEY.match(key)
    if match is not None:
        return f"{match['label']} {norm_name(match['norm'])} ε={float(match['epsilon']):g}"
    if key in NORM_NAMES:
        return NORM_NAMES[key]
    text = re.sub(r"(\d+)pct", r"\1 %", key.replace("_", " ").strip())
    for word, replacement in _WORDS.items():
        text = re.sub(rf"\b{re.escape(word)}\b", replacement, text)
    if len(text) <= 1:  # a symbol (p, ε) keeps its case
        return text or key
    return text[:1].upper() + text[1:]


_SHARE = re.compile(r"(fraction|rate|share|accuracy)$")


def _value(key: str, value: Any) -> str:
    """One value, read by its key: shares as percentages, p-values with two digits, lists
    written out or summarised, nested objects inline."""
    if isinstance(value, Mapping):
        return "; ".join(f"{_humanise(k)} {_value(k, v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return _sequence(key, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if _SHARE.search(key) and 0 <= value <= 1:
            return format_percent(value)
        if key.endswith("p_value"):
            return format_p(value)
    return format_number(value, 4)


def _sequence(key: str, values: Sequence[Any]) -> str:
    if not values:
        return "none"
    if len(values) <= _LIST_SHOWN:
        return ", ".join(_value(key, v) for v in values)
    numbers = [json_float(v) for v in values]
    if all(n is not None for n in numbers):
        finite = [n for n in numbers if n is not None and math.isfinite(n)]
        if finite:
            low, high = min(finite), max(finite)
            return f"{len(values)} values from {_value(key, low)} to {_value(key, high)}"
    shown = ", ".join(_value(key, v) for v in values[:3])
    return f"{len(values)} items: {shown}, …"


def _records(items: Sequence[tuple[str, Mapping[str, Any]]], caption: str) -> list[Block]:
    """Records of scalars as a row table: one row per record, one column per key."""
    keys: list[str] = []
    for _, record in items:
        keys += [k for k in record if k not in keys]
    rows = [(label, tuple(_value(k, r.get(k)) for k in keys)) for label, r in items]
    kept, summary = capped(
        rows, [0.0] * len(rows), lambda left: f"{counted(len(left), 'more row')} not shown."
    )
    return [Table("", tuple(_humanise(k) for k in keys), tuple(kept), caption), *summary]


def _is_records(value: Any) -> bool:
    """A non-empty list or object of objects, each holding at least one scalar or list."""
    items = list(value.values()) if isinstance(value, Mapping) else value
    return (
        isinstance(value, Mapping | list | tuple)
        and bool(items)
        and all(isinstance(item, Mapping) for item in items)
        and all(any(not isinstance(v, Mapping) for v in item.values()) for item in items)
    )


def generic(evidence: Any) -> list[Block]:
    """Any evidence, readably: its plain values as a two-column table of humanised names and
    values, each list or object of records as a row table (capped at :data:`MAX_ROWS`)."""
    if not isinstance(evidence, Mapping):
        return [_value("", evidence)] if evidence not in (None, "", [], {}) else []
    if _is_records(evidence):  # one record per run, norm, ...
        return _records([(_humanise(k), v) for k, v in evidence.items()], "")
    plain: list[tuple[str, tuple[str, ...]]] = []
    blocks: list[Block] = []
    for key, value in evidence.items():
        if _is_records(value):
            items = (
                [(_humanise(k), v) for k, v in value.items()]
                if isinstance(value, Mapping)
                else [(str(i + 1), v) for i, v in enumerate(value)]
            )
            blocks += _records(items, _humanise(key))
        else:
            plain.append((_humanise(key), (_value(key, value),)))
    if plain:
        blocks.insert(0, Table("", (), tuple(plain)))
    return blocks
