"""The comparison's tables, one row per checkpoint, and their cells as the page, CSV and
Markdown show them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.checks import red_flags
from core.document import OK, FindingStatus, NormResult, Proportion
from reports.cells import NORM_NAMES
from reports.compared import (
    FAR_ABOVE,
    FAR_MARK,
    Entry,
    far_above,
    find_norm_section,
    gap,
    pgd_ce,
    present_norms,
    suite_name,
)
from reports.layout import (
    CELL_PADDING,
    PAGE_CHARACTERS,
    captions,
    parts,
    split_value,
    unbreakable,
)
from reports.tables import NOT_AVAILABLE

STATUS_SHOWN = {
    FindingStatus.FAIL: "✖ fail",
    FindingStatus.WARN: "▲ warn",
    FindingStatus.PASS: "✔ pass",
    FindingStatus.NOT_APPLICABLE: "– n/a",
}
"""A check's status as the page shows it: a shape and the word (as the single report)."""


@dataclass(frozen=True)
class ComparisonTable:
    """A table of numbers, written as CSV and Markdown and rendered into the page.

    A column ``X`` with companions ``X low`` and ``X high`` is a proportion with its 95 %
    interval, one with ``X stderr`` an estimate with its standard error, and a true
    ``X far above`` marks ``X`` with :data:`FAR_MARK`; the page and the Markdown show each
    group as one cell.

    Attributes:
        name: file stem for ``--tables`` (``comparison.<name>.csv``).
        title: the heading.
        caption: what the numbers are.
        frame: one row per checkpoint (per checkpoint and epsilon, or layer).
        row_header: the column that names each row.
        keys: the columns that identify a row, repeated in every part of a table that the
            page splits because it is too wide for A4 (see :mod:`reports.layout`).
    """

    name: str
    title: str
    caption: str
    frame: pd.DataFrame
    row_header: str = "checkpoint"
    keys: tuple[str, ...] = ("#", "checkpoint")


def _proportion(row: dict[str, Any], column: str, value: Proportion | None) -> None:
    undefined = value is None or value.value is None
    row[column] = math.nan if undefined else value.value  # type: ignore[union-attr]
    row[f"{column} low"] = math.nan if undefined else value.wilson_95[0]  # type: ignore[union-attr]
    row[f"{column} high"] = math.nan if undefined else value.wilson_95[1]  # type: ignore[union-attr]


def summary_table(items: Sequence[Entry]) -> ComparisonTable:
    """Per checkpoint: clean accuracy, per norm PGD-CE, reliable and the gap at the norm's
    first epsilon, whether PGD-CE is far above, the red flags and the verdict."""
    rows = []
    for entry in items:
        result = entry.result
        row: dict[str, Any] = {"#": entry.number, "checkpoint": entry.label}
        _proportion(row, "clean accuracy", result.clean_accuracy)
        for norm in present_norms(items):
            name = NORM_NAMES[norm]
            section = find_norm_section(entry, norm)
            row[f"{name} ε"] = section.epsilons[0] if section else math.nan
            _proportion(row, f"{name} PGD-CE", pgd_ce(result, section) if section else None)
            _proportion(row, f"{name} reliable", _reliable(section, 0) if section else None)
            overstated = gap(result, section) if section else None
            row[f"{name} gap"], row[f"{name} gap low"], row[f"{name} gap high"] = (
                overstated or (math.nan,) * 3
            )
            row[f"{name} gap far above"] = section is not None and far_above(result, section)
        row["red flags"] = len(red_flags(result.findings))
        row["verdict"] = result.verdict
        row["dataset"] = result.evaluation.dataset or NOT_AVAILABLE
        row["samples"] = result.evaluation.num_samples
        row["suite"] = suite_name(result)
        rows.append(row)
    return ComparisonTable(
        "verdicts",
        "Verdicts",
        "Robust accuracy at each norm's first epsilon, with 95 % Wilson intervals. PGD-CE: "
        "after PGD-CE alone; reliable: the worst case over every attack (– where an attack "
        "failed, whose samples count as robust: the figure is then an upper bound); gap: the "
        "samples PGD-CE left robust that a later attack broke, with its 95 % interval. "
        f"{FAR_MARK} marks a gap whose interval lies above {FAR_ABOVE:.0%} of the samples: "
        "PGD-CE far above the reliable robust accuracy, as gradient masking makes it. Red "
        "flags: failed masking checks.",
        pd.DataFrame(rows),
    )


