"""A comparison of audits: one page with one row per checkpoint.

Usage::

    python -m reports.compare out/*/audit.json -o comparison.html [--tables csv,md]

(``robaudit-compare``; the command is :mod:`commands.compare`), and ``python -m analysis.audit
a.pt b.pt ...`` writes ``OUT/comparison.html`` the same way. The page holds the thesis-style
tables (clean accuracy, robust accuracy after each attack per norm, the reliable worst case,
Fisher-Rao norm, Hessian trace, activation statistics) with one row per checkpoint, the
robustness curves overlaid, a red-flag matrix (check × checkpoint), the flatness of each
checkpoint against its PGD-CE and reliable robust accuracy, and the verdicts.

A checkpoint whose PGD-CE robust accuracy is *far above* its reliable one is marked ⇑: the
gap (the samples PGD-CE left robust that a later attack broke, out of all evaluated samples)
has a 95 % Wilson interval whose lower end exceeds :data:`FAR_ABOVE` (10 percentage points).
Honest networks show gaps of a few points (a stronger attack always breaks a few more);
masked ones tens of points.

Documents that were not audited alike (other datasets, samples, suites, epsilons or attack
lists) are compared under a visible warning, which is also printed on stderr.

Everything is rendered from the documents alone through :mod:`core.document` (never
torch): self-contained HTML (inline CSS and SVG, no JavaScript), jinja2 autoescape on every
text from a document, and byte-identical output for the same documents.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from core.boundary import atomic_write_text
from core.document import (
    AttackRecord,
    AuditResult,
    NormResult,
    Proportion,
    Sweep,
    read_result,
)
from core.stats import wilson_interval
from reports import plots
from reports.html import environment, stylesheet
from reports.layout import (
    CELL_PADDING,
    PAGE_CHARACTERS,
    captions,
    parts,
    split_value,
    unbreakable,
)
from reports.tables import NOT_AVAILABLE, alone_accuracy

__all__ = [
    "FAR_ABOVE",
    "FAR_MARK",
    "NORM_NAMES",
    "STATUS_SHOWN",
    "Entry",
    "Table",
    "activation_table",
    "comparability_warnings",
    "csv",
    "curves_svg",
    "entries",
    "far_above",
    "flatness_table",
    "gap",
    "markdown",
    "pgd_ce",
    "redflag_table",
    "render",
    "robust_table",
    "scatter_svg",
    "summary_table",
    "tables",
    "write_comparison",
]

FAR_ABOVE = 0.10
"""PGD-CE is far above the reliable robust accuracy when the lower end of the gap's 95 %
interval exceeds this share of the evaluated samples."""

NORM_NAMES = {"linf": "L∞", "l2": "L2"}
STATUS_SHOWN = {"fail": "✖ fail", "warn": "▲ warn", "pass": "✔ pass", "n/a": "– n/a"}
"""A check's status as the page shows it: a shape and the word (as the single report)."""
FAR_MARK = "⇑"
VERDICT_SHAPES = {"ok": "✔", "masking": "▲", "unreliable": "✖"}

# What the comparison adds to the report's stylesheet.
_CSS = """
body { max-width: 1400px; }
.warnings { border: 2px solid var(--warn); background: var(--warn-bg); padding: .4rem 1rem;
  margin: 1rem 0; }
.warnings h2 { border: 0; margin: .3rem 0; color: var(--warn); }
td.far-above { color: var(--fail); font-weight: bold; }
tr.flagged th[scope=row] { border-left: 4px solid var(--fail); }
table.matrix thead th.checkpoint { writing-mode: vertical-rl; transform: rotate(180deg);
  white-space: nowrap; }
table.matrix td { text-align: center; }
table.matrix .status { white-space: normal; }
ul.verdicts { list-style: none; padding-left: 0; }
.verdict.ok { color: var(--ok); } .verdict.masking { color: var(--warn); }
.verdict.unreliable { color: var(--fail); } .verdict { font-weight: bold; }
@media print { body { max-width: none; } }
"""


