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

This module renders and writes the page; the rest are its parts: ``reports.compared`` (the
compared documents, the PGD-CE gap and the comparability warnings), ``reports.comparetables``
(the tables, and their cells as the page, CSV and Markdown show them) and
``reports.compareplots`` (the figures).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from markupsafe import Markup

from core.boundary import atomic_write_text
from core.checks import verdict_level
from reports.cells import NORM_NAMES
from reports.compared import (
    FAR_ABOVE,
    FAR_MARK,
    Entry,
    comparability_warnings,
    entries,
    far_above,
    gap,
    pgd_ce,
)
from reports.compareplots import curves_svg, scatter_svg
from reports.comparetables import (
    STATUS_SHOWN,
    ComparisonTable,
    activation_table,
    csv,
    flatness_table,
    markdown,
    page_parts,
    redflag_table,
    robust_table,
    summary_table,
    tables,
)
from reports.html import environment, stylesheet

__all__ = [
    "FAR_ABOVE",
    "FAR_MARK",
    "NORM_NAMES",
    "STATUS_SHOWN",
    "Entry",
    "ComparisonTable",
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


def _version() -> str:
    try:
        return metadata.version("robaudit")
    except metadata.PackageNotFoundError:
        return "unknown"


def render(items: Sequence[Entry], built: Sequence[ComparisonTable] | None = None) -> str:
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
            items=[(item, verdict_level(item.result.verdict)) for item in items],
            shapes=VERDICT_SHAPES,
            warnings=comparability_warnings(items),
            tables={t.name: (t, page_parts(t)) for t in built},
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
    writers: dict[str, Callable[[ComparisonTable], str]] = {"csv": csv, "md": markdown}
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