def _reliable(section: NormResult, k: int) -> Proportion | None:
    """The reliable robust accuracy at epsilon ``k``, or None (shown as –) where an attack
    failed there: an upper bound is no reliable figure (the verdict says why)."""
    if section.failed_attacks(k) or not section.tested(k):
        return None
    return section.reliable_robust_accuracy[k]


def robust_table(items: Sequence[Entry], norm: str) -> ComparisonTable:
    """Per checkpoint and epsilon of ``norm``: clean accuracy, robust accuracy after each
    attack (in the union of the documents' attack orders) and the reliable one."""
    labels: list[str] = []
    for entry in items:
        section = find_norm_section(entry, norm)
        for record in section.attacks if section else ():
            if record.label not in labels:
                labels.append(record.label)
    rows = []
    for entry in items:
        section = find_norm_section(entry, norm)
        if section is None:
            continue
        for k, epsilon in enumerate(section.epsilons):
            row: dict[str, Any] = {"#": entry.number, "checkpoint": entry.label, "ε": epsilon}
            _proportion(row, "clean", entry.result.clean_accuracy)
            after = {
                r.label: r.robust_accuracy_after[k] for r in section.attacks if r.status_at(k) == OK
            }
            for label in labels:
                _proportion(row, label, after.get(label))
            _proportion(row, "reliable", _reliable(section, k))
            rows.append(row)
    name = NORM_NAMES[norm]
    return ComparisonTable(
        f"robust-accuracy-{norm}",
        f"Robust accuracy under {name}",
        f"Robust accuracy under {name} after each attack, in the order the attacks ran (each "
        "only on the samples the ones before it left robust, so each column is the worst "
        "case so far), with 95 % Wilson intervals; – where an attack did not run or failed.",
        pd.DataFrame(rows),
        keys=("#", "checkpoint", "ε"),
    )


def flatness_table(items: Sequence[Entry]) -> ComparisonTable:
    """Per checkpoint: Fisher-Rao norm (empirical and model Fisher), Hessian trace,
    ε-sharpness and top Hessian eigenvalue, each with its standard error."""
    rows = []
    for entry in items:
        flat = entry.result.flatness
        active = flat.active_layers if flat else None
        row: dict[str, Any] = {"#": entry.number, "checkpoint": entry.label}
        for column, estimate in (
            ("Fisher-Rao (empirical)", flat and flat.fisher_rao_empirical),
            ("Fisher-Rao (model)", flat and flat.fisher_rao_model),
            ("Hessian trace", flat and flat.hessian_trace),
            ("ε-sharpness", flat and flat.epsilon_sharpness),
            ("Fisher-Rao (empirical), layers active", active and active.fisher_rao_empirical),
            ("Fisher-Rao (model), layers active", active and active.fisher_rao_model),
            ("Hessian trace, layers active", active and active.hessian_trace),
        ):
            row[column] = estimate.value if estimate else math.nan
            stderr = estimate.stderr if estimate else None
            row[f"{column} stderr"] = math.nan if stderr is None else stderr
        eigen = flat.hessian_eigenvalues if flat else None
        row["top eigenvalue"] = eigen.eigenvalues[0] if eigen and eigen.eigenvalues else math.nan
        trace = flat.hessian_trace if flat else None
        provenance = trace.provenance if trace else None
        row["samples"] = provenance.num_samples if provenance else math.nan
        row["mode"] = provenance.mode if provenance else "–"
        rows.append(row)
    return ComparisonTable(
        "flatness",
        "Flatness",
        "Fisher-Rao norm squared (empirical and model Fisher), Hutchinson trace of the "
        "Hessian, ε-sharpness and the largest Hessian eigenvalue, with standard errors, on "
        "the first evaluation samples in the mode shown; the first three again with the "
        "dropout-family layers active (Monte-Carlo over their draws, batch norm frozen); – "
        "for an audit run without flatness or a model without such layers.",
        pd.DataFrame(rows),
    )


