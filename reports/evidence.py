"""A red flag's evidence as a reader takes it in: sentences and small tables.

Every check of ``analysis.redflags`` stores the numbers behind its status as a JSON object
(its keys per check are written down there). :data:`RENDERERS` turns each check's object into
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
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reports import layout

__all__ = [
    "MAX_ROWS",
    "RENDERERS",
    "Block",
    "Rendered",
    "Table",
    "generic",
    "render",
]

MAX_ROWS = 8
"""Rows a table of runs shows; the rest are summarised in one sentence."""
_CONVENTIONS_SHOWN = 3
"""Input conventions that scored higher than the audit's own shown in a table (the best)."""
_CHUNK_CHARACTERS = 56
"""Width, in characters, of one table with epsilons as columns; wider series are split into
several such tables, which sit side by side where the page is wide enough."""
_LIST_SHOWN = 6
"""A list of at most this many values is written out; a longer one is summarised."""
_NORMS = {"linf": "L∞", "l2": "L2", "l1": "L1"}
_RUN_KEY = re.compile(r"^(?P<label>.+)/(?P<norm>[a-z0-9]+)/(?P<epsilon>[-+0-9.eE]+)$")


@dataclass(frozen=True)
class Table:
    """A small table of a finding's evidence.

    Attributes:
        corner: the header of the row-label column ("" for none).
        columns: the other columns' headers; empty for a headerless two-column table of
            names and values.
        rows: (row label, cells), one cell per column (one cell when ``columns`` is empty).
        caption: a title above the table ("" for none).
        by_column: each column is one record (epsilons as columns), which :meth:`text`
            reads column by column.
    """

    corner: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...]], ...]
    caption: str = ""
    by_column: bool = False

    @property
    def wraps(self) -> bool:
        """Whether its cells are text to wrap (a table of names and values, an error message)
        rather than numbers kept on one line."""
        return not self.columns or any(len(c) > 20 for _, cells in self.rows for c in cells)

    def text(self) -> str:
        """The table on one line: ``record: name value, name value; record: ...``."""
        if not self.columns:
            body = "; ".join(f"{label}: {cells[0]}" for label, cells in self.rows)
        elif self.by_column:
            corner = f"{self.corner} " if self.corner else ""
            body = "; ".join(
                f"{corner}{column}: "
                + ", ".join(f"{label} {cells[i]}" for label, cells in self.rows)
                for i, column in enumerate(self.columns)
            )
        else:
            body = "; ".join(
                f"{label}: "
                + ", ".join(f"{c} {v}" for c, v in zip(self.columns, cells, strict=True))
                for label, cells in self.rows
            )
        return f"{self.caption}: {body}" if self.caption else body


Block = str | Table
"""A sentence, or a small table."""


@dataclass(frozen=True)
class Rendered:
    """A finding's evidence, ready to show.

    Attributes:
        blocks: sentences and tables, in reading order.
        generic: True when (part of) the evidence was shown by :func:`generic` rather than by
            the check's own renderer: an unknown check, an unexpected shape or extra keys.
    """

    blocks: tuple[Block, ...]
    generic: bool

    def text(self) -> str:
        """All of it as plain text, for CSV and Markdown tables."""
        parts = [b if isinstance(b, str) else b.text() + "." for b in self.blocks]
        return " ".join(parts)


# --- formatting ------------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    """A JSON number (or the document's "NaN" and "Infinity" strings) as a float."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return None


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = _float(value)
    if number is None:
        return "n/a" if value is None else str(value)
    if not math.isfinite(number):
        return "non-finite"
    return f"{number:.{digits}g}"


def _percent(value: Any) -> str:
    number = _float(value)
    if number is None:
        return _number(value)
    if not math.isfinite(number):
        return "non-finite"
    return f"{100 * number:.1f} %"


def _p(value: Any) -> str:
    """A p-value: two significant digits (``1.1e-15``, ``0.5``, ``1``)."""
    return _number(value, 2)


def _epsilon(value: Any) -> str:
    number = _float(value)
    return _number(value) if number is None else f"{number:g}"


def _norm(name: str) -> str:
    return _NORMS.get(name, name)


def _listed(names: Sequence[str], limit: int = 5) -> str:
    """``a``, ``a and b``, ``a, b and c``; beyond ``limit``, ``a, b, ... and 7 more``."""
    names = [str(n) for n in names]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


@dataclass(frozen=True)
class _Run:
    """One entry of evidence keyed ``label/norm/epsilon``."""

    label: str
    norm: str
    epsilon: float
    record: Mapping[str, Any]

    def name(self, with_label: bool) -> str:
        where = f"{_norm(self.norm)} ε={self.epsilon:g}"
        return f"{self.label} {where}" if with_label else where


