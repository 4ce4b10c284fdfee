"""The report's plots as inline SVG strings, drawn by matplotlib from an :class:`AuditResult`.

Every function returns one ``<svg>`` element (no XML prolog) that carries its alt text as
``<title>`` and ``aria-label``, or None when the document has nothing to draw. The output is
byte-identical across renders: the Agg backend, no date in the metadata, text kept as text
(``svg.fonttype: none``) and element ids salted with the figure's name, so that two figures of
one page never share an id. Nothing is told by colour alone: lines differ by style and marker,
bars by hatching.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from html import escape
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from core.document import AuditResult, Example, NormResult, Sweep  # noqa: E402
from reports.diagnosis import UNDERFLOW_MARGIN  # noqa: E402
from reports.tables import alone_accuracy, new_breaks, norm_label  # noqa: E402

__all__ = [
    "STYLE",
    "examples_plot",
    "landscape_1d_plot",
    "landscape_2d_plot",
    "loss_trace_plot",
    "robustness_curves",
    "spectral_density_plot",
    "svg",
    "who_broke_what_plot",
    "clean_distribution_plot",
]

STYLE: dict[Any, Any] = {
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "DejaVu Sans",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 72,
}
"""matplotlib settings of every report plot (the comparison uses them too)."""

_LINESTYLES = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
_HATCHES = ["", "//", "..", "xx", "\\\\", "--"]
# matplotlib's tab10, fixed here so that a style change elsewhere cannot move a report's bytes.
_COLOURS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
_SVG_START = re.compile(r"<svg\b")
_ID = re.compile(r'\bid="([^"]+)"')
_ID_OR_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def _prefix_ids(text: str, name: str) -> str:
    """Prefix every element id (and each reference to it) with ``name``: matplotlib numbers
    some ids per figure (``axes_1``, ``patch_1``), which would repeat across one page."""
    ids = set(_ID.findall(text))
    return _ID_OR_REFERENCE.sub(lambda m: f"{m[1]}{name}-{m[2]}" if m[2] in ids else m[0], text)


def svg(figure: Figure, name: str, alt: str) -> str:
    """``figure`` as an inline ``<svg>`` element with ``alt`` as its accessible name; closes
    the figure.

    Args:
        name: unique within a page; salts the element ids.
        alt: what the plot shows, in words.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    text = _prefix_ids(text[text.index("<svg") :], name)
    label = escape(alt, quote=True)
    return _SVG_START.sub(f'<svg role="img" aria-label="{label}"', text, count=1).replace(
        ">", f"><title>{label}</title>", 1
    )


def _figure(panels: int, height: float = 3.0, width: float = 4.2) -> tuple[Figure, list[Any]]:
    with matplotlib.rc_context(STYLE):
        figure, axes = plt.subplots(
            1, panels, figsize=(width * panels, height), squeeze=False, layout="constrained"
        )
    return figure, list(axes[0])


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# --- robustness ------------------------------------------------------------------------------


def _sweep_curve(axis: Any, sweep: Sweep, unbounded: float | None, style: int, name: str) -> str:
    """Plot 1 - success rate of a sweep (bounded epsilons) with its Wilson band."""
    points = [
        (e, r) for e, r in zip(sweep.epsilons, sweep.success_rate, strict=True) if e != unbounded
    ]
    if not points:
        return ""
    x = [e for e, _ in points]
    accuracy = _finite([None if r.value is None else 1 - r.value for _, r in points])
    low = [1 - r.wilson_95[1] for _, r in points]
    high = [1 - r.wilson_95[0] for _, r in points]
    colour = _COLOURS[style]
    samples = sweep.success_rate[0].total
    axis.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
    axis.plot(
        x,
        accuracy,
        linestyle=_LINESTYLES[style],
        marker=_MARKERS[style],
        color=colour,
        label=f"{sweep.attack}, {name} ({samples} samples)",
    )
    return (
        f"{sweep.attack} {name} sweep from {accuracy[0]:.3f} at ε={x[0]:g} to "
        f"{accuracy[-1]:.3f} at ε={x[-1]:g}"
    )