def activation_table(items: Sequence[Entry]) -> ComparisonTable:
    """Per checkpoint and dropout-family layer: statistics of the layer's input on clean
    data (the thesis' tables 3.2/3.3)."""
    rows = []
    for entry in items:
        for layer in entry.result.activations or ():
            rows.append(
                {
                    "#": entry.number,
                    "checkpoint": entry.label,
                    "layer": layer.name,
                    "kind": layer.kind,
                    "mean": layer.mean,
                    "max": layer.max,
                    "std": layer.std,
                    "variance": layer.std**2,
                    "sparsity": layer.zero_fraction,
                }
            )
    columns = ["#", "checkpoint", "layer", "kind", "mean", "max", "std", "variance", "sparsity"]
    return ComparisonTable(
        "activations",
        "Activation statistics",
        "Statistics of what flows into each dropout-family layer on the clean evaluation set "
        "(sparsity: the share of exact zeros).",
        pd.DataFrame(rows, columns=columns),
        keys=("#", "checkpoint", "layer"),
    )


def redflag_table(items: Sequence[Entry]) -> ComparisonTable:
    """Check × checkpoint: each check's status (pass, warn, fail, n/a; – not run)."""
    codes: dict[str, str] = {}
    for entry in items:
        for finding in entry.result.findings:
            codes.setdefault(finding.code, finding.kind or "–")
    rows = []
    for code, kind in codes.items():
        row: dict[str, Any] = {"check": code, "kind": kind}
        for entry in items:
            status = {f.code: f.status for f in entry.result.findings}.get(code)
            row[f"#{entry.number} {entry.label}"] = status or "not run"
        rows.append(row)
    return ComparisonTable(
        "red-flags",
        "Red flags",
        "Each check's status per checkpoint: ✖ fail, ▲ warn, ✔ pass, – n/a, or not run.",
        pd.DataFrame(rows),
        row_header="check",
        keys=("check", "kind"),
    )


def tables(items: Sequence[Entry]) -> list[ComparisonTable]:
    """Every table of the comparison, in page order."""
    return [
        summary_table(items),
        *(robust_table(items, norm) for norm in present_norms(items)),
        redflag_table(items),
        flatness_table(items),
        activation_table(items),
    ]


def _number(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


def _shown(value: Any, decimals: int | None) -> str:
    if isinstance(value, bool):
        return f"{FAR_MARK} yes" if value else "no"
    if _number(value):
        if math.isnan(value):
            return NOT_AVAILABLE
        if isinstance(value, int):
            return str(value)
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:.4g}"
    return STATUS_SHOWN.get(value, str(value))


@dataclass(frozen=True)
class _Cell:
    text: str
    value: str  # the exact number, for data-value ("" for text)
    css: str
    status: str = ""  # a check's status, shown with its shape

    @property
    def parts(self) -> tuple[str, str]:
        """The value and its interval or standard error, which the page keeps on one line."""
        return split_value(self.text)


@dataclass(frozen=True)
class _Part:
    """One HTML table of a :class:`ComparisonTable`: all of it, or the columns of it that fit
    A4 beside the key columns."""

    id: str
    caption: str
    headers: list[tuple[str, bool]]  # (header, written vertically)
    rows: list[list[_Cell]]


def _group(table: ComparisonTable, column: str) -> str:
    """The group a column belongs to: the columns of one norm, of one flatness mode."""
    if table.name == "verdicts":
        return next(
            (name for name in NORM_NAMES.values() if column.startswith(f"{name} ")), "summary"
        )
    if table.name == "flatness":
        return "layers active" if column.endswith(", layers active") else "eval"
    return ""