@dataclass(frozen=True)
class Entry:
    """One compared document.

    Attributes:
        number: 1-based position, the key used in plots.
        label: the checkpoint's file stem (with the document's path where two share it).
        path: the document's path as given.
        result: the document.
    """

    number: int
    label: str
    path: str
    result: AuditResult


@dataclass(frozen=True)
class Table:
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


def entries(paths: Sequence[str | Path]) -> list[Entry]:
    """Read the documents; raises :class:`DocumentError` (one line) for a bad one."""
    results = [read_result(path) for path in paths]
    stems = [Path(r.provenance.checkpoint).stem for r in results]
    return [
        Entry(i + 1, stem if stems.count(stem) == 1 else f"{stem} ({path})", str(path), result)
        for i, (stem, path, result) in enumerate(zip(stems, paths, results, strict=True))
    ]


def _norms(items: Sequence[Entry]) -> list[str]:
    present = {n.norm for e in items for n in e.result.robustness.norms}
    return [norm for norm in NORM_NAMES if norm in present]


def _section(entry: Entry, norm: str) -> NormResult | None:
    return next((n for n in entry.result.robustness.norms if n.norm == norm), None)


def _is_pgd_ce(record: AttackRecord) -> bool:
    params = record.params or {}
    return record.kind == "pgd" and params.get("loss", "ce") == "ce"


def pgd_ce(result: AuditResult, section: NormResult, k: int = 0) -> Proportion | None:
    """PGD-CE's robust accuracy on its own at epsilon ``k``: the first untargeted
    cross-entropy PGD of the norm, where it ran on every clean-correct sample; else None."""
    record = next((r for r in section.attacks if _is_pgd_ce(r)), None)
    return None if record is None else alone_accuracy(result, record, k)


def gap(result: AuditResult, section: NormResult, k: int = 0) -> tuple[float, float, float] | None:
    """How far PGD-CE overstates the reliable robust accuracy at epsilon ``k``: (share of all
    samples that PGD-CE left robust and a later attack broke, low, high of its 95 % Wilson
    interval). The reliable robust samples are a subset of PGD-CE's, so the gap is a count."""
    alone = pgd_ce(result, section, k)
    reliable = section.reliable_robust_accuracy[k]
    if alone is None or reliable.total == 0:
        return None
    count = alone.count - reliable.count
    return (count / reliable.total, *wilson_interval(count, reliable.total))


def far_above(result: AuditResult, section: NormResult, k: int = 0) -> bool:
    """Whether PGD-CE is far above the reliable robust accuracy (see :data:`FAR_ABOVE`)."""
    overstated = gap(result, section, k)
    return overstated is not None and overstated[1] > FAR_ABOVE


def _level(verdict: str) -> str:
    if verdict.startswith("no sign"):
        return "ok"
    return "masking" if verdict.startswith("suspected") else "unreliable"


def _proportion(row: dict[str, Any], column: str, value: Proportion | None) -> None:
    undefined = value is None or value.value is None
    row[column] = math.nan if undefined else value.value  # type: ignore[union-attr]
    row[f"{column} low"] = math.nan if undefined else value.wilson_95[0]  # type: ignore[union-attr]
    row[f"{column} high"] = math.nan if undefined else value.wilson_95[1]  # type: ignore[union-attr]


def _suite_name(result: AuditResult) -> str:
    suite = (result.provenance.config or {}).get("suite") or {}
    return str(suite.get("name", "unknown"))


def _red_flags(result: AuditResult) -> int:
    return sum(f.status == "fail" and f.kind == "masking" for f in result.findings)