def robustness_curves(result: AuditResult) -> str | None:
    """Accuracy against epsilon, one panel per norm: the nested sweep (solid, circles) and the
    independent per-epsilon sweep (dashed, squares) with 95 % Wilson bands, and the accuracy
    after each attack at the suite's epsilons (markers)."""
    sections = [s for s in result.robustness.norms if s.sweep or s.independent_sweep]
    if not sections:
        return None
    figure, axes = _figure(len(sections))
    described = []
    for axis, section in zip(axes, sections, strict=True):
        parts = []
        for style, (sweep, name) in enumerate(
            ((section.sweep, "nested"), (section.independent_sweep, "independent"))
        ):
            if sweep is not None:
                parts.append(_sweep_curve(axis, sweep, section.unbounded_epsilon, style, name))
        for i, record in enumerate(section.attacks):
            alone = []
            for k, epsilon in enumerate(section.epsilons):
                share = alone_accuracy(result, record, k)
                if share is not None and share.value is not None:
                    alone.append((epsilon, share.value))
            if alone:
                axis.plot(
                    [e for e, _ in alone],
                    [v for _, v in alone],
                    marker=_MARKERS[(i + 2) % len(_MARKERS)],
                    markerfacecolor="none",
                    markersize=8,
                    linestyle="none",
                    color=_COLOURS[(i + 2) % len(_COLOURS)],
                    label=f"{record.label} alone",
                )
                parts.append(f"{record.label} alone {alone[0][1]:.3f} at ε={alone[0][0]:g}")
        for k, epsilon in enumerate(section.epsilons):
            reliable = section.reliable_robust_accuracy[k]
            if reliable.value is not None:
                axis.errorbar(
                    [epsilon],
                    [reliable.value],
                    yerr=[
                        [reliable.value - reliable.wilson_95[0]],
                        [reliable.wilson_95[1] - reliable.value],
                    ],
                    marker="*",
                    markersize=11,
                    color="black",
                    linestyle="none",
                    capsize=3,
                    label="reliable (all attacks)" if k == 0 else None,
                )
                parts.append(f"reliable {reliable.value:.3f} at ε={epsilon:g}")
        axis.set_title(norm_label(section.norm))
        axis.set_xlabel("ε")
        axis.set_ylabel("accuracy")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(fontsize=7, loc="upper right")
        described.append(f"{norm_label(section.norm)}: " + "; ".join(p for p in parts if p))
    alt = "Robust accuracy against epsilon. " + ". ".join(described)
    return svg(figure, "robustness-curves", alt)


def who_broke_what_plot(result: AuditResult) -> str | None:
    """Horizontal bars per norm: how many samples each attack broke that all earlier attacks
    missed, one hatched bar per epsilon."""
    sections = list(result.robustness.norms)
    if not sections:
        return None
    height = 0.6 + 0.35 * max(len(s.attacks) for s in sections)
    figure, axes = _figure(len(sections), height=max(2.2, height))
    described = []
    for axis, section in zip(axes, sections, strict=True):
        labels = [a.label for a in section.attacks]
        width = 0.8 / len(section.epsilons)
        for k, epsilon in enumerate(section.epsilons):
            counts = new_breaks(result, section, k)
            positions = np.arange(len(labels)) + k * width
            bars = axis.barh(
                positions,
                [counts[label] for label in labels],
                height=width,
                color=_COLOURS[k % len(_COLOURS)],
                hatch=_HATCHES[k % len(_HATCHES)],
                edgecolor="black",
                linewidth=0.5,
                label=f"ε={epsilon:g}",
            )
            axis.bar_label(bars, fontsize=7, padding=2)
            described.append(
                f"{norm_label(section.norm, epsilon)}: "
                + ", ".join(f"{label} {counts[label]}" for label in labels)
            )
        axis.set_yticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
        axis.invert_yaxis()
        axis.set_title(norm_label(section.norm))
        axis.set_xlabel("samples newly broken")
        if len(section.epsilons) > 1:
            axis.legend(fontsize=7)
    alt = "Samples each attack broke that all earlier attacks missed. " + "; ".join(described)
    return svg(figure, "who-broke-what", alt)


