"""Tables that fit the page: a table too wide for an A4 page is split into several.

Cells may wrap at spaces and after hyphens, and an interval (``[0.240, 0.325]``) or a
standard error (``± 6.4``) stays on one line below its value, so a column is as narrow as its
longest piece that cannot wrap. :func:`parts` adds those widths up and, when a table would
not fit :data:`PAGE_CHARACTERS`, splits its columns into consecutive parts that each do,
keeping a group of columns (one norm's) together where it fits; every part repeats the row
labels. The screen (1280 pixels, 14 px text) has more room than the page, so what fits the
page fits the screen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = ["CELL_PADDING", "PAGE_CHARACTERS", "captions", "parts", "split_value", "unbreakable"]

PAGE_CHARACTERS = 112
"""Characters of table text that fit across an A4 page: 186 mm between the print margins
(703 CSS pixels) at the print stylesheet's 8 pt (about 5.7 pixels a character on average),
less a margin for cell borders and wider glyphs."""
CELL_PADDING = 2
"""A cell's padding and border, in characters."""

_DETAIL = re.compile(r"^(?P<value>.*?) (?P<detail>(?:\[[^\]]*\]|± \S+)(?: ⇑)?)$")
_BREAKS = re.compile(r"\s+|(?<=-)(?=[^\d\s])")


def split_value(text: str) -> tuple[str, str]:
    """``0.281 [0.240, 0.325]`` → (``0.281``, ``[0.240, 0.325]``); ``110.5 ± 6.4`` →
    (``110.5``, ``± 6.4``); any other text → (text, "")."""
    match = _DETAIL.match(text)
    if match is None:
        return text, ""
    return match["value"], match["detail"]


def unbreakable(text: str) -> int:
    """The width, in characters, of the longest piece of a cell's ``text`` that cannot wrap:
    a word (a hyphen before a letter also allows a break), or a whole interval or standard
    error, which is kept on one line."""
    value, detail = split_value(text)
    pieces = [p for p in _BREAKS.split(value) if p]
    return max([len(detail), *(len(p) for p in pieces)], default=0)


def parts(
    widths: Sequence[int],
    groups: Sequence[str] | None = None,
    budget: int = PAGE_CHARACTERS,
) -> list[list[int]]:
    """The columns' indices split into consecutive parts that each fit ``budget``.

    Args:
        widths: each column's narrowest width in characters, padding included; the row
            labels (repeated in every part) are left out and their width is left out of
            ``budget`` by the caller.
        groups: a name per column: consecutive columns of one name stay in one part where
            they fit in one, and a group too wide for any part is split into parts of
            near-equal column counts.
        budget: the characters each part may take.

    Returns:
        One list of column indices per part (a single part when everything fits).
    """
    names = list(groups) if groups is not None else [""] * len(widths)
    runs: list[list[int]] = []
    for i, name in enumerate(names):
        if runs and names[runs[-1][0]] == name and name:
            runs[-1].append(i)
        else:
            runs.append([i])
    out: list[list[int]] = []
    current: list[int] = []
    used = 0
    for run in runs:
        width = sum(widths[i] for i in run)
        if used + width <= budget:
            current += run
            used += width
            continue
        if current:
            out.append(current)
            current, used = [], 0
        if width <= budget:
            current, used = list(run), width
            continue
        pieces = _balanced(run, widths, budget)
        out += pieces[:-1]
        current = pieces[-1]
        used = sum(widths[i] for i in current)
    if current or not out:
        out.append(current)
    return out


def _balanced(columns: list[int], widths: Sequence[int], budget: int) -> list[list[int]]:
    """``columns`` in the fewest parts of near-equal column counts that each fit ``budget``
    (a single column wider than ``budget`` gets a part of its own)."""
    count = max(1, math.ceil(sum(widths[i] for i in columns) / budget))
    while True:
        size, extra = divmod(len(columns), count)
        bounds = [k * size + min(k, extra) for k in range(count + 1)]
        pieces = [columns[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        fits = all(sum(widths[i] for i in piece) <= budget for piece in pieces)
        if fits or count >= len(columns):
            return pieces
        count += 1


def captions(title: str, split: Sequence[Sequence[int]], groups: Sequence[str]) -> list[str]:
    """A caption per part of a split table: ``title`` alone when it is one part; else each
    part named by its group (``Robust accuracy: L∞``), ``(continued)`` after a part of the
    same group, and ``title, continued`` for a part that mixes groups."""
    if len(split) == 1:
        return [title]
    out = []
    previous: set[str] = set()
    for n, part in enumerate(split):
        named = {groups[i] for i in part}
        if len(named) == 1 and "" not in named:
            (group,) = named
            out.append(f"{title}: {group}" + (" (continued)" if named == previous else ""))
        else:
            out.append(f"{title}, continued" if n else title)
        previous = named
    return out