def _runs(evidence: Mapping[str, Any]) -> list[_Run]:
    """The evidence's entries keyed ``label/norm/epsilon``; ValueError for any other key."""
    runs = []
    for key, record in evidence.items():
        match = _RUN_KEY.match(key)
        if match is None or not isinstance(record, Mapping):
            raise ValueError(f"not a run key: {key!r}")
        runs.append(_Run(match["label"], match["norm"], float(match["epsilon"]), record))
    return runs


def _chunks(table: Table, budget: int = _CHUNK_CHARACTERS) -> list[Table]:
    """``table`` (records as columns) split into tables at most ``budget`` characters wide,
    of near-equal column counts, each repeating the row labels."""
    padding = layout.CELL_PADDING
    label = max([len(table.corner), *(len(label) for label, _ in table.rows)]) + padding
    widths = [
        max([len(column), *(len(cells[i]) for _, cells in table.rows)]) + padding
        for i, column in enumerate(table.columns)
    ]
    split = layout.parts(widths, ["series"] * len(widths), budget - label)
    return [
        Table(
            table.corner,
            tuple(table.columns[i] for i in part),
            tuple((label, tuple(cells[i] for i in part)) for label, cells in table.rows),
            table.caption if n == 0 or not table.caption else f"{table.caption}, continued",
            table.by_column,
        )
        for n, part in enumerate(split)
    ]


Row = tuple[str, tuple[str, ...]]


def _capped(
    rows: Sequence[Row],
    concern: Sequence[float],
    rest: Callable[[list[int]], str],
) -> tuple[list[Row], list[str]]:
    """At most :data:`MAX_ROWS` rows, the most concerning ones (largest ``concern``) kept in
    their order; the others are summarised by ``rest`` (given their indices) in a sentence."""
    if len(rows) <= MAX_ROWS:
        return list(rows), []
    order = sorted(range(len(rows)), key=lambda i: (-concern[i], i))
    kept = sorted(order[:MAX_ROWS])
    left = sorted(order[MAX_ROWS:])
    return [rows[i] for i in kept], [rest(left)]


# --- the checks ------------------------------------------------------------------------------

Renderer = Callable[[Mapping[str, Any]], list[Block]]
RENDERERS: dict[str, Renderer] = {}
"""One renderer per check code of ``analysis.redflags.CHECKS``."""
_READS: dict[str, frozenset[str]] = {}
"""The top-level keys each renderer reads, for checks whose evidence has fixed keys; any
other key (a later version's) is shown by :func:`generic` after the check's own text."""


def _renders(*codes: str, reads: Sequence[str] = ()) -> Callable[[Renderer], Renderer]:
    def register(function: Renderer) -> Renderer:
        for code in codes:
            RENDERERS[code] = function
            if reads:
                _READS[code] = frozenset(reads)
        return function

    return register


_PAIRED_DOER = {
    "one-step-beats-iterative": "the one-step attack",
    "black-box-beats-white-box": "the black-box attack",
    "random-search-beats-gradient": "random search",
    "targeted-beats-untargeted": "the targeted attack",
}


Metric = tuple[str, Callable[[Mapping[str, Any]], str]]


def _series(
    runs: list[_Run], metrics: Sequence[Metric], wide: Sequence[Metric] | None = None
) -> list[Block]:
    """Runs as tables: one row per run (``metrics`` as columns) when each attack and norm has
    at most two epsilons; else one table per attack and norm with the epsilons as columns and
    ``wide`` (default ``metrics``) as rows."""
    with_label = len({r.label for r in runs}) > 1
    groups: dict[tuple[str, str], list[_Run]] = {}
    for run in runs:
        groups.setdefault((run.label, run.norm), []).append(run)
    if max(len(group) for group in groups.values()) <= 2:
        rows = [(r.name(with_label), tuple(cell(r.record) for _, cell in metrics)) for r in runs]
        return [Table("", tuple(name for name, _ in metrics), tuple(rows))]
    blocks: list[Block] = []
    for (label, norm), group in groups.items():
        table = Table(
            f"{label} {_norm(norm)} ε" if with_label else f"{_norm(norm)} ε",
            tuple(f"{r.epsilon:g}" for r in group),
            tuple((name, tuple(cell(r.record) for r in group)) for name, cell in (wide or metrics)),
            by_column=True,
        )
        blocks += _chunks(table)
    return blocks


def _broke(record: Mapping[str, Any]) -> str:
    return f"{record['broken']} of {record['attempted']}"