def loss_trace_plot(result: AuditResult) -> str | None:
    """Mean loss per iteration of each iterative attack, one panel per norm (at the suite's
    first epsilon), each attack in its own line style and marker."""
    panels = []
    for section in result.robustness.norms:
        traces = [
            (record.label, (record.params or {}).get("loss"), _finite(record.mean_loss_trace[0]))
            for record in section.attacks
            if record.mean_loss_trace and len(record.mean_loss_trace[0]) > 2
        ]
        traces = [t for t in traces if np.isfinite(t[2]).any()]
        if traces:
            panels.append((section, traces))
    if not panels:
        return None
    figure, axes = _figure(len(panels))
    described = []
    for axis, (section, traces) in zip(axes, panels, strict=True):
        for i, (label, loss, trace) in enumerate(traces):
            axis.plot(
                np.arange(len(trace)),
                trace,
                linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                marker=_MARKERS[i % len(_MARKERS)],
                markevery=max(1, len(trace) // 8),
                color=_COLOURS[i % len(_COLOURS)],
                label=f"{label} ({loss or 'loss'})",
            )
            finite = trace[np.isfinite(trace)]
            described.append(
                f"{label} under {norm_label(section.norm)} from {finite[0]:.3g} to {finite[-1]:.3g}"
            )
        axis.set_title(norm_label(section.norm, section.epsilons[0]))
        axis.set_xlabel("iteration")
        axis.set_ylabel("mean loss of the attacked samples")
        axis.legend(fontsize=7)
    alt = "Mean attack loss per iteration: " + "; ".join(described)
    return svg(figure, "loss-trace", alt)


# --- diagnosis -------------------------------------------------------------------------------


def _log_histogram(axis: Any, positive: np.ndarray, zeros: int, zero_label: str) -> None:
    """Histogram of log10 of ``positive``, with the ``zeros`` left out drawn as a hatched bar
    of their own at the left, labelled ``zero_label``."""
    logs = np.log10(positive)
    low, high = (float(logs.min()), float(logs.max())) if logs.size else (-1.0, 1.0)
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    bins = np.linspace(low, high, 31)
    width = bins[1] - bins[0]
    axis.hist(logs, bins=bins, color=_COLOURS[0], edgecolor="white", linewidth=0.3)
    ticks = list(range(math.ceil(low), math.floor(high) + 1))
    if len(ticks) > 8:
        ticks = ticks[:: math.ceil(len(ticks) / 8)]
    labels = [f"1e{t}" for t in ticks]
    if zeros:
        at = low - 3 * width
        axis.bar(at, zeros, width=2 * width, color="white", edgecolor="black", hatch="//")
        ticks, labels = [at, *ticks], [zero_label, *labels]
    axis.set_xticks(ticks, labels)


def clean_distribution_plot(result: AuditResult) -> str | None:
    """Histograms of the clean logit margins and of the clean cross-entropy input-gradient
    norms (log scale; exact zeros and misclassified samples as a hatched bar of their own);
    None when the document carries neither (schema before 1.3)."""
    probes = result.probes
    if probes is None:
        return None
    panels = [
        (kind, values[np.isfinite(values)])
        for kind, values in (
            ("margins", _finite(probes.clean_margins or ())),
            ("norms", _finite(probes.clean_gradient_norms or ())),
        )
    ]
    panels = [(kind, values) for kind, values in panels if values.size]
    if not panels:
        return None
    figure, axes = _figure(len(panels))
    described = []
    for axis, (kind, values) in zip(axes, panels, strict=True):
        total = len(values)
        if kind == "margins":
            wrong = int((values <= 0).sum())
            positive = values[values > 0]
            _log_histogram(axis, positive, wrong, "≤ 0")
            axis.axvline(math.log10(UNDERFLOW_MARGIN), color="black", linestyle=":")
            beyond = int((values > UNDERFLOW_MARGIN).sum())
            axis.set_title("clean logit margins (dotted: float32 softmax saturates)")
            axis.set_xlabel("true-class logit minus the largest other")
            median = f"{float(np.median(positive)):.3g}" if positive.size else "none"
            described.append(
                f"clean logit margins of {total} samples: {wrong} misclassified (margin ≤ 0), "
                f"median of the others {median}, {beyond} beyond {UNDERFLOW_MARGIN:.0f} where "
                "the float32 softmax saturates"
            )
        else:
            zero = int((values == 0).sum())
            positive = values[values > 0]
            _log_histogram(axis, positive, zero, "0")
            axis.set_title("clean cross-entropy input-gradient norms")
            axis.set_xlabel("L2 norm of the input gradient")
            median = f"{float(np.median(positive)):.3g}" if positive.size else "none"
            described.append(
                f"cross-entropy input-gradient norms of {total} clean samples: {zero} exactly "
                f"zero, median of the others {median}"
            )
        axis.set_ylabel("samples")
    return svg(figure, "clean-distributions", "Histograms: " + "; ".join(described))


# --- flatness --------------------------------------------------------------------------------


def spectral_density_plot(result: AuditResult) -> str | None:
    """The Hessian's eigenvalue density (log scale), with the top eigenvalues marked."""
    flatness = result.flatness
    density = flatness.spectral_density if flatness else None
    if density is None:
        return None
    figure, (axis,) = _figure(1, width=6.0)
    values = _finite(density.density)
    # The density's Gaussian tails fall to 1e-100 and below; show eight decades.
    floor = np.nanmax(values) * 1e-8 if np.isfinite(values).any() else 0.0
    values[values <= floor] = np.nan
    axis.plot(density.grid, values, color=_COLOURS[0], label="density")
    axis.set_yscale("log")
    # Plain labels: the default 10^k labels go through mathtext, a third of the render time.
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))
    axis.yaxis.set_minor_formatter(NullFormatter())
    eigenvalues = flatness.hessian_eigenvalues.eigenvalues if flatness.hessian_eigenvalues else ()  # type: ignore[union-attr]
    for i, value in enumerate(eigenvalues):
        if math.isfinite(value):
            axis.axvline(
                value, color="black", linestyle=":", label="top eigenvalues" if i == 0 else None
            )
    axis.set_xlabel("eigenvalue")
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    alt = f"Hessian eigenvalue density from {density.grid[0]:.3g} to {density.grid[-1]:.3g}" + (
        "; top eigenvalues " + ", ".join(f"{v:.4g}" for v in eigenvalues) if eigenvalues else ""
    )
    return svg(figure, "spectral-density", alt)


