"""Result documents for the report tests: real quick audits of zoo models, made once per
session, and hand-modified copies of them."""

from __future__ import annotations

import atexit
import copy
import dataclasses
import json
import math
import re
import shutil
import tempfile
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from core.document import AuditResult

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


ZOO_COMPARED = (
    "digits-mlp-dropout",
    "digits-mlp-none",
    "digits-mlp-normout-spatiotemporal-ce",
    "digits-mlp-normout-spatiotemporal",
    "digits-mlp-qsd",
)
MANY_EPSILONS = (
    "linf=0.02,0.04,0.06,0.08,0.1,0.12,0.15,0.2,0.25,0.3;l2=0.25,0.5,0.75,1,1.25,1.5,2,2.5,3,4"
)


@cache
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="robaudit-reports-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def zoo_audits(kind: str) -> tuple[Path, ...]:
    """The ``audit.json`` of zoo checkpoints, audited once per session into a temporary
    folder: ``quick`` (the five digits MLPs of :data:`ZOO_COMPARED`, quick preset, 80 samples,
    flatness on 64) or ``many-epsilons`` (four of them, ten epsilons per norm, 60 samples, no
    flatness)."""
    from audit_helpers import audit_document, quick_config

    from analysis.config import build_suite, parse_epsilons
    from core.document import write_json

    if kind == "quick":
        names, config = ZOO_COMPARED, quick_config(num_samples=80, flatness=True)
    elif kind == "many-epsilons":
        suite = build_suite("quick", "digits", epsilons=parse_epsilons(MANY_EPSILONS))
        names = ZOO_COMPARED[:1] + ZOO_COMPARED[2:]
        config = dataclasses.replace(quick_config(num_samples=60), suite=suite)
    else:
        raise ValueError(f"kind is quick or many-epsilons, got {kind!r}")
    paths = []
    for name in names:
        path = _folder() / kind / name / "audit.json"
        path.parent.mkdir(parents=True)
        write_json(path, audit_document(name, config))
        paths.append(path)
    return tuple(paths)


def _wrappers() -> dict[str, Any]:
    """Models broken in known ways that the zoo does not show, each a wrapper of a model."""
    import torch
    from torch import nn

    from analysis.masked import DropoutAtTest, WrongGradient

    class NonFiniteForSome(nn.Module):
        """NaN logits for the brighter inputs (a third of the digits or so)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.model(x)
            bright = x.flatten(1).mean(1) > 0.32
            return torch.where(bright[:, None], torch.full_like(logits, math.nan), logits)

    class Probabilities(nn.Module):
        """Softmax on the logits."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x).softmax(-1)

    class Detached(nn.Module):
        """The input cut from the autograd graph: no input gradient at all."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x.detach())

    return {
        "dropout-at-test": DropoutAtTest,
        "wrong-gradient": WrongGradient,
        "non-finite": NonFiniteForSome,
        "probabilities": Probabilities,
        "detached": Detached,
    }


@cache
def _broken() -> dict[str, str]:
    from audit_helpers import audit_document, quick_config

    config = quick_config(num_samples=NUM_SAMPLES)
    return {
        name: json.dumps(audit_document("digits-mlp-dropout", config, model=wrapper))
        for name, wrapper in _wrappers().items()
    }


def broken(name: str) -> dict[str, Any]:
    """A fresh copy of a real audit (quick preset) of ``digits-mlp-dropout`` broken in a known
    way: ``dropout-at-test`` (a random classifier), ``wrong-gradient`` (a negated backward
    pass), ``non-finite`` (NaN logits for some inputs), ``probabilities`` (softmax outputs)
    or ``detached`` (no input gradient)."""
    return copy.deepcopy(json.loads(_broken()[name]))


BROKEN = ("dropout-at-test", "wrong-gradient", "non-finite", "probabilities", "detached")


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def numbers(text: str) -> list[float]:
    """Every number written in ``text``."""
    return [float(m) for m in NUMBER.findall(text)]


def close(shown: float, value: float, digits: int = 3) -> bool:
    """``shown`` is ``value`` rounded to ``digits`` decimals."""
    return math.isclose(shown, round(value, digits), abs_tol=10**-digits * 0.51)


class Page(HTMLParser):
    """A parsed report: every table's cells by id (a table inside a cell is a table of its
    own, and its text also belongs to the outer cell), the text, and a check that each
    element is closed in the order it was opened."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[str] = []  # the ids of the tables open, innermost last
        self._cells: list[list[str] | None] = []  # each open table's open cell
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            name = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[name] = []
            self._open.append(name)
            self._cells.append(None)
        elif tag == "tr" and self._open:
            self.tables[self._open[-1]].append([])
        elif tag in ("td", "th") and self._open:
            self._cells[-1] = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._open and self._cells[-1] is not None:
            cell = self._cells[-1]
            self.tables[self._open[-1]][-1].append(" ".join("".join(cell).split()))
            self._cells[-1] = None
        elif tag == "table" and self._open:
            self._open.pop()
            self._cells.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        for cell in self._cells:
            if cell is not None:
                cell.append(data)
