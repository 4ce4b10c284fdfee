"""Every table of a report as a pandas DataFrame, built from an :class:`AuditResult` alone.

Cells are the text the report shows (``0.281 [0.240, 0.325]``, ``110.5 ± 6.352``, ``n/a``),
so a table pasted from the CSV or Markdown reads exactly as in ``report.html``; the row labels
are the index (its name heads the first column). :data:`REPORT_TABLES` names every table;
:func:`write_tables` writes each as CSV and Markdown.

Example::

    result = read_result("out/digits-mlp-dropout/audit.json")
    robust_accuracy_table(result)            # rows attacks, columns norm and epsilon
    write_tables(result, "out/digits-mlp-dropout", formats=("csv", "md"))

This module names every table, builds those of the probes and the red flags, and writes them;
the rest are its parts: ``reports.cells`` (the cells and the frame), ``reports.attacktables``
(robust accuracy, who broke what, gradients), ``reports.flattables`` (flatness, how each
estimate ended, activations) and ``reports.provenancetable``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from core.boundary import atomic_write_text
from core.document import AuditResult
from reports import evidence
from reports.attacktables import (
    alone_accuracy,
    gradient_table,
    new_breaks,
    robust_accuracy_table,
    who_broke_what_table,
)
from reports.cells import NOT_AVAILABLE, data_frame, interval, norm_label, number, reliable
from reports.flattables import (
    activation_table,
    flatness_sections,
    flatness_stopping_table,
    flatness_table,
    stopping,
)
from reports.provenancetable import provenance_table

__all__ = [
    "FORMATS",
    "REPORT_TABLES",
    "activation_table",
    "alone_accuracy",
    "flatness_sections",
    "flatness_stopping_table",
    "flatness_table",
    "stopping",
    "gradient_table",
    "interval",
    "new_breaks",
    "norm_label",
    "number",
    "parse_formats",
    "probe_table",
    "provenance_table",
    "red_flag_table",
    "reliable",
    "robust_accuracy_table",
    "to_markdown",
    "who_broke_what_table",
    "write_tables",
]

FORMATS = ("csv", "md")


def probe_table(result: AuditResult) -> pd.DataFrame:
    """The direct measurements of the model the checks read: input gradient, finite
    differences, repeated passes, batch composition, mode and outputs."""
    probes = result.probes
    if probes is None:
        return data_frame({}, ["value"], "probe")

    def share(part: int | None, whole: int | None) -> str:
        if part is None or not whole:
            return NOT_AVAILABLE
        return f"{part} of {whole} ({part / whole:.1%})"

    zero = probes.clean_zero_gradient_fraction
    rows = {
        "input gradient exists": number(probes.input_gradient_exists)
        + (f" ({probes.input_gradient_note})" if probes.input_gradient_note else ""),
        "clean input gradients exactly zero": NOT_AVAILABLE if zero is None else f"{zero:.1%}",
        "gradient disagrees with finite differences": (
            share(probes.fd_disagreeing, probes.fd_informative)
            + (f", {probes.fd_precision}" if probes.fd_precision else "")
            if probes.fd_applicable
            else f"not measured ({probes.fd_note or NOT_AVAILABLE})"
        ),
        "repeated passes: largest logit change": number(probes.max_repeat_difference),
        "repeated passes: predictions flipped": share(
            probes.prediction_flips, probes.repeat_samples
        ),
        "batch composition: samples changed": share(probes.batch_differing, probes.batch_compared),
        "modules in train mode": ", ".join(probes.train_mode_modules) or "none",
        "probability outputs": number(probes.probability_outputs),
        "non-finite clean logits": number(probes.nonfinite_logits),
        "non-finite clean gradients": number(probes.nonfinite_gradients),
    }
    return data_frame({k: [v] for k, v in rows.items()}, ["value"], "probe")


# --- findings --------------------------------------------------------------------------------


def red_flag_table(result: AuditResult) -> pd.DataFrame:
    """One row per check: status, kind, its evidence in words (:mod:`reports.evidence`),
    explanation and remedy."""
    rows = {
        finding.code: [
            finding.status,
            finding.kind or NOT_AVAILABLE,
            evidence.render(finding.code, finding.evidence).text(),
            finding.explanation,
            finding.remedy or "",
        ]
        for finding in result.findings
    }
    return data_frame(rows, ["status", "kind", "evidence", "explanation", "remedy"], "check")


# --- writing ---------------------------------------------------------------------------------

REPORT_TABLES: dict[str, Callable[[AuditResult], pd.DataFrame]] = {
    "robust_accuracy": robust_accuracy_table,
    "who_broke_what": who_broke_what_table,
    "gradients": gradient_table,
    "probes": probe_table,
    "red_flags": red_flag_table,
    "flatness": flatness_table,
    "flatness_stopping": flatness_stopping_table,
    "activations": activation_table,
    "provenance": provenance_table,
}
"""Every table of the single-audit report, by the file name it is written under."""


def _markdown_cell(value: Any) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame``, its index as the first column."""
    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = [
        "| " + " | ".join(map(_markdown_cell, header)) + " |",
        "|" + "---|" * len(header),
    ]
    for label, cells in zip(frame.index, frame.itertuples(index=False), strict=True):
        lines.append("| " + " | ".join(map(_markdown_cell, [label, *cells])) + " |")
    return "\n".join(lines) + "\n"


def parse_formats(text: str) -> tuple[str, ...]:
    """``"csv,md"`` → ``("csv", "md")``.

    Raises:
        ValueError: an empty list or an unknown format, naming the known ones.
    """
    formats = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise ValueError(
            f"--tables takes a comma-separated list of {', '.join(FORMATS)}, got {text!r}"
        )
    return formats


def write_tables(
    result: AuditResult, directory: str | Path, formats: Iterable[str] = FORMATS
) -> list[Path]:
    """Write every table of :data:`REPORT_TABLES` as ``DIRECTORY/<name>.csv`` and ``.md``; a table
    the document has no rows for (flatness after ``--no-flatness``) is left out.

    Returns:
        The paths written, in order.
    """
    formats = parse_formats(",".join(formats))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in REPORT_TABLES.items():
        frame = build(result)
        if frame.empty:
            continue
        for kind in formats:
            path = directory / f"{name}.{kind}"
            text = frame.to_csv(lineterminator="\n") if kind == "csv" else to_markdown(frame)
            atomic_write_text(path, text)
            written.append(path)
    return written
