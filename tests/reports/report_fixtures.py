"""Result documents for the report tests: real quick audits of a zoo model, made once per
session, and hand-modified copies of them."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from functools import cache
from html.parser import HTMLParser
from typing import Any

from reports.document import AuditResult

NUM_SAMPLES = 60
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}


@cache
def _documents() -> dict[str, str]:
    from audit_helpers import audit_document, quick_config

    from analysis.config import build_suite, parse_epsilons
    from analysis.masked import SaturatedLogits

    honest = quick_config(num_samples=NUM_SAMPLES, flatness=True)
    two_epsilons = build_suite(
        "quick", "digits", epsilons=parse_epsilons("linf=0.05,0.1;l2=0.3,0.5")
    )
    honest = dataclasses.replace(honest, suite=two_epsilons)
    masked = quick_config(num_samples=NUM_SAMPLES)
    # JSON text, so that every test starts from its own fresh copy.
    return {
        "honest": json.dumps(audit_document("digits-mlp-dropout", honest)),
        "masked": json.dumps(audit_document("digits-mlp-dropout", masked, model=SaturatedLogits)),
    }


def document(name: str) -> dict[str, Any]:
    """A fresh copy of the document ``honest`` (quick preset with flatness, two epsilons per
    norm) or ``masked`` (the same model with logits × 10⁴: a saturated softmax)."""
    return copy.deepcopy(json.loads(_documents()[name]))


def result(name: str) -> AuditResult:
    return AuditResult.from_dict(document(name))


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def numbers(text: str) -> list[float]:
    """Every number written in ``text``."""
    return [float(m) for m in NUMBER.findall(text)]


def close(shown: float, value: float, digits: int = 3) -> bool:
    """``shown`` is ``value`` rounded to ``digits`` decimals."""
    return math.isclose(shown, round(value, digits), abs_tol=10**-digits * 0.51)


class Page(HTMLParser):
    """A parsed report: every table's cells by id, the text, and a check that each element
    is closed in the order it was opened."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
