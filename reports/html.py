"""The single-audit report, rendered from the result document alone.

One self-contained ``report.html`` (inline CSS and SVG, no script, no external request; prints
on A4) rendered from the result document alone, never from the model: the verdict with its key
numbers, robust accuracy per attack and norm, robustness curves, who broke what, the attacks'
loss per iteration, the red flags with what each check measures, a diagnosis of the mechanism
the evidence points to, flatness, activation statistics, adversarial examples and provenance.
Everything taken from the document is escaped (jinja2 autoescape). Two renders of one document
are byte-identical: nothing of the render itself (time, host) enters the page.

The command, ``python -m reports.html`` (``robaudit-report``), is :mod:`commands.report`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from core.boundary import atomic_write_text
from core.checks import CHECKS, CheckSpec, verdict_level
from core.document import WARN_OR_FAIL, AuditResult, preset_caveat
from reports import evidence, layout, plots, tables
from reports.cells import COLUMN_GROUPS
from reports.diagnosis import diagnose

__all__ = [
    "FindingView",
    "Plot",
    "TableView",
    "environment",
    "finding_views",
    "render",
    "stylesheet",
    "table_view",
    "write_report",
]

_HERE = Path(__file__).resolve().parent
_CAPTIONS = {
    "robust_accuracy": "Robust accuracy after each attack, at the suite's ε (95 % interval)",
    "who_broke_what": "Samples each attack broke that every earlier attack missed",
    "gradients": "Input-gradient health of each gradient attack",
    "probes": "Direct measurements of the model",
    "red_flags": "Red-flag checks",
    "flatness": "Flatness of the minimum (± standard error)",
    "flatness_stopping": "How each flatness estimate ended: what stopped it, and what it used",
    "activations": "Inputs of the dropout-family layers on clean data",
    "provenance": "Provenance",
}


@dataclass(frozen=True)
class Row:
    label: str
    cells: tuple[str, ...]
    css: str = ""


@dataclass(frozen=True)
class TableView:
    """A DataFrame of :mod:`reports.tables` as the templates' ``table`` macro reads it;
    ``groups`` holds each column's group, as the frame gives it (``reports.cells.COLUMN_GROUPS``:
    a norm's name), "" for a column of none."""

    name: str
    caption: str
    index: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    groups: tuple[str, ...]

    def parts(self) -> list[TableView]:
        """The table as it fits an A4 page: itself, or (with many norms and epsilons) several
        tables of its columns, one norm's together where they fit, each with the row labels
        (see :mod:`reports.layout`)."""
        widths = [
            max([layout.unbreakable(column), *(layout.unbreakable(r.cells[i]) for r in self.rows)])
            + layout.CELL_PADDING
            for i, column in enumerate(self.columns)
        ]
        labels = max(
            [layout.unbreakable(self.index), *(layout.unbreakable(r.label) for r in self.rows)]
        )
        split = layout.parts(
            widths, self.groups, layout.PAGE_CHARACTERS - labels - layout.CELL_PADDING
        )
        if len(split) == 1:
            return [self]
        out = []
        names = layout.captions(self.caption, split, self.groups)
        for n, (part, caption) in enumerate(zip(split, names, strict=True)):
            out.append(
                TableView(
                    self.name if n == 0 else f"{self.name}-{n + 1}",
                    caption,
                    self.index,
                    tuple(self.columns[i] for i in part),
                    tuple(Row(r.label, tuple(r.cells[i] for i in part), r.css) for r in self.rows),
                    tuple(self.groups[i] for i in part),
                )
            )
        return out


def table_view(name: str, frame: pd.DataFrame, caption: str, total: str | None = None) -> TableView:
    """``frame`` for the ``table`` macro; the row labelled ``total`` is set off as a total."""
    rows = tuple(
        Row(str(label), tuple(str(c) for c in cells), "total" if label == total else "")
        for label, cells in zip(frame.index, frame.itertuples(index=False), strict=True)
    )
    columns = tuple(map(str, frame.columns))
    groups = tuple(frame.attrs.get(COLUMN_GROUPS, [""] * len(columns)))
    return TableView(name, caption, str(frame.index.name or ""), columns, rows, groups)


@dataclass(frozen=True)
class Plot:
    """An inline SVG with its caption (the SVG carries the alt text itself)."""

    name: str
    svg: Markup
    caption: str


def _plot(name: str, svg: str | None, caption: str) -> Plot | None:
    # The SVG comes from matplotlib, which escapes every text it writes, and its alt text is
    # escaped by plots.svg: it is markup, not document text.
    return None if svg is None else Plot(name, Markup(svg), caption)


@cache
def stylesheet() -> str:
    """The report's CSS (``reports/style.css``), inlined into every page."""
    return (_HERE / "style.css").read_text(encoding="utf-8")