@_renders(*_PAIRED_DOER)
def _paired(evidence: Mapping[str, Any]) -> list[Block]:
    """The pairwise checks: ``label/norm/eps`` → broken, attempted, rate, tolerated_rate,
    share_of_samples, material_share, p_value, robust_before, after."""
    runs = _runs(evidence)
    first = runs[0].record
    labels = _listed(sorted({r.label for r in runs}))
    afters = {tuple(r.record["after"]) for r in runs}
    after = _listed(list(runs[0].record["after"])) if len(afters) == 1 else "the attacks before it"
    tolerated = {r.record["tolerated_rate"] for r in runs}
    material = {r.record["material_share"] for r in runs}
    limits = (
        f"Tolerated: {_percent(first['tolerated_rate'])} of those samples; material: "
        f"{_percent(first['material_share'])} of all samples; "
        if len(tolerated) == len(material) == 1
        else ""
    )
    sentence = (
        f"What {labels} broke of the samples that {after} left robust. {limits}"
        "p: exact binomial test against the tolerated rate."
    )
    metrics: list[Metric] = [
        ("broke", _broke),
        ("rate", lambda r: _percent(r["rate"])),
        ("of all", lambda r: _percent(r["share_of_samples"])),
        ("p", lambda r: _p(r["p_value"])),
    ]
    if all(r.record["broken"] == 0 for r in runs) and len(runs) > 2:
        attempted = sorted(int(r.record["attempted"]) for r in runs)
        return [
            f"{labels} broke none of the samples that {after} left robust, under any of the "
            f"{len(runs)} norms and epsilons ({attempted[0]} to {attempted[-1]} samples left "
            "to it)."
        ]
    # With epsilons as columns, only what it broke of what was left to it, and p.
    wide: list[Metric] = [
        ("broke", lambda r: f"{r['broken']}/{r['attempted']}"),
        ("p", lambda r: _p(r["p_value"])),
    ]
    return [sentence, *_series(runs, metrics, wide)]


@_renders("margin-loss-beats-cross-entropy")
def _margin(evidence: Mapping[str, Any]) -> list[Block]:
    """``label/norm/eps`` → only_margin_loss, only_cross_entropy, share_of_samples,
    material_share, p_value, peer."""
    runs = _runs(evidence)
    pairs = sorted({f"{r.label} against {r.record['peer']}" for r in runs})
    sentence = (
        f"Samples only the margin loss broke, and only the cross-entropy (CE), with the same "
        f"budget on every clean-correct sample ({_listed(pairs)}); the excess as a share of "
        f"all samples (material from {_percent(runs[0].record['material_share'])}); p: exact "
        "McNemar test."
    )
    metrics: list[Metric] = [
        ("only margin", lambda r: str(r["only_margin_loss"])),
        ("only CE", lambda r: str(r["only_cross_entropy"])),
        ("excess", lambda r: _percent(r["share_of_samples"])),
        ("p", lambda r: _p(r["p_value"])),
    ]
    wide: list[Metric] = [
        ("margin/CE", lambda r: f"{r['only_margin_loss']}/{r['only_cross_entropy']}"),
        ("p", lambda r: _p(r["p_value"])),
    ]
    return [sentence, *_series(runs, metrics, wide)]


@_renders("unbounded-attack-below-100")
def _unbounded(evidence: Mapping[str, Any]) -> list[Block]:
    """``norm`` → epsilon, survived, samples, success_rate."""
    sentences = []
    for norm, row in evidence.items():
        sentences.append(
            f"{_norm(norm)} at ε = {_epsilon(row['epsilon'])}: "
            f"{row['survived']} of {_plural(row['samples'], 'sample')} survived "
            f"({_percent(row['success_rate'])} success)."
        )
    return [" ".join(sentences)]


@_renders("success-not-increasing-with-epsilon")
def _monotonic(evidence: Mapping[str, Any]) -> list[Block]:
    """``norm`` → epsilons, success_rate, samples, steps (from, to, lost, gained, p_value),
    plateau_below_90."""
    samples = sorted({row["samples"] for row in evidence.values()})
    blocks: list[Block] = [
        f"Attack success in the independent runs (a fresh attack per ε on "
        f"{' and '.join(map(str, samples))} samples); lost/gained: samples broken at the "
        "previous ε and not at this one, and the reverse; p: exact McNemar test of the drop."
    ]
    plateaus = []
    for norm, row in evidence.items():
        epsilons = list(row["epsilons"])
        steps = {float(s["to"]): s for s in row["steps"]}
        cells: dict[str, list[str]] = {"success": [], "lost/gained": [], "p": []}
        for epsilon, rate in zip(epsilons, row["success_rate"], strict=True):
            step = steps.get(float(epsilon))
            cells["success"].append(_percent(rate))
            cells["lost/gained"].append("–" if step is None else f"{step['lost']}/{step['gained']}")
            cells["p"].append("–" if step is None else _p(step["p_value"]))
        table = Table(
            f"{_norm(norm)} ε",
            tuple(_epsilon(e) for e in epsilons),
            tuple((name, tuple(values)) for name, values in cells.items()),
            by_column=True,
        )
        blocks += _chunks(table)
        if row["plateau_below_90"]:
            plateaus.append(_norm(norm))
    if plateaus:
        blocks.append(
            f"Under {_listed(plateaus)} success stalls below 90 % at the largest bounded ε."
        )
    return blocks


