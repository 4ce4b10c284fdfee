"""The cells of the report's tables: numbers, proportions with their intervals, estimates
with their standard errors, norm labels, and the frame a table is built as."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from core.document import NormResult, Proportion

NOT_AVAILABLE = "n/a"
NON_FINITE = "non-finite"
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
"""The name the report gives each of the document's norms, in the order it lists them."""


def number(value: float | int | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits; None is ``n/a``, NaN and ±Inf are
    ``non-finite``."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return NON_FINITE
    return f"{value:.{digits}g}"


def interval(share: Proportion | None, digits: int = 3) -> str:
    """A proportion with its 95 % Wilson interval: ``0.281 [0.240, 0.325]``."""
    if share is None or share.value is None:
        return NOT_AVAILABLE
    low, high = share.wilson_95
    return f"{share.value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def reliable(section: NormResult, k: int) -> str:
    """The reliable robust accuracy at epsilon ``k`` with its interval, or what it is instead:
    an upper bound where an attack failed, untested where none ran (a failed attack is
    evidence of nothing, so the figure is never shown as reliable)."""
    figure = interval(section.reliable_robust_accuracy[k])
    if not section.tested(k):
        return f"untested: no attack ran ({figure} is the clean accuracy)"
    failed = section.failed_attacks(k)
    if failed:
        return f"≤ {figure} (upper bound: {', '.join(failed)} failed)"
    return figure


def estimate_cell(value: float | None, stderr: float | None) -> str:
    if value is None:
        return NOT_AVAILABLE
    if stderr is None:
        return number(value)
    return f"{number(value)} ± {number(stderr)}"


def norm_label(norm: str, epsilon: float | None = None) -> str:
    """``L∞ ε=0.1``, or ``L∞`` without an epsilon."""
    name = NORM_NAMES.get(norm, norm)
    return name if epsilon is None else f"{name} ε={epsilon:g}"


COLUMN_GROUPS = "column_groups"
"""The key of a frame's ``attrs`` that holds each column's group, where its columns have
groups: the norm's name (``L∞``) for a column of one norm and epsilon. A page that splits a
wide table keeps a group's columns together and names each part by its group."""


def data_frame(
    rows: Mapping[str, Sequence[str]],
    columns: Sequence[str],
    index: str,
    groups: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The table's frame: ``rows`` by label, ``columns`` their headers, ``index`` the header of
    the labels; ``groups``, one per column, go to ``attrs[COLUMN_GROUPS]``."""
    frame = pd.DataFrame(
        [list(cells) for cells in rows.values()],
        index=pd.Index(list(rows), name=index, dtype=object),
        columns=list(columns),
        dtype=object,
    )
    if groups is not None:
        frame.attrs[COLUMN_GROUPS] = tuple(groups)
    return frame