@cache
def environment() -> jinja2.Environment:
    """The templates (``reports/templates``), autoescaping everything; the comparison report
    extends ``base.html`` and imports ``macros.html`` from the same environment."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["split_value"] = layout.split_value
    return env


def _version() -> str:
    try:
        return metadata.version("robaudit")
    except metadata.PackageNotFoundError:
        return "unknown"


# --- the verdict -----------------------------------------------------------------------------


def _banner(result: AuditResult) -> dict[str, Any]:
    norms = []
    for section in result.robustness.norms:
        for k, epsilon in enumerate(section.epsilons):
            reliable = section.reliable_robust_accuracy[k]
            alone = [
                (record.label, share)
                for record in section.attacks
                if (share := tables.alone_accuracy(result, record, k)) is not None
                and share.value is not None
            ]
            if alone and reliable.value is not None:
                label, share = min(alone, key=lambda item: item[1].value or 0.0)
                gap = (share.value or 0.0) - reliable.value
                best = (
                    f"{label} {tables.interval(share)} overstates the reliable robust accuracy "
                    f"by {100 * gap:.1f} percentage points"
                    if gap > 0
                    else f"{label} {tables.interval(share)}, the reliable robust accuracy itself"
                )
            else:
                best = "no attack ran on every sample, so none can be judged alone"
            norms.append(
                {
                    "column": tables.norm_label(section.norm, epsilon),
                    "reliable": tables.reliable(section, k),
                    "best": best,
                    "over": ", ".join(section.chain(k)) or "no attack",
                    "missing": ", ".join(section.autoattack_not_run(k)),
                    "eot": "; ".join(
                        f"{passes} ({', '.join(labels)})" for passes, labels in section.eot_passes()
                    ),
                }
            )
    return {
        "level": verdict_level(result.verdict),
        "verdict": result.verdict,
        "clean": tables.interval(result.clean_accuracy),
        "norms": norms,
        "flags": [(f.code, f.status) for f in result.findings if f.status in WARN_OR_FAIL],
        "caveat": preset_caveat(result),
    }


def _alone(result: AuditResult) -> list[str]:
    out = []
    for section in result.robustness.norms:
        for k, epsilon in enumerate(section.epsilons):
            for record in section.attacks:
                share = tables.alone_accuracy(result, record, k)
                if share is not None:
                    out.append(
                        f"{record.label} {tables.interval(share)} under "
                        f"{tables.norm_label(section.norm, epsilon)}"
                    )
    return out


def _unbounded(result: AuditResult) -> str:
    parts = []
    for section in result.robustness.norms:
        sweep = section.sweep
        if sweep is None or section.unbounded_epsilon not in sweep.epsilons:
            continue
        rate = sweep.success_rate[sweep.epsilons.index(section.unbounded_epsilon)]
        if rate.value is not None:
            parts.append(
                f"{100 * rate.value:.1f} % success under {tables.norm_label(section.norm)} "
                f"(ε={section.unbounded_epsilon:g}, {rate.total - rate.count} samples survived)"
            )
    return "; ".join(parts)


# --- the page --------------------------------------------------------------------------------

_SECTIONS = (
    ("verdict", "Verdict"),
    ("robust-accuracy", "Robust accuracy"),
    ("curves", "Robustness curves"),
    ("who-broke-what", "Who broke what"),
    ("loss", "Attack loss per iteration"),
    ("red-flags", "Red flags"),
    ("diagnosis", "Diagnosis"),
    ("flatness", "Flatness"),
    ("activations", "Activation statistics"),
    ("examples", "Adversarial examples"),
    ("checks", "The checks"),
    ("provenance", "Provenance"),
)


def _name(result: AuditResult) -> str:
    checkpoint = result.provenance.checkpoint
    return Path(checkpoint).stem or checkpoint


def _subtitle(result: AuditResult) -> str:
    info = result.checkpoint
    evaluation = result.evaluation
    suite = (result.provenance.config or {}).get("suite") or {}
    parts = []
    if info is not None:
        parts.append(f"{info.arch} with {info.layer.kind} layers")
        low, high = info.bounds
        normalised = "no normalisation" if info.mean is None else "normalised inside"
        parts.append(f"pixels in [{low:g}, {high:g}], {normalised}")
    parts.append(f"{evaluation.num_samples} samples of {evaluation.dataset or 'a dataset'}")
    if suite.get("name"):
        parts.append(f"preset {suite['name']}")
    parts.append(f"seed {result.provenance.seed}")
    return "Robustness audit: " + ", ".join(parts)


def _definitions(result: AuditResult) -> list[tuple[str, str]]:
    flatness = result.flatness
    if flatness is None:
        return []
    out = []
    for name in (
        "fisher_rao_empirical",
        "fisher_rao_model",
        "hessian_trace",
        "hessian_eigenvalues",
        "epsilon_sharpness",
    ):
        estimate = getattr(flatness, name)
        provenance = getattr(estimate, "provenance", None)
        if provenance is not None:
            out.append((name.replace("_", " "), provenance.definition))
    return out


def _flatness_samples(result: AuditResult) -> str:
    flatness = result.flatness
    estimate = flatness and (flatness.hessian_trace or flatness.fisher_rao_model)
    provenance = getattr(estimate, "provenance", None)
    if provenance is None:
        return "the first evaluation samples"
    return f"the first {provenance.num_samples} evaluation samples"


@dataclass(frozen=True)
class FindingView:
    """One row of the red-flag table: the finding with its evidence in words and tables."""

    code: str
    status: str
    kind: str
    explanation: str
    evidence: evidence.Rendered
    remedy: str

    @property
    def flagged(self) -> bool:
        return self.status in WARN_OR_FAIL


def finding_views(result: AuditResult) -> list[FindingView]:
    """Every finding of ``result`` as the red-flag table shows it."""
    return [
        FindingView(
            finding.code,
            finding.status,
            finding.kind or tables.NOT_AVAILABLE,
            finding.explanation,
            evidence.render(finding.code, finding.evidence),
            finding.remedy or "",
        )
        for finding in result.findings
    ]


def _checks(result: AuditResult) -> list[tuple[str, CheckSpec]]:
    out = []
    for finding in result.findings:
        known = CHECKS.get(finding.code)
        out.append(
            (
                finding.code,
                known
                or CheckSpec(
                    finding.title or finding.code,
                    finding.explanation,
                    "not described by this version of the report",
                ),
            )
        )
    return out


def render(result: AuditResult) -> str:
    """The report of ``result`` as one HTML page (a str); the same result gives the same
    bytes."""
    frames = {name: build(result) for name, build in tables.REPORT_TABLES.items()}
    views = {
        name: table_view(
            name,
            frame,
            _CAPTIONS.get(name, name),
            "total broken" if name == "who_broke_what" else None,
        )
        for name, frame in frames.items()
    }
    flat = result.flatness
    figures = {
        "curves": _plot(
            "curves",
            plots.robustness_curves(result),
            "Accuracy against ε: nested sweep solid with circles, independent sweep dashed "
            "with squares, 95 % bands; hollow markers: attacks alone; star: reliable.",
        ),
        "who_broke_what": _plot(
            "who-broke-what",
            plots.who_broke_what_plot(result),
            "Samples each attack broke that all earlier attacks missed.",
        ),
        "clean": _plot(
            "clean",
            plots.clean_distribution_plot(result),
            "Clean logit margins and cross-entropy input-gradient norms, log scale; the "
            "hatched bar counts misclassified samples (margins) or exact zeros (gradients).",
        ),
        "loss": _plot(
            "loss",
            plots.loss_trace_plot(result),
            "Mean loss of the attacked samples per iteration, at the suite's first ε.",
        ),
        "spectral": _plot(
            "spectral",
            plots.spectral_density_plot(result),
            "Hessian eigenvalue density (stochastic Lanczos quadrature), top eigenvalues dotted.",
        ),
        "landscape_1d": _plot(
            "landscape-1d",
            plots.landscape_1d_plot(result),
            "Loss (± standard error, solid) and accuracy (dashed) along one random "
            "filter-normalised direction.",
        ),
        "landscape_2d": _plot(
            "landscape-2d",
            plots.landscape_2d_plot(result),
            "Loss over two random filter-normalised directions.",
        ),
        "examples": [
            plot
            for section in result.robustness.norms
            if (
                plot := _plot(
                    f"examples-{section.norm}",
                    plots.examples_plot(result, section),
                    f"{tables.norm_label(section.norm, section.epsilons[0])}: per attack, "
                    "original, adversarial example and perturbation (mid grey is zero).",
                )
            )
        ],
    }
    template = environment().get_template("report.html")
    return template.render(
        version=_version(),
        stylesheet=Markup(stylesheet()),  # CSS is not escaped inside <style>
        name=_name(result),
        subtitle=_subtitle(result),
        sections=_SECTIONS,
        banner=_banner(result),
        tables=views,
        findings=finding_views(result),
        alone=_alone(result),
        unbounded=_unbounded(result),
        plots=figures,
        mechanisms=diagnose(result),
        flatness_note=result.flatness_note,
        activations_note=result.activations_note,
        flatness_samples=_flatness_samples(result),
        flatness_definitions=_definitions(result) if flat else [],
        checks=_checks(result),
    )


def write_report(result: AuditResult, path: str | Path) -> Path:
    """Render ``result`` and write it to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(result))
    return path


if __name__ == "__main__":
    from commands.report import main

    sys.exit(main())
