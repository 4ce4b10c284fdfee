"""The report's tables of flatness and activations: each estimate with its standard error,
how each estimate ended, and the statistics of each dropout-family layer's input."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from core.document import AuditResult, FlatnessResult
from core.flatrecords import MEASURES
from reports.cells import NON_FINITE, NOT_AVAILABLE, data_frame, estimate_cell, number


def flatness_sections(result: AuditResult) -> list[tuple[str, FlatnessResult]]:
    """(mode label, flatness result) for every mode the document measured: ``eval`` and, where
    present, ``layers active`` (dropout-family layers on, Monte-Carlo averaged)."""
    if result.flatness is None:
        return []
    out = []
    for flatness in (result.flatness, result.flatness.active_layers):
        if flatness is not None:
            mode = str(flatness.config.get("mode", "eval"))
            out.append(("layers active" if mode == "train" else mode, flatness))
    return out


def flatness_table(result: AuditResult) -> pd.DataFrame:
    """Fisher-Rao norm² (empirical and model Fisher), Hessian trace, top eigenvalues and
    ε-sharpness, each ± its standard error, with one column per mode the document has."""
    sections = flatness_sections(result)
    if not sections:
        return data_frame({}, [], "measure")
    measures: dict[str, Callable[[FlatnessResult], str]] = {
        _MEASURES[name]: _estimate(name)
        for name in (
            "fisher_rao_empirical",
            "fisher_rao_model",
            "hessian_trace",
            "epsilon_sharpness",
        )
    }
    count = max(
        (len(f.hessian_eigenvalues.eigenvalues) for _, f in sections if f.hessian_eigenvalues),
        default=0,
    )
    for i in range(count):
        measures[f"Hessian eigenvalue λ{i + 1}"] = _eigenvalue(i)
    rows = {name: [cell(f) for _, f in sections] for name, cell in measures.items()}
    return data_frame(rows, [label for label, _ in sections], "measure")


def _estimate(name: str) -> Callable[[FlatnessResult], str]:
    """The cell of the estimate ``name`` (a field of ``FlatnessResult``): value ± error."""
    return lambda f: estimate_cell(*_pair(getattr(f, name)))


_STOPPED = {
    "target": "target reached",
    "budget": "budget spent",
    "all-samples": "one pass over all samples",
}

_MEASURES = {  # keyed by core.flatrecords.MEASURES
    "fisher_rao_empirical": "Fisher-Rao norm² (empirical Fisher)",
    "fisher_rao_model": "Fisher-Rao norm² (model Fisher)",
    "hessian_trace": "Hessian trace",
    "hessian_eigenvalues": "Hessian eigenvalues",
    "spectral_density": "Spectral density",
    "landscape_1d": "Loss landscape 1-D",
    "landscape_2d": "Loss landscape 2-D",
    "epsilon_sharpness": "ε-sharpness",
}


def _samples(estimate: Any) -> int | None:
    provenance = getattr(estimate, "provenance", None)
    return None if provenance is None else provenance.num_samples


def _draws(estimate: Any) -> str:
    """``12 draws of 64 samples`` or ``all 500 samples``."""
    size, draws = estimate.minibatch_size, estimate.num_draws
    if size is None:
        total = _samples(estimate)
        whole = "all samples" if total is None else f"all {total} samples"
        return whole if draws in (None, 1) else f"{draws} passes over {whole}"
    return f"{draws} draw{'s' if draws != 1 else ''} of {size} samples"


def stopping(name: str, estimate: Any) -> str:
    """How a flatness estimate ended, in words: what stopped it (its target, its budget, a
    single pass) and what it used. Documents before schema 1.8 record less; what they do not
    record is not guessed (a trace or eigenvalues say only whether they converged)."""
    if estimate is None:
        return NOT_AVAILABLE
    stopped = getattr(estimate, "stopped_by", None)
    if stopped is None and getattr(estimate, "converged", None) is not None:
        stopped = "target" if estimate.converged else "budget"
    head = _STOPPED.get(stopped, stopped) if stopped else None
    if name in ("fisher_rao_empirical", "fisher_rao_model"):
        if estimate.num_draws is None:
            return f"one pass over all {_samples(estimate)} samples (not recorded before 1.8)"
        work = _draws(estimate)
        target = "" if stopped == "all-samples" else _relative(estimate.rel_tol)
        return f"{head}{target}: {work}"
    if name == "hessian_trace":
        work = f"{number(estimate.num_probes)} probes"
        if estimate.num_draws is not None:
            work += f" in {_draws(estimate)}"
        return f"{head}{_relative(estimate.rel_tol)}: {work}"
    if name == "hessian_eigenvalues":
        tol = "" if estimate.rel_tol is None else f" (residuals ≤ {estimate.rel_tol:g} λ)"
        work = f"{number(estimate.num_iterations)} Lanczos steps on all {_samples(estimate)}"
        return f"{head}{tol}: {work} samples"
    if name == "spectral_density":
        runs = f"{number(estimate.num_runs)} runs of {number(estimate.num_steps)} steps"
        on = estimate.sample_size or _samples(estimate)
        if head is None:
            return f"fixed: {runs} on {on} samples"
        tol = "" if estimate.rel_tol is None else f" (integrated error ≤ {estimate.rel_tol:g})"
        return f"{head}{tol}: {runs} on {on} samples"
    if name in ("landscape_1d", "landscape_2d"):
        points = len(estimate.coordinates) ** (2 if name == "landscape_2d" else 1)
        on = estimate.sample_size or _samples(estimate)
        return f"fixed: {points} points on {on} samples each"
    if name == "epsilon_sharpness":
        return (
            f"fixed: {number(estimate.num_steps)} ascent steps on all {_samples(estimate)} samples"
        )
    return head or NOT_AVAILABLE


def _relative(rel_tol: float | None) -> str:
    return "" if rel_tol is None else f" (relative error ≤ {rel_tol:g})"


def flatness_stopping_table(result: AuditResult) -> pd.DataFrame:
    """How each flatness estimate ended, one column per mode: what stopped it (its target
    precision, its budget, or a single pass) and the samples, draws, probes or steps it used."""
    sections = flatness_sections(result)
    if not sections:
        return data_frame({}, [], "measure")
    rows = {
        _MEASURES[name]: [stopping(name, getattr(f, name)) for _, f in sections]
        for name in MEASURES
        if any(getattr(f, name) is not None for _, f in sections)
    }
    return data_frame(rows, [label for label, _ in sections], "measure")


def _eigenvalue(i: int) -> Callable[[FlatnessResult], str]:
    def cell(flatness: FlatnessResult) -> str:
        found = flatness.hessian_eigenvalues
        if found is None or i >= len(found.eigenvalues):
            return NOT_AVAILABLE
        return number(found.eigenvalues[i])

    return cell


def _pair(estimate: Any) -> tuple[float | None, float | None]:
    return (None, None) if estimate is None else (estimate.value, estimate.stderr)


def activation_table(result: AuditResult) -> pd.DataFrame:
    """Statistics of each dropout-family layer's input on clean data (the NormOut thesis'
    tables 3.2/3.3): mean, max, std, variance and sparsity (share of exact zeros)."""
    rows = {
        stats.name: [
            stats.kind,
            number(stats.mean),
            number(stats.max),
            number(stats.std),
            number(stats.std**2 if math.isfinite(stats.std) else stats.std),
            f"{stats.zero_fraction:.1%}" if math.isfinite(stats.zero_fraction) else NON_FINITE,
            str(stats.num_elements),
        ]
        for stats in result.activations or ()
    }
    columns = ["kind", "mean", "max", "std", "variance", "sparsity", "elements"]
    return data_frame(rows, columns, "layer")