@_renders(
    "vanishing-gradients",
    reads=(
        "input_gradient_exists",
        "reason",
        "zero_fraction",
        "clean_zero_fraction",
        "clean_vanishing_fraction",
        "clean_measured",
        "attack_zero_fraction",
        "vanishing_fraction",
        "threshold",
        "measured",
        "error",
    ),
)
def _vanishing(evidence: Mapping[str, Any]) -> list[Block]:
    """input_gradient_exists, and either reason or zero_fraction, clean_zero_fraction,
    attack_zero_fraction, vanishing_fraction, threshold, measured; since schema 1.7 also
    clean_vanishing_fraction and clean_measured. The clean gradients and the attacks' first
    gradients are two populations, each described on its own. With error (the model raised
    when its input required grad), nothing was measured."""
    if evidence.get("error"):
        return [
            f"The input gradient was not measured: the model raised {evidence['error']} when its "
            "input requires grad."
        ]
    if not evidence["input_gradient_exists"]:
        return [f"The input gradient does not exist: {evidence['reason']}."]
    threshold = _number(evidence["threshold"])
    clean = f"{_percent(evidence['clean_zero_fraction'])} of the clean input gradients"
    if evidence.get("clean_measured") is not None:
        clean += f" ({_plural(evidence['clean_measured'], 'sample')})"
    clean += " are exactly zero"
    if evidence.get("clean_vanishing_fraction") is not None:
        clean += f" and {_percent(evidence['clean_vanishing_fraction'])} below {threshold}"
    return [
        f"{clean[0].upper()}{clean[1:]}.",
        f"Of the attacks' first input gradients ({_plural(evidence['measured'], 'gradient')} "
        f"measured), {_percent(evidence['attack_zero_fraction'])} are exactly zero and "
        f"{_percent(evidence['vanishing_fraction'])} below {threshold}.",
    ]


@_renders(
    "low-clean-accuracy",
    reads=(
        "clean_accuracy",
        "correct",
        "samples",
        "num_classes",
        "chance",
        "chance_p_value",
        "recorded_clean_accuracy",
        "recorded_p_value",
        "recorded_shortfall",
        "conventions",
        "convention_alpha",
        "conventions_not_run",
    ),
)
def _clean_accuracy(evidence: Mapping[str, Any]) -> list[Block]:
    """clean_accuracy, correct, samples; num_classes, chance, chance_p_value when the number
    of classes is known; recorded_clean_accuracy (None when the file records none) with
    recorded_p_value and recorded_shortfall; conventions (each with flag, approximate,
    accuracy, only_this, only_current, p_value) and convention_alpha when any was tried;
    conventions_not_run (name: the model's error)."""
    blocks: list[Block] = [
        f"Clean accuracy {_number(evidence['clean_accuracy'])} ({evidence['correct']} of "
        f"{_plural(evidence['samples'], 'sample')})."
    ]
    if "chance" in evidence:
        blocks.append(
            f"Chance for {evidence['num_classes']} classes is {_number(evidence['chance'])}; "
            f"guessing scores this well with p = {_p(evidence['chance_p_value'])} (exact "
            "binomial test)."
        )
    recorded = evidence.get("recorded_clean_accuracy")
    if recorded is not None:
        shortfall = _float(evidence["recorded_shortfall"]) or 0.0
        gap = f"{_number(shortfall)} more than here" if shortfall > 0 else "no more than here"
        blocks.append(
            f"The checkpoint records {_number(recorded)} from its training, {gap}; a model of "
            f"that accuracy scores this little or less with p = "
            f"{_p(evidence['recorded_p_value'])} (exact binomial test)."
        )
    tried = evidence.get("conventions") or {}
    if tried:
        own = _float(evidence["clean_accuracy"]) or 0.0
        ranked = sorted(tried, key=lambda name: -float(tried[name]["accuracy"]))
        better = [name for name in ranked if float(tried[name]["accuracy"]) > own]
        best = ranked[0]
        blocks.append(
            f"The same images presented in {_plural(len(tried), 'other input convention')} "
            f"(each against the audit's own by an exact McNemar test at α = "
            f"{_p(evidence['convention_alpha'])}, 0.01 shared among them): "
            + (
                f"{len(better)} scored higher."
                if better
                else f"none scored higher; the best, {best}, scored "
                f"{_number(tried[best]['accuracy'])}."
            )
        )
        if better:
            shown = better[:_CONVENTIONS_SHOWN]
            blocks.append(
                Table(
                    "presented as",
                    ("accuracy", "gained", "lost", "p", "flag"),
                    tuple(
                        (
                            name,
                            (
                                _number(tried[name]["accuracy"]),
                                str(tried[name]["only_this"]),
                                str(tried[name]["only_current"]),
                                _p(tried[name]["p_value"]),
                                tried[name]["flag"] or "none",
                            ),
                        )
                        for name in shown
                    ),
                )
            )
            if len(better) > len(shown):
                blocks.append(
                    f"{_plural(len(better) - len(shown), 'more convention')} scored higher, "
                    f"at most {_number(tried[better[len(shown)]]['accuracy'])}."
                )
    refused = evidence.get("conventions_not_run") or {}
    if refused:
        blocks.append(f"Not tried, the model raised on its inputs: {_listed(list(refused))}.")
    return blocks


