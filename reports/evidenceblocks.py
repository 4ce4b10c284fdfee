"""What the renderers of a red flag's evidence share: the blocks they produce (sentences and
small :class:`Table` objects), the formatting of numbers, shares, p-values and lists, the
entries keyed ``label/norm/epsilon``, the splitting and capping of tables, and the registry of
renderers by check code.

It serves the evidence renderers beside it (``reports/*evidence.py``) and :mod:`reports.evidence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.checks import RUN_KEY
from reports import layout
from reports.cells import NORM_NAMES

MAX_ROWS = 8
"""Rows a table of runs shows; the rest are summarised in one sentence."""


_CHUNK_CHARACTERS = 56
"""Width, in characters, of one table with epsilons as columns; wider series are split into
several such tables, which sit side by side where the page is wide enough."""


@dataclass(frozen=True)
class Table:
    """A small table of a finding's evidence.

    Attributes:
        corner: the header of the row-label column ("" for none).
        columns: the other columns' headers; empty for a headerless two-column table of
            names and values.
        rows: (row label, cells), one cell per column (one cell when ``columns`` is empty).
        caption: a title above the table ("" for none).
        by_column: each column is one record (epsilons as columns), which :meth:`text`
            reads column by column.
    """

    corner: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]
    caption: str = ""
    by_column: bool = False

    @property
    def wraps(self) -> bool:
        """Whether its cells are text to wrap (a table of names and values, an error message)
        rather than numbers kept on one line."""
        return not self.columns or any(len(c) > 20 for _, cells in self.rows for c in cells)

    def text(self) -> str:
        """The table on one line: ``record: name value, name value; record: ...``."""
        if not self.columns:
            body = "; ".join(f"{label}: {cells[0]}" for label, cells in self.rows)
        elif self.by_column:
            corner = f"{self.corner} " if self.corner else ""
            body = "; ".join(
                f"{corner}{column}: "
                + ", ".join(f"{label} {cells[i]}" for label, cells in self.rows)
                for i, column in enumerate(self.columns)
            )
        else:
            body = "; ".join(
                f"{label}: "
                + ", ".join(f"{c} {v}" for c, v in zip(self.columns, cells, strict=True))
                for label, cells in self.rows
            )
        return f"{self.caption}: {body}" if self.caption else body


Block = str | Table
"""A sentence, or a small table."""


@dataclass(frozen=True)
class Rendered:
    """A finding's evidence, ready to show.

    Attributes:
        blocks: sentences and tables, in reading order.
        generic: True when (part of) the evidence was shown by :func:`generic` rather than by
            the check's own renderer: an unknown check, an unexpected shape or extra keys.
    """

    blocks: tuple[Block, ...]
    generic: bool

    def text(self) -> str:
        """All of it as plain text, for CSV and Markdown tables."""
        parts = [b if isinstance(b, str) else b.text() + "." for b in self.blocks]
        return " ".join(parts)


# --- formatting ------------------------------------------------------------------------------


def json_float(value: Any) -> float | None:
    """A JSON number (or the document's "NaN" and "Infinity" strings) as a float."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return None


def format_number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = json_float(value)
    if number is None:
        return "n/a" if value is None else str(value)
    if not math.isfinite(number):
        return "non-finite"
    return f"{number:.{digits}g}"


def format_percent(value: Any) -> str:
    number = json_float(value)
    if number is None:
        return format_number(value)
    if not math.isfinite(number):
        return "non-finite"
    return f"{100 * number:.1f} %"


def format_p(value: Any) -> str:
    """A p-value: two significant digits (``1.1e-15``, ``0.5``, ``1``)."""
    return format_number(value, 2)


def format_epsilon(value: Any) -> str:
    number = json_float(value)
    return format_number(value) if number is None else f"{number:g}"


def norm_name(name: str) -> str:
    return NORM_NAMES.get(name, name)


def joined(names: Sequence[str], limit: int = 5) -> str:
    """``a``, ``a and b``, ``a, b and c``; beyond ``limit``, ``a, b, ... and 7 more``."""
    names = [str(n) for n in names]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def counted(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


@dataclass(frozen=True)
class EvidenceRun:
    """One entry of evidence keyed ``label/norm/epsilon``."""

    label: str
    norm: str
    epsilon: float
    record: Mapping[str, Any]

    def name(self, with_label: bool) -> str:
        where = f"{norm_name(self.norm)} ε={self.epsilon:g}"
        return f"{self.label} {where}" if with_label else where


def evidence_runs(evidence: Mapping[str, Any]) -> list[EvidenceRun]:
    """The evidence's entries keyed ``label/norm/epsilon``; ValueError for any other key."""
    runs = []
    for key, record in evidence.items():
        match = RUN_KEY.match(key)
        if match is None or not isinstance(record, Mapping):
            raise ValueError(f"not a run key: {key!r}")
        runs.append(EvidenceRun(match["label"], match["norm"], float(match["epsilon"]), record))
    return runs


def split_table(table: Table, budget: int = _CHUNK_CHARACTERS) -> list[Table]:
    """``table`` (records as columns) split into tables at most ``budget`` characters wide,
    of near-equal column counts, each repeating the row labels."""
    padding = layout.CELL_PADDING
    label = max([len(table.corner), *(len(label) for label, _ in table.rows)]) + padding
    widths = [
        max([len(column), *(len(cells[i]) for _, cells in table.rows)]) + padding
        for i, column in enumerate(table.columns)
    ]
    split = layout.parts(widths, ["series"] * len(widths), budget - label)
    return [
        Table(
            table.corner,
            tuple(table.columns[i] for i in part),
            tuple((label, tuple(cells[i] for i in part)) for label, cells in table.rows),
            table.caption if n == 0 or not table.caption else f"{table.caption}, continued",
            table.by_column,
        )
        for n, part in enumerate(split)
    ]


Row = tuple[str, tuple[str, ...]]


def capped(
    rows: Sequence[Row],
    concern: Sequence[float],
    rest: Callable[[list[int]], str],
) -> tuple[list[Row], list[str]]:
    """At most :data:`MAX_ROWS` rows, the most concerning ones (largest ``concern``) kept in
    their order; the others are summarised by ``rest`` (given their indices) in a sentence."""
    if len(rows) <= MAX_ROWS:
        return list(rows), []
    order = sorted(range(len(rows)), key=lambda i: (-concern[i], i))
    kept = sorted(order[:MAX_ROWS])
    left = sorted(order[MAX_ROWS:])
    return [rows[i] for i in kept], [rest(left)]


# --- the renderers, by check code -----------------------------------------------------------

Renderer = Callable[[Mapping[str, Any]], list[Block]]
RENDERERS: dict[str, Renderer] = {}
"""One renderer per check code of ``analysis.redflags.CHECK_FUNCTIONS``."""


def renders(*codes: str) -> Callable[[Renderer], Renderer]:
    """Register the renderer of the checks ``codes``; it reads the keys of the evidence that
    ``core.checks`` declares for them."""

    def register(function: Renderer) -> Renderer:
        for code in codes:
            RENDERERS[code] = function
        return function

    return register
