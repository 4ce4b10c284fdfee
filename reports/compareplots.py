"""The comparison's figures: robustness curves overlaid, and flatness against robust
accuracy, as inline SVG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from core.document import NormResult, Sweep
from reports import plots
from reports.cells import NORM_NAMES
from reports.compared import (
    FAR_MARK,
    Entry,
    far_above,
    find_norm_section,
    pgd_ce,
    present_norms,
)

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
    section = find_norm_section(entry, norm)
    return section.sweep if section else None


def _sweep_attack(items: Sequence[Entry], norm: str) -> str:
    return "/".join(sorted({s.attack for e in items if (s := _sweep(e, norm)) is not None}))


def curves_svg(items: Sequence[Entry]) -> str | None:
    """Robust accuracy against epsilon (the nested sweep), one panel per norm, one line per
    checkpoint with its 95 % band, as an inline ``<svg>``; None without sweeps."""
    norms = [n for n in present_norms(items) if any(_sweep(e, n) for e in items)]
    if not norms:
        return None
    import matplotlib

    with matplotlib.rc_context({**plots.STYLE, "text.parse_math": False}):
        figure, axes = _figure(1, len(norms), 5.0 * len(norms) + 2.6, 3.6)
        for axis, norm in zip(axes[0], norms, strict=True):
            for entry in items:
                section, sweep = find_norm_section(entry, norm), _sweep(entry, norm)
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
    norms = present_norms(measured)
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
                    section = find_norm_section(entry, norm)
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