def _hits(record: Mapping[str, Any]) -> str:
    epsilons, samples = list(record["epsilons"]), [int(s) for s in record["samples"]]
    hit = [(e, s) for e, s in zip(epsilons, samples, strict=True) if s]
    if not hit:
        return "0"
    if len(epsilons) == 1:
        return str(samples[0])
    if len(hit) <= 2:
        return ", ".join(f"{s} at ε={_epsilon(e)}" for e, s in hit)
    return f"up to {max(samples)}, at {len(hit)} of {len(epsilons)} ε"


_NONFINITE_COUNTS = (
    "clean_logits",
    "clean_gradients",
    "clean_samples",
    "attack_samples",
    "attack_logits",
    "attack_gradients",
)


@_renders("non-finite-values", reads=(*_NONFINITE_COUNTS, "attacks"))
def _nonfinite(evidence: Mapping[str, Any]) -> list[Block]:
    """clean_logits, clean_gradients, clean_samples, attack_samples, attack_logits,
    attack_gradients, attacks (``label/norm[ (stage)]`` → epsilons, samples, evaluations)."""
    counts = [evidence[key] for key in _NONFINITE_COUNTS]
    attacks: Mapping[str, Mapping[str, Any]] = evidence["attacks"]
    if not any(counts) and not attacks:
        return ["No NaN or Inf anywhere: every clean and attacked logit and gradient was finite."]
    blocks: list[Block] = [
        f"Clean: {_plural(evidence['clean_logits'], 'sample')} with NaN or Inf logits in the "
        f"probes' pass and {evidence['clean_samples']} in the suite's, "
        f"{evidence['clean_gradients']} with non-finite input gradients. Under attack: "
        f"{_plural(evidence['attack_samples'], 'sample')} whose "
        f"example had non-finite logits, {evidence['attack_logits']} non-finite sample "
        f"evaluations, {evidence['attack_gradients']} non-finite input gradients."
    ]
    if attacks:
        rows = []
        for key, record in attacks.items():
            label, _, rest = key.partition("/")
            norm, _, stage = rest.partition(" ")
            rows.append(
                (
                    f"{label} {_norm(norm)}{' ' + stage if stage else ''}",
                    (_hits(record), str(record["evaluations"])),
                )
            )
        concern = [float(sum(r["samples"]) + r["evaluations"]) for r in attacks.values()]
        kept, summary = _capped(
            rows, concern, lambda left: f"{_plural(len(left), 'other attack')} not shown."
        )
        blocks.append(Table("attack", ("samples", "evaluations"), tuple(kept)))
        blocks += summary
    return blocks