def summary_table(items: Sequence[Entry]) -> Table:
    """Per checkpoint: clean accuracy, per norm PGD-CE, reliable and the gap at the norm's
    first epsilon, whether PGD-CE is far above, the red flags and the verdict."""
    rows = []
    for entry in items:
        result = entry.result
        row: dict[str, Any] = {"#": entry.number, "checkpoint": entry.label}
        _proportion(row, "clean accuracy", result.clean_accuracy)
        for norm in _norms(items):
            name = NORM_NAMES[norm]
            section = _section(entry, norm)
            row[f"{name} ε"] = section.epsilons[0] if section else math.nan
            _proportion(row, f"{name} PGD-CE", pgd_ce(result, section) if section else None)
            _proportion(row, f"{name} reliable", _reliable(section, 0) if section else None)
            overstated = gap(result, section) if section else None
            row[f"{name} gap"], row[f"{name} gap low"], row[f"{name} gap high"] = (
                overstated or (math.nan,) * 3
            )
            row[f"{name} gap far above"] = section is not None and far_above(result, section)
        row["red flags"] = _red_flags(result)
        row["verdict"] = result.verdict
        row["dataset"] = result.evaluation.dataset or NOT_AVAILABLE
        row["samples"] = result.evaluation.num_samples
        row["suite"] = _suite_name(result)
        rows.append(row)
    return Table(
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


def robust_table(items: Sequence[Entry], norm: str) -> Table:
    """Per checkpoint and epsilon of ``norm``: clean accuracy, robust accuracy after each
    attack (in the union of the documents' attack orders) and the reliable one."""
    labels: list[str] = []
    for entry in items:
        section = _section(entry, norm)
        for record in section.attacks if section else ():
            if record.label not in labels:
                labels.append(record.label)
    rows = []
    for entry in items:
        section = _section(entry, norm)
        if section is None:
            continue
        for k, epsilon in enumerate(section.epsilons):
            row: dict[str, Any] = {"#": entry.number, "checkpoint": entry.label, "ε": epsilon}
            _proportion(row, "clean", entry.result.clean_accuracy)
            after = {
                r.label: r.robust_accuracy_after[k]
                for r in section.attacks
                if (r.statuses or ("ok",) * (k + 1))[k] == "ok"
            }
            for label in labels:
                _proportion(row, label, after.get(label))
            _proportion(row, "reliable", _reliable(section, k))
            rows.append(row)
    name = NORM_NAMES[norm]
    return Table(
        f"robust-accuracy-{norm}",
        f"Robust accuracy under {name}",
        f"Robust accuracy under {name} after each attack, in the order the attacks ran (each "
        "only on the samples the ones before it left robust, so each column is the worst "
        "case so far), with 95 % Wilson intervals; – where an attack did not run or failed.",
        pd.DataFrame(rows),
        keys=("#", "checkpoint", "ε"),
    )


def flatness_table(items: Sequence[Entry]) -> Table:
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
    return Table(
        "flatness",
        "Flatness",
        "Fisher-Rao norm squared (empirical and model Fisher), Hutchinson trace of the "
        "Hessian, ε-sharpness and the largest Hessian eigenvalue, with standard errors, on "
        "the first evaluation samples in the mode shown; the first three again with the "
        "dropout-family layers active (Monte-Carlo over their draws, batch norm frozen); – "
        "for an audit run without flatness or a model without such layers.",
        pd.DataFrame(rows),
    )


def activation_table(items: Sequence[Entry]) -> Table:
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
    return Table(
        "activations",
        "Activation statistics",
        "Statistics of what flows into each dropout-family layer on the clean evaluation set "
        "(sparsity: the share of exact zeros).",
        pd.DataFrame(rows, columns=columns),
        keys=("#", "checkpoint", "layer"),
    )


def redflag_table(items: Sequence[Entry]) -> Table:
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
    return Table(
        "red-flags",
        "Red flags",
        "Each check's status per checkpoint: ✖ fail, ▲ warn, ✔ pass, – n/a, or not run.",
        pd.DataFrame(rows),
        row_header="check",
        keys=("check", "kind"),
    )


def tables(items: Sequence[Entry]) -> list[Table]:
    """Every table of the comparison, in page order."""
    return [
        summary_table(items),
        *(robust_table(items, norm) for norm in _norms(items)),
        redflag_table(items),
        flatness_table(items),
        activation_table(items),
    ]


def _grouped(pairs: Iterable[tuple[str, Any]]) -> dict[Any, list[str]]:
    """Labels grouped by a key, in first-seen order."""
    groups: dict[Any, list[str]] = {}
    for label, key in pairs:
        groups.setdefault(key, []).append(label)
    return groups


def _listed(groups: dict[Any, list[str]], shown: Callable[[Any], str]) -> str:
    return "; ".join(f"{shown(k)}: {', '.join(v)}" for k, v in groups.items())


def comparability_warnings(items: Sequence[Entry]) -> list[str]:
    """One sentence per way in which the documents were not audited alike."""
    warnings = []
    datasets = _grouped((e.label, e.result.evaluation.dataset) for e in items)
    if len(datasets) > 1:
        warnings.append(
            "The checkpoints were evaluated on different datasets ("
            + _listed(datasets, str)
            + "): their accuracies measure different tasks."
        )
    samples = _grouped(
        (e.label, (e.result.evaluation.dataset, e.result.evaluation.indices)) for e in items
    )
    if len(samples) > len(datasets):
        warnings.append(
            "Some checkpoints of one dataset were audited on different samples ("
            + _listed(samples, lambda k: f"{k[0]}, {len(k[1])} samples from index {k[1][:1]}")
            + "): their accuracies are not paired, and differences include sampling noise."
        )
    suites = _grouped((e.label, _suite_name(e.result)) for e in items)
    if len(suites) > 1:
        warnings.append(
            "The audits ran different presets or suites ("
            + _listed(suites, str)
            + "): weaker suites report higher robust accuracy."
        )
    for norm in _norms(items):
        name = NORM_NAMES[norm]
        present = [(e.label, s) for e in items if (s := _section(e, norm)) is not None]
        epsilons = _grouped((label, s.epsilons) for label, s in present)
        if len(epsilons) > 1:
            warnings.append(
                f"The {name} epsilons differ ("
                + _listed(epsilons, lambda k: ", ".join(f"{x:g}" for x in k))
                + "): robust accuracies at different budgets are not comparable."
            )
        attacks = _grouped((label, tuple(a.label for a in s.attacks)) for label, s in present)
        if len(attacks) > 1:
            warnings.append(
                f"The {name} attack lists differ ("
                + _listed(attacks, lambda k: " → ".join(k))
                + "): reliable robust accuracies are worst cases over different attacks."
            )
    for norm in _norms(items):
        lacking = [e.label for e in items if _section(e, norm) is None]
        if lacking:
            warnings.append(
                f"{', '.join(lacking)}: audited without {NORM_NAMES[norm]}, which the others have."
            )
    baselines = [e.label for e in items if e.result.baseline]
    if baselines:
        warnings.append(
            f"{', '.join(baselines)}: a gate baseline holds only what the gate reads; its "
            "curves, flatness and activation statistics are missing."
        )
    return warnings


# --- formatting ---------------------------------------------------------------------------


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
    """One HTML table of a :class:`Table`: all of it, or the columns of it that fit A4 beside
    the key columns."""

    id: str
    caption: str
    headers: list[tuple[str, bool]]  # (header, written vertically)
    rows: list[list[_Cell]]


def _group(table: Table, column: str) -> str:
    """The group a column belongs to: the columns of one norm, of one flatness mode."""
    if table.name == "verdicts":
        return next(
            (name for name in NORM_NAMES.values() if column.startswith(f"{name} ")), "summary"
        )
    if table.name == "flatness":
        return "layers active" if column.endswith(", layers active") else "eval"
    return ""


def _parts(table: Table) -> list[_Part]:
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


def _cells(table: Table) -> tuple[list[str], list[list[_Cell]]]:
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


def markdown(table: Table) -> str:
    """The table as GitHub Markdown, cells as the page shows them."""
    headers, rows = _cells(table)

    def line(items: Iterable[str]) -> str:
        return "| " + " | ".join(" ".join(i.split()).replace("|", "\\|") for i in items) + " |"

    body = [line(headers), "|" + "---|" * len(headers), *(line(c.text for c in r) for r in rows)]
    return "\n".join(body) + "\n"


def csv(table: Table) -> str:
    """The table as CSV: every number in full, an interval's ends in their own columns."""
    return str(table.frame.to_csv(index=False, lineterminator="\n"))


# --- plots --------------------------------------------------------------------------------

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_LINES = ("-", "--", ":", "-.")


def _figure(rows: int, columns: int, width: float, height: float) -> tuple[Figure, Any]:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False)


