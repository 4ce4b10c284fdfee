"""A red flag's evidence as a reader takes it in: sentences and small tables.

Every check of ``analysis.redflags`` stores the numbers behind its status as a JSON object,
whose keys ``core.checks`` declares per check. :data:`RENDERERS` turns each check's object into
a few sentences and, where there are many numbers, small tables: per-epsilon series with the
epsilons as columns (split into several narrow tables when there are many), per-attack rows
capped at :data:`MAX_ROWS` with the rest summarised in a sentence. A check this version does
not know, an object of another shape (an older or newer document), or keys a renderer does
not read are shown by :func:`generic`: a two-column table of humanised keys and values, lists
summarised (``12 values from 0.1 to 0.9``), and lists of records as a compact row table.

Example::

    shown = render("unbounded-attack-below-100", finding.evidence)
    shown.text()     # 'L∞ at ε = 1: 12 of 80 samples survived (85.0 % success). ...'
    shown.blocks     # sentences (str) and Table objects, for the HTML

The blocks, the formatting and the registry are in ``reports.evidenceblocks``; the renderers
are grouped as the checks are: ``reports.cleanevidence``, ``reports.compareevidence``,
``reports.gradientevidence``, ``reports.modelevidence`` and ``reports.runevidence``; the
fallback is ``reports.genericevidence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.checks import CHECKS

# The renderers register on import.
from reports import (  # noqa: F401
    cleanevidence,
    compareevidence,
    gradientevidence,
    modelevidence,
    runevidence,
)
from reports.evidenceblocks import MAX_ROWS, RENDERERS, Block, Rendered, Table
from reports.genericevidence import generic

__all__ = [
    "MAX_ROWS",
    "RENDERERS",
    "Block",
    "Rendered",
    "Table",
    "generic",
    "render",
]


def render(code: str, evidence: Any) -> Rendered:
    """The evidence of the finding ``code`` in sentences and small tables: by the check's own
    renderer, or by :func:`generic` for an unknown check or an evidence object the renderer
    cannot read (then ``generic`` is True)."""
    if not evidence:
        return Rendered((), False)
    renderer = RENDERERS.get(code)
    if renderer is not None and isinstance(evidence, Mapping):
        try:
            blocks = renderer(evidence)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError):
            return Rendered(tuple(generic(evidence)), True)
        # Keys a later version added, which this one does not declare, are shown as they are.
        spec = CHECKS.get(code)
        extra: dict[str, Any] = {}
        if spec is not None and spec.evidence.keyed_by is None:
            extra = {key: evidence[key] for key in spec.evidence.undeclared(evidence)}
        return Rendered(tuple(blocks + generic(extra)), bool(extra))
    return Rendered(tuple(generic(evidence)), True)