@_renders(
    "gradient-disagrees-with-finite-differences",
    reads=(
        "reason",
        "disagreeing",
        "pairs",
        "disagreement_fraction",
        "tolerated_rate",
        "material_rate",
        "p_value",
        "steps",
        "step_disagreement",
        "tolerance",
        "precision",
        "nonfinite_pairs",
        "median_ratio",
    ),
)
def _finite_differences(evidence: Mapping[str, Any]) -> list[Block]:
    """reason (not measured), or disagreeing, pairs, disagreement_fraction, tolerated_rate,
    material_rate, p_value, steps, step_disagreement, tolerance, precision, nonfinite_pairs,
    median_ratio."""
    if set(evidence) == {"reason"}:
        return [f"Not measured: {evidence['reason']}."]
    blocks: list[Block] = [
        f"{evidence['disagreeing']} of {_plural(evidence['pairs'], 'sample-direction pair')} "
        f"({_percent(evidence['disagreement_fraction'])}) disagree by more than "
        f"{_percent(evidence['tolerance'])} with the finite differences at every step, in "
        f"{evidence['precision']}; tolerated {_percent(evidence['tolerated_rate'])}, material "
        f"from {_percent(evidence['material_rate'])} (exact binomial test, p = "
        f"{_p(evidence['p_value'])})."
    ]
    extra = []
    if evidence["nonfinite_pairs"]:
        extra.append(f"{_plural(evidence['nonfinite_pairs'], 'pair')} had non-finite values.")
    if evidence["median_ratio"] is not None:
        extra.append(
            f"The finite difference is {_number(evidence['median_ratio'])} times the "
            "gradient's directional derivative (median)."
        )
    table = Table(
        "step",
        tuple(_epsilon(h) for h in evidence["steps"]),
        (("disagree", tuple(_percent(v) for v in evidence["step_disagreement"])),),
        by_column=True,
    )
    return [*blocks, *_chunks(table), *extra]


@_renders(
    "stochastic-model",
    reads=(
        "max_repeat_difference",
        "repeat_samples",
        "num_repeats",
        "prediction_flips",
        "prediction_flip_fraction",
        "eot_samples",
    ),
)
def _stochastic(evidence: Mapping[str, Any]) -> list[Block]:
    """max_repeat_difference, repeat_samples, num_repeats, prediction_flips,
    prediction_flip_fraction, eot_samples."""
    eot = evidence["eot_samples"]
    return [
        f"{evidence['num_repeats']} forward passes of "
        f"{_plural(evidence['repeat_samples'], 'sample')}: largest logit change "
        f"{_number(evidence['max_repeat_difference'])}, "
        f"{_plural(evidence['prediction_flips'], 'prediction')} flipped "
        f"({_percent(evidence['prediction_flip_fraction'])}). Gradients averaged over "
        + (f"{eot} passes (EOT)." if eot != 1 else "1 pass (no EOT).")
    ]


@_renders(
    "batch-dependent-outputs",
    reads=(
        "composition",
        "batch_size",
        "samples",
        "max_relative_difference",
        "tolerance",
        "differing",
        "prediction_flips",
        "grouped",
        "compared",
        "chance",
        "p_value",
    ),
)
def _batch(evidence: Mapping[str, Any]) -> list[Block]:
    """composition, batch_size, samples, max_relative_difference, tolerance, differing,
    prediction_flips; for a stochastic model also grouped, compared, chance, p_value."""
    apart = "alone" if evidence["composition"] == "single" else "in pairs"
    blocks: list[Block] = [
        f"{_plural(evidence['samples'], 'sample')} evaluated in a batch of "
        f"{evidence['batch_size']} and {apart}: {evidence['differing']} changed by more than "
        f"{_number(evidence['tolerance'])} of the row's largest logit (largest change "
        f"{_number(evidence['max_relative_difference'])}), "
        f"{_plural(evidence['prediction_flips'], 'prediction')} flipped."
    ]
    if "grouped" in evidence:
        blocks.append(
            f"Repeated passes: {evidence['grouped']} of {evidence['compared']} samples' passes "
            f"pair up by composition (chance: {_percent(evidence['chance'])}; exact binomial "
            f"test, p = {_p(evidence['p_value'])})."
        )
    return blocks


@_renders("model-in-train-mode", reads=("modules",))
def _train_mode(evidence: Mapping[str, Any]) -> list[Block]:
    """modules."""
    modules = list(evidence["modules"])
    if not modules:
        return ["No module is in training mode after eval()."]
    return [f"In training mode after eval(): {_listed(modules)}."]


@_renders("probability-outputs", reads=("probability_outputs",))
def _probabilities(evidence: Mapping[str, Any]) -> list[Block]:
    """probability_outputs."""
    if evidence["probability_outputs"]:
        return ["The outputs are probabilities: rows in [0, 1] that sum to 1."]
    return ["The outputs are logits, not rows of probabilities."]


def _late(value: Any) -> str:
    return "unknown" if value is None else str(value)