def landscape_1d_plot(result: AuditResult) -> str | None:
    """Loss (± standard error) and accuracy along one random filter-normalised direction."""
    flatness = result.flatness
    landscape = flatness.landscape_1d if flatness else None
    if landscape is None:
        return None
    figure, (axis,) = _figure(1, width=6.0)
    x = np.array(landscape.coordinates, dtype=float)
    loss = _finite(landscape.losses)
    if landscape.loss_stderrs is not None:
        stderr = _finite(landscape.loss_stderrs)
        axis.fill_between(x, loss - stderr, loss + stderr, alpha=0.2, color=_COLOURS[0])
    axis.plot(x, loss, marker="o", color=_COLOURS[0], label="loss")
    axis.set_xlabel("step along the direction")
    axis.set_ylabel("mean cross-entropy")
    alt = (
        f"Loss along one direction: {np.nanmin(loss):.3g} at best, "
        f"{loss[len(loss) // 2]:.3g} at the centre"
    )
    if landscape.accuracies is not None:
        other = axis.twinx()
        other.plot(
            x,
            _finite(landscape.accuracies),
            linestyle="--",
            marker="s",
            color=_COLOURS[1],
            label="accuracy",
        )
        other.set_ylabel("accuracy")
        other.set_ylim(0, 1.02)
        other.grid(False)
        lines = axis.get_legend_handles_labels()
        more = other.get_legend_handles_labels()
        axis.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower left")
    return svg(figure, "landscape-1d", alt)