def page_parts(table: ComparisonTable) -> list[_Part]:
    """``table`` as one HTML table, or as several when it is too wide for an A4 page: the key
    columns in each, the others split by :func:`reports.layout.parts` (the verdicts' summary
    first, then one norm after another)."""
    headers, rows = _cells(table)
    vertical = [table.name == "red-flags" and h not in table.keys for h in headers]

    def width(i: int) -> int:
        head = 2 if vertical[i] else unbreakable(headers[i])
        return max([head, *(unbreakable(row[i].text) for row in rows)]) + CELL_PADDING

    keys = [i for i, h in enumerate(headers) if h in table.keys]
    others = [i for i in range(len(headers)) if i not in keys]
    groups = {i: _group(table, headers[i]) for i in others}
    first: dict[str, int] = {}
    for i in others:
        first.setdefault(groups[i], -1 if groups[i] == "summary" else i)
    others.sort(key=lambda i: first[groups[i]])  # a group's columns together, summary first
    split = parts(
        [width(i) for i in others],
        [groups[i] for i in others],
        PAGE_CHARACTERS - sum(width(i) for i in keys),
    )
    names = captions(table.title, split, [groups[i].replace("summary", "") for i in others])
    out = []
    for n, (part, caption) in enumerate(zip(split, names, strict=True)):
        columns = sorted(keys) + [others[k] for k in part]
        out.append(
            _Part(
                f"table-{table.name}" + (f"-{n + 1}" if n else ""),
                caption,
                [(headers[i], vertical[i]) for i in columns],
                [[row[i] for i in columns] for row in rows],
            )
        )
    return out


def _companion(column: str, columns: Sequence[str]) -> bool:
    parts = ("low", "high", "stderr", "far above")
    return any(column == f"{base} {part}" for base in columns for part in parts)


def _cells(table: ComparisonTable) -> tuple[list[str], list[list[_Cell]]]:
    """Headers and rows of shown cells, each interval or standard error merged into its value:
    ``0.281 [0.240, 0.325]``, ``110.5 ± 6.4``."""
    frame = table.frame
    columns = [str(c) for c in frame.columns if not _companion(str(c), list(frame.columns))]
    rows = []
    for record in frame.to_dict("records"):
        cells = []
        for column in columns:
            value = record[column]
            interval = f"{column} low" in frame.columns
            text = _shown(value, 3 if interval else None)
            if interval and text != NOT_AVAILABLE:
                text += f" [{record[f'{column} low']:.3f}, {record[f'{column} high']:.3f}]"
            stderr = record.get(f"{column} stderr")
            if _number(stderr) and not math.isnan(stderr) and text != NOT_AVAILABLE:
                text += f" ± {stderr:.2g}"
            exact = repr(float(value)) if _number(value) and not math.isnan(value) else ""
            css = ""
            if record.get(f"{column} far above") is True:
                text, css = f"{text} {FAR_MARK}", "far-above"
            if column == table.row_header:
                css = "row-header"
            status = value if isinstance(value, str) and value in STATUS_SHOWN else ""
            cells.append(_Cell(text, exact, css or ("" if exact else "text"), status))
        rows.append(cells)
    return columns, rows


def markdown(table: ComparisonTable) -> str:
    """The table as GitHub Markdown, cells as the page shows them."""
    headers, rows = _cells(table)

    def line(items: Iterable[str]) -> str:
        return "| " + " | ".join(" ".join(i.split()).replace("|", "\\|") for i in items) + " |"

    body = [line(headers), "|" + "---|" * len(headers), *(line(c.text for c in r) for r in rows)]
    return "\n".join(body) + "\n"


def csv(table: ComparisonTable) -> str:
    """The table as CSV: every number in full, an interval's ends in their own columns."""
    return str(table.frame.to_csv(index=False, lineterminator="\n"))