@_renders("attack-not-converged")
def _not_converged(evidence: Mapping[str, Any]) -> list[Block]:
    """``label/norm/eps`` → robust_samples, total_rise, last_10pct_rise, broken_in_last_10pct,
    attacked."""
    runs = _runs(evidence)
    rows = [
        (
            run.name(True),
            (
                f"{run.record['robust_samples']} of {run.record['attacked']}",
                _number(run.record["total_rise"]),
                _number(run.record["last_10pct_rise"]),
                _late(run.record["broken_in_last_10pct"]),
            ),
        )
        for run in runs
    ]
    concern = [
        (run.record["broken_in_last_10pct"] or 0) * 1e6
        + (_float(run.record["last_10pct_rise"]) or 0)
        for run in runs
    ]

    def rest(left: list[int]) -> str:
        rises = [_float(runs[i].record["last_10pct_rise"]) or 0.0 for i in left]
        late = [runs[i].record["broken_in_last_10pct"] or 0 for i in left]
        broken = f"at most {max(late)}" if max(late) else "no"
        return (
            f"{_plural(len(left), 'other run')} not shown: loss rise in the last 10 % at most "
            f"{_number(max(rises))}, {broken} samples broken there."
        )

    kept, summary = _capped(rows, concern, rest)
    return [
        "The mean loss of the samples each attack left robust: its rise over all steps and "
        "over the last 10 % of them, and the samples the attack broke in those last steps.",
        Table("", ("left robust", "rise", "last 10 %", "broken late"), tuple(kept)),
        *summary,
    ]


@_renders("silent-success", reads=("samples", "total", "early_stopped"))
def _silent(evidence: Mapping[str, Any]) -> list[Block]:
    """samples (``label/norm/main|independent`` → silent, attacked), total, and (schema 1.7)
    early_stopped: the runs that stopped each sample at its first success."""
    samples: Mapping[str, Mapping[str, Any]] = evidence["samples"]

    def name_of(key: str) -> str:
        label, norm, where = key.split("/")
        stage = " (independent sweep)" if where == "independent" else ""
        return f"{label} {_norm(norm)}{stage}"

    named = [(name_of(key), record) for key, record in samples.items()]
    # Schema 1.7 on: runs that stop a sample at its first success cannot show one.
    early = [name_of(key) for key in evidence.get("early_stopped", ())]
    unseen = (
        f" Not observable in {_plural(len(early), 'run')} that stopped each sample at its "
        f"first success: {_listed(early)}."
        if early
        else ""
    )
    hit = [(name, r) for name, r in named if r["silent"]]
    if not named:
        return [f"No run showed its last iterate after a success.{unseen}"]
    if not hit:
        return [
            f"No intermediate iterate fooled a sample that the last iterate did not, in "
            f"{_plural(len(named), 'iterative run')}.{unseen}"
        ]
    head = (
        f"{_plural(evidence['total'], 'sample')} in all were fooled by an intermediate iterate "
        f"and not by the last one"
    )
    if len(hit) <= 4:
        listed = "; ".join(f"{name}: {r['silent']} of {r['attacked']} attacked" for name, r in hit)
        others = len(named) - len(hit)
        tail = f"; none in the {_plural(others, 'other run')}" if others else ""
        return [f"{head}: {listed}{tail}.{unseen}"]
    rows = [(name, (f"{r['silent']} of {r['attacked']}",)) for name, r in hit]
    kept, summary = _capped(
        rows,
        [float(r["silent"]) for _, r in hit],
        lambda left: f"{_plural(len(left), 'other run')} with fewer not shown.",
    )
    return [
        f"{head}:",
        Table("run", ("silent",), tuple(kept)),
        *summary,
        *([unseen.strip()] if unseen else []),
    ]


def _stage_run(row: Mapping[str, Any]) -> str:
    """``pgd-ce L∞ ε=0.1``, with the stage when it is not the attack itself (``(sweep)``)."""
    where = f"{row['attack']} {_norm(row['norm'])}"
    if row["epsilon"] is not None:
        where += f" ε={_epsilon(row['epsilon'])}"
    return where if row["stage"] == "attack" else f"{where} ({row['stage']})"


@_renders("attack-failed", reads=("failed", "not_applicable"))
def _attack_failed(evidence: Mapping[str, Any]) -> list[Block]:
    """failed, not_applicable: lists of runs (norm, stage, attack, epsilon, message)."""
    failed, inapplicable = list(evidence["failed"]), list(evidence["not_applicable"])
    if not failed and not inapplicable:
        return ["Every attack of the suite ran at every norm and epsilon."]
    groups: dict[tuple[str, str], list[str]] = {}
    for what, rows in (("failed", failed), ("could not run", inapplicable)):
        for row in rows:
            groups.setdefault((what, str(row["message"])), []).append(_stage_run(row))
    rows_shown = [(what, (_listed(runs), message)) for (what, message), runs in groups.items()]
    kept, summary = _capped(
        rows_shown,
        [1.0 if what == "failed" else 0.0 for what, _ in groups],
        lambda left: f"{_plural(len(left), 'other error')} not shown.",
    )
    said = []
    if failed:
        said.append(
            f"{_plural(len(failed), 'run')} failed and broke nothing: the samples they would "
            "have attacked count as robust."
        )
    if inapplicable:
        said.append(
            f"{_plural(len(inapplicable), 'run')} could not run: the worst case is over the "
            "attacks that ran."
        )
    sentence = " ".join(said)
    return [sentence, Table("", ("runs", "error"), tuple(kept)), *summary]