def _style(number: int) -> dict[str, Any]:
    return {
        "marker": _MARKERS[(number - 1) % len(_MARKERS)],
        "linestyle": _LINES[(number - 1) // len(_MARKERS) % len(_LINES)],
        "color": f"C{(number - 1) % 10}",
    }


def _sweep(entry: Entry, norm: str) -> Sweep | None:
    section = _section(entry, norm)
    return section.sweep if section else None


def _sweep_attack(items: Sequence[Entry], norm: str) -> str:
    return "/".join(sorted({s.attack for e in items if (s := _sweep(e, norm)) is not None}))


def curves_svg(items: Sequence[Entry]) -> str | None:
    """Robust accuracy against epsilon (the nested sweep), one panel per norm, one line per
    checkpoint with its 95 % band, as an inline ``<svg>``; None without sweeps."""
    norms = [n for n in _norms(items) if any(_sweep(e, n) for e in items)]
    if not norms:
        return None
    import matplotlib

    with matplotlib.rc_context({**plots.STYLE, "text.parse_math": False}):
        figure, axes = _figure(1, len(norms), 5.0 * len(norms) + 2.6, 3.6)
        for axis, norm in zip(axes[0], norms, strict=True):
            for entry in items:
                section, sweep = _section(entry, norm), _sweep(entry, norm)
                if section is None or sweep is None:
                    continue
                points = [
                    (eps, 1 - rate.value, 1 - rate.wilson_95[1], 1 - rate.wilson_95[0])
                    for eps, rate in zip(sweep.epsilons, sweep.success_rate, strict=True)
                    if eps != section.unbounded_epsilon and rate.value is not None
                ]
                if not points:
                    continue
                x, robust, low, high = (list(column) for column in zip(*points, strict=True))
                style = _style(entry.number)
                label = f"{entry.number} {entry.label}"
                axis.plot(x, robust, label=label, markersize=4, **style)
                axis.fill_between(x, low, high, color=style["color"], alpha=0.12, linewidth=0)
            axis.set(xlabel="ε", ylabel="robust accuracy", ylim=(-0.02, 1.02))
            axis.set_title(f"{NORM_NAMES[norm]} ({_sweep_attack(items, norm)} sweep)")
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    alt = (
        f"Robust accuracy against epsilon for {len(items)} checkpoints, one panel per norm "
        f"({', '.join(NORM_NAMES[n] for n in norms)}); each line is one checkpoint, numbered as "
        "in the tables, with its 95 % interval as a band."
    )
    return plots.svg(figure, "comparison-curves", alt)


def _point(axis: Any, entry: Entry, section: NormResult, x: float) -> bool:
    """Plot one checkpoint's reliable (filled) and PGD-CE (open) robust accuracy at ``x``,
    joined by a line, labelled by its number (⇑ when PGD-CE is far above); False if none."""
    reliable = section.reliable_robust_accuracy[0].value
    if reliable is None:
        return False
    style = _style(entry.number)
    alone = pgd_ce(entry.result, section)
    top = reliable
    if alone is not None and alone.value is not None:
        top = max(top, alone.value)
        axis.plot([x, x], [reliable, alone.value], color=style["color"], linewidth=1)
        axis.plot([x], [alone.value], marker=style["marker"], mfc="none", color=style["color"])
    axis.plot([x], [reliable], marker=style["marker"], color=style["color"])
    far = far_above(entry.result, section)
    axis.annotate(
        f"{entry.number} {FAR_MARK}" if far else str(entry.number),
        (x, top),
        textcoords="offset points",
        xytext=(4, 3),
        fontsize=8,
        fontweight="bold" if far else "normal",
    )
    return True


def scatter_svg(items: Sequence[Entry]) -> str | None:
    """Flatness (Fisher-Rao norm, Hessian trace) against PGD-CE and reliable robust accuracy,
    one row of panels per norm, as an inline ``<svg>``; None when no audit measured flatness."""
    measured = [e for e in items if e.result.flatness is not None]
    norms = _norms(measured)
    if not measured or not norms:
        return None
    import matplotlib

    measures = (
        ("Fisher-Rao norm² (empirical Fisher)", lambda f: f.fisher_rao_empirical),
        ("Hessian trace", lambda f: f.hessian_trace),
    )
    with matplotlib.rc_context({**plots.STYLE, "text.parse_math": False}):
        figure, axes = _figure(len(norms), 2, 9.0, 3.2 * len(norms))
        for row, norm in enumerate(norms):
            for column, (title, pick) in enumerate(measures):
                axis = axes[row][column]
                xs = []
                for entry in measured:
                    section = _section(entry, norm)
                    estimate = pick(entry.result.flatness)
                    if section is None or estimate is None or not math.isfinite(estimate.value):
                        continue
                    if _point(axis, entry, section, estimate.value):
                        xs.append(estimate.value)
                if xs and min(xs) > 0 and max(xs) > 20 * min(xs):
                    axis.set_xscale("log")
                    axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                    axis.xaxis.set_minor_formatter(NullFormatter())
                axis.set(xlabel=title, ylabel=f"{NORM_NAMES[norm]} robust accuracy", ylim=(0, 1.05))
        axes[0][0].plot([], [], "ko", mfc="none", label="PGD-CE")
        axes[0][0].plot([], [], "ko", label="reliable")
        axes[0][0].legend(loc="upper right", fontsize=8)
    alt = (
        f"Scatter of {len(measured)} checkpoints: Fisher-Rao norm and Hessian trace (horizontal, "
        "log scale) against robust accuracy (vertical), one row per norm; an open marker is "
        "PGD-CE, a filled one the reliable worst case, joined by a line; numbers as in the "
        f"tables, {FAR_MARK} where PGD-CE is far above the reliable robust accuracy."
    )
    return plots.svg(figure, "comparison-scatter", alt)


# --- page ---------------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("robaudit")
    except metadata.PackageNotFoundError:
        return "unknown"


def render(items: Sequence[Entry], built: Sequence[Table] | None = None) -> str:
    """The comparison page of ``items`` (deterministic: the same documents, the same bytes)."""
    built = tables(items) if built is None else built
    # The SVGs come from matplotlib, which escapes every text it writes: markup, not text.
    # Both keys always: the templates' undefined names are errors (a comparison of audits
    # without flatness has no scatter).
    figures = {
        name: None if figure is None else Markup(figure)
        for name, figure in (("curves", curves_svg(items)), ("scatter", scatter_svg(items)))
    }
    return (
        environment()
        .get_template("compare.html")
        .render(
            version=_version(),
            stylesheet=Markup(stylesheet() + _CSS),  # CSS is not escaped inside <style>
            items=[(item, _level(item.result.verdict)) for item in items],
            shapes=VERDICT_SHAPES,
            warnings=comparability_warnings(items),
            tables={t.name: (t, _parts(t)) for t in built},
            figures=figures,
        )
    )


def write_comparison(
    paths: Sequence[str | Path], output: str | Path, formats: Sequence[str] = ()
) -> list[str]:
    """Render the comparison of the documents at ``paths`` to ``output`` (atomically), and
    with ``formats`` (``csv``, ``md``) every table beside it (``<output stem>.<table>.csv``).

    Returns:
        The comparability warnings (also shown on the page).

    Raises:
        DocumentError: a document cannot be read (one line); nothing is written.
    """
    output = Path(output)
    items = entries(paths)
    built = tables(items)
    writers: dict[str, Callable[[Table], str]] = {"csv": csv, "md": markdown}
    written = {output: render(items, built)}
    for table in built:
        for form in formats:
            written[output.with_name(f"{output.stem}.{table.name}.{form}")] = writers[form](table)
    output.parent.mkdir(parents=True, exist_ok=True)
    for target, text in written.items():
        atomic_write_text(target, text)
    return comparability_warnings(items)


if __name__ == "__main__":
    from commands.compare import main

    sys.exit(main())