def landscape_2d_plot(result: AuditResult) -> str | None:
    """Contours of the loss over two random filter-normalised directions."""
    flatness = result.flatness
    landscape = flatness.landscape_2d if flatness else None
    if landscape is None:
        return None
    losses = np.array([_finite(row) for row in landscape.losses], dtype=float)
    if not np.isfinite(losses).any():
        return None
    figure, (axis,) = _figure(1, width=4.6, height=3.8)
    x = np.array(landscape.coordinates, dtype=float)
    masked = np.ma.masked_invalid(losses)
    filled = axis.contourf(x, x, masked, levels=12, cmap="viridis")
    lines = axis.contour(x, x, masked, levels=12, colors="black", linewidths=0.4)
    axis.clabel(lines, fontsize=6, fmt="%.2g")
    figure.colorbar(filled, ax=axis, label="mean cross-entropy")
    axis.set_xlabel("direction 1")
    axis.set_ylabel("direction 2")
    axis.grid(False)
    centre = losses[len(x) // 2, len(x) // 2]
    alt = (
        f"Loss over two directions: {np.nanmin(losses):.3g} to {np.nanmax(losses):.3g}, "
        f"{centre:.3g} at the centre"
    )
    return svg(figure, "landscape-2d", alt)


# --- examples --------------------------------------------------------------------------------


def _rgb(values: Sequence[float], shape: Sequence[int], low: float, high: float) -> np.ndarray:
    """[H, W, 3] in [0, 1] from flat C×H×W values mapped linearly from [low, high]."""
    channels, height, width = shape
    array = np.array(values, dtype=float).reshape(channels, height, width).transpose(1, 2, 0)
    array = np.clip((array - low) / (high - low), 0.0, 1.0)
    return np.repeat(array, 3, axis=2) if channels == 1 else array[:, :, :3]


def _tiles(example: Example, epsilon: float, norm: str) -> tuple[list[np.ndarray], float]:
    """Original, adversarial and perturbation (mid grey is 0) as RGB tiles, and the
    perturbation's scale: ±ε under L∞, ± the largest change under L2."""
    original = [p / 255 for p in example.original_pixels()]
    adversarial = [p / 255 for p in example.adversarial_pixels()]
    exact_original, exact_adversarial = example.original_values(), example.adversarial_values()
    if exact_original is not None and exact_adversarial is not None:
        delta = np.subtract(exact_adversarial, exact_original)
    else:
        delta = np.subtract(adversarial, original)
    largest = float(np.abs(delta).max()) if delta.size else 0.0
    scale = epsilon if norm == "linf" else (largest or 1.0)
    return [
        _rgb(original, example.shape, 0.0, 1.0),
        _rgb(adversarial, example.shape, 0.0, 1.0),
        _rgb(list(delta), example.shape, -scale, scale),
    ], scale


def _class(classes: Sequence[str] | None, label: int | None) -> str:
    if label is None:
        return "n/a"
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


def examples_plot(result: AuditResult, section: NormResult, limit: int = 3) -> str | None:
    """Per attack (a row), up to ``limit`` stored examples at the norm's first epsilon: the
    original, the adversarial example and the perturbation, with the true label, whether the
    model was fooled and its margin. Drawn as one image, so that many examples stay fast."""
    if not section.examples:
        return None
    epsilon = section.epsilons[0]
    rows: dict[str, list[Example]] = {}
    for example in section.examples:
        if example.epsilon == epsilon and len(rows.setdefault(example.attack, [])) < limit:
            rows[example.attack].append(example)
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return None
    classes = result.evaluation.classes
    _, height, width = section.examples[0].shape
    zoom = max(1, 48 // max(height, width))
    tile_h, tile_w = height * zoom, width * zoom
    gap, group_gap, label_h = max(2, tile_w // 12), tile_w // 2, 40
    per_row = max(len(v) for v in rows.values())
    group_w = 3 * tile_w + 2 * gap
    canvas = np.ones((len(rows) * (tile_h + label_h) + label_h, per_row * (group_w + group_gap), 3))
    texts: list[tuple[int, float, str]] = []
    described = []
    for r, (attack, examples) in enumerate(rows.items()):
        top = label_h + r * (tile_h + label_h)
        texts.append((0, top - label_h * 0.55, attack))
        for i, example in enumerate(examples):
            tiles, scale = _tiles(example, epsilon, section.norm)
            left = i * (group_w + group_gap)
            for j, tile in enumerate(tiles):
                x = left + j * (tile_w + gap)
                canvas[top : top + tile_h, x : x + tile_w] = np.kron(tile, np.ones((zoom, zoom, 1)))
            name, predicted = _class(classes, example.label), _class(classes, example.predicted)
            outcome = "fooled" if example.fooled else "held"
            margin = "" if example.margin is None else f"margin {example.margin:.2g}, "
            first = f"true {name} → predicted {predicted} ({outcome})"
            texts.append((left, top - 3, f"{first}\n{margin}δ ±{scale:.2g}"))
            described.append(f"{attack}: true {name}, predicted {predicted}, {outcome}")
    with matplotlib.rc_context(STYLE):
        figure = plt.figure(figsize=(canvas.shape[1] / 60, canvas.shape[0] / 60))
        axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(canvas, interpolation="nearest")
    for left, bottom, text in texts:
        axis.text(left, bottom, text, fontsize=7, va="bottom", ha="left")
    axis.set_axis_off()
    alt = (
        f"Adversarial examples under {norm_label(section.norm, epsilon)}, each original beside "
        "its adversarial example and the perturbation: " + "; ".join(described)
    )
    return svg(figure, f"examples-{section.norm}", alt)