# --- the fallback ----------------------------------------------------------------------------

_WORDS = {
    "pct": "%",
    "p value": "p",
    "num": "number of",
    "eps": "ε",
    "epsilon": "ε",
    "epsilons": "ε",
}


def _humanise(key: str) -> str:
    """``last_10pct_rise`` → ``last 10 % rise``; ``p_value`` → ``p``; a run key
    ``pgd-t/linf/0.1`` → ``pgd-t L∞ ε=0.1``."""
    match = _RUN_KEY.match(key)
    if match is not None:
        return f"{match['label']} {_norm(match['norm'])} ε={float(match['epsilon']):g}"
    if key in _NORMS:
        return _NORMS[key]
    text = re.sub(r"(\d+)pct", r"\1 %", key.replace("_", " ").strip())
    for word, replacement in _WORDS.items():
        text = re.sub(rf"\b{re.escape(word)}\b", replacement, text)
    if len(text) <= 1:  # a symbol (p, ε) keeps its case
        return text or key
    return text[:1].upper() + text[1:]


_SHARE = re.compile(r"(fraction|rate|share|accuracy)$")


def _value(key: str, value: Any) -> str:
    """One value, read by its key: shares as percentages, p-values with two digits, lists
    written out or summarised, nested objects inline."""
    if isinstance(value, Mapping):
        return "; ".join(f"{_humanise(k)} {_value(k, v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return _sequence(key, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if _SHARE.search(key) and 0 <= value <= 1:
            return _percent(value)
        if key.endswith("p_value"):
            return _p(value)
    return _number(value, 4)


def _sequence(key: str, values: Sequence[Any]) -> str:
    if not values:
        return "none"
    if len(values) <= _LIST_SHOWN:
        return ", ".join(_value(key, v) for v in values)
    numbers = [_float(v) for v in values]
    if all(n is not None for n in numbers):
        finite = [n for n in numbers if n is not None and math.isfinite(n)]
        if finite:
            low, high = min(finite), max(finite)
            return f"{len(values)} values from {_value(key, low)} to {_value(key, high)}"
    shown = ", ".join(_value(key, v) for v in values[:3])
    return f"{len(values)} items: {shown}, …"


def _records(items: Sequence[tuple[str, Mapping[str, Any]]], caption: str) -> list[Block]:
    """Records of scalars as a row table: one row per record, one column per key."""
    keys: list[str] = []
    for _, record in items:
        keys += [k for k in record if k not in keys]
    rows = [(label, tuple(_value(k, r.get(k)) for k in keys)) for label, r in items]
    kept, summary = _capped(
        rows, [0.0] * len(rows), lambda left: f"{_plural(len(left), 'more row')} not shown."
    )
    return [Table("", tuple(_humanise(k) for k in keys), tuple(kept), caption), *summary]


def _is_records(value: Any) -> bool:
    """A non-empty list or object of objects, each holding at least one scalar or list."""
    items = list(value.values()) if isinstance(value, Mapping) else value
    return (
        isinstance(value, Mapping | list | tuple)
        and bool(items)
        and all(isinstance(item, Mapping) for item in items)
        and all(any(not isinstance(v, Mapping) for v in item.values()) for item in items)
    )


def generic(evidence: Any) -> list[Block]:
    """Any evidence, readably: its plain values as a two-column table of humanised names and
    values, each list or object of records as a row table (capped at :data:`MAX_ROWS`)."""
    if not isinstance(evidence, Mapping):
        return [_value("", evidence)] if evidence not in (None, "", [], {}) else []
    if _is_records(evidence):  # one record per run, norm, ...
        return _records([(_humanise(k), v) for k, v in evidence.items()], "")
    plain: list[tuple[str, tuple[str, ...]]] = []
    blocks: list[Block] = []
    for key, value in evidence.items():
        if _is_records(value):
            items = (
                [(_humanise(k), v) for k, v in value.items()]
                if isinstance(value, Mapping)
                else [(str(i + 1), v) for i, v in enumerate(value)]
            )
            blocks += _records(items, _humanise(key))
        else:
            plain.append((_humanise(key), (_value(key, value),)))
    if plain:
        blocks.insert(0, Table("", (), tuple(plain)))
    return blocks


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
        reads = _READS.get(code)
        extra = {k: v for k, v in evidence.items() if reads is not None and k not in reads}
        return Rendered(tuple(blocks + generic(extra)), bool(extra))
    return Rendered(tuple(generic(evidence)), True)
