"""Every table of a report as a pandas DataFrame, built from an :class:`AuditResult` alone.

Cells are the text the report shows (``0.281 [0.240, 0.325]``, ``110.5 ± 6.352``, ``n/a``),
so a table pasted from the CSV or Markdown reads exactly as in ``report.html``; the row labels
are the index (its name heads the first column). :data:`TABLES` names every table;
:func:`write_tables` writes each as CSV and Markdown.

Example::

    result = read_result("out/digits-mlp-dropout/audit.json")
    robust_accuracy_table(result)            # rows attacks, columns norm and epsilon
    write_tables(result, "out/digits-mlp-dropout", formats=("csv", "md"))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.boundary import atomic_write_text
from core.document import (
    AttackRecord,
    AuditResult,
    BatchSize,
    CheckpointInfo,
    FlatnessResult,
    NormResult,
    Proportion,
)
from core.stats import wilson_interval
from reports import evidence

__all__ = [
    "FORMATS",
    "TABLES",
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
    "robust_accuracy_table",
    "to_markdown",
    "who_broke_what_table",
    "write_tables",
]

FORMATS = ("csv", "md")
NOT_AVAILABLE = "n/a"
NON_FINITE = "non-finite"
_NORM_NAMES = {"linf": "L∞", "l2": "L2"}


# --- formatting ------------------------------------------------------------------------------


def number(value: float | int | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits; None is ``n/a``, NaN and ±Inf are
    ``non-finite``."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return NON_FINITE
    return f"{value:.{digits}g}"


def interval(share: Proportion | None, digits: int = 3) -> str:
    """A proportion with its 95 % Wilson interval: ``0.281 [0.240, 0.325]``."""
    if share is None or share.value is None:
        return NOT_AVAILABLE
    low, high = share.wilson_95
    return f"{share.value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def reliable(section: NormResult, k: int) -> str:
    """The reliable robust accuracy at epsilon ``k`` with its interval, or what it is instead:
    an upper bound where an attack failed, untested where none ran (a failed attack is
    evidence of nothing, so the figure is never shown as reliable)."""
    figure = interval(section.reliable_robust_accuracy[k])
    if not section.tested(k):
        return f"untested: no attack ran ({figure} is the clean accuracy)"
    failed = section.failed_attacks(k)
    if failed:
        return f"≤ {figure} (upper bound: {', '.join(failed)} failed)"
    return figure


def _estimate(value: float | None, stderr: float | None) -> str:
    if value is None:
        return NOT_AVAILABLE
    if stderr is None:
        return number(value)
    return f"{number(value)} ± {number(stderr)}"


def norm_label(norm: str, epsilon: float | None = None) -> str:
    """``L∞ ε=0.1``, or ``L∞`` without an epsilon."""
    name = _NORM_NAMES.get(norm, norm)
    return name if epsilon is None else f"{name} ε={epsilon:g}"


def _columns(result: AuditResult) -> list[tuple[NormResult, int, str]]:
    """(norm section, epsilon index, column label) for every norm and epsilon, in order."""
    return [
        (section, k, norm_label(section.norm, epsilon))
        for section in result.robustness.norms
        for k, epsilon in enumerate(section.epsilons)
    ]


def _attack_labels(result: AuditResult) -> list[str]:
    """Every attack label, in the order the attacks ran (the union over norms)."""
    labels: list[str] = []
    for section in result.robustness.norms:
        labels += [a.label for a in section.attacks if a.label not in labels]
    return labels


def _find(section: NormResult, label: str) -> AttackRecord | None:
    return next((a for a in section.attacks if a.label == label), None)


def _status(record: AttackRecord, k: int) -> str:
    if record.statuses is not None and k < len(record.statuses):
        return record.statuses[k]
    return record.status or "ok"


# --- robustness ------------------------------------------------------------------------------


def new_breaks(result: AuditResult, section: NormResult, k: int) -> dict[str, int]:
    """Per attack, the clean-correct samples it broke at epsilon ``k`` that every attack before
    it missed. They sum to the clean-correct count minus the reliable robust count."""
    correct = result.clean_correct
    broken_before = [False] * len(correct)
    out = {}
    for record in section.attacks:
        hits = [s and c for s, c in zip(record.success[k], correct, strict=True)]
        out[record.label] = sum(h and not b for h, b in zip(hits, broken_before, strict=True))
        broken_before = [b or h for b, h in zip(broken_before, hits, strict=True)]
    return out


def alone_accuracy(result: AuditResult, record: AttackRecord, k: int) -> Proportion | None:
    """The robust accuracy of ``record`` on its own at epsilon ``k``, where it is known: the
    attack ran on (or had already broken, in a nested sweep) every clean-correct sample. None
    for an attack that ran only on what earlier attacks left robust."""
    correct = result.clean_correct
    covered = all(
        a or s or not c
        for a, s, c in zip(record.attacked[k], record.success[k], correct, strict=True)
    )
    if not covered or _status(record, k) != "ok":
        return None
    robust = sum(c and not s for c, s in zip(correct, record.success[k], strict=True))
    return _proportion(robust, len(correct))


def _proportion(count: int, total: int) -> Proportion:
    low, high = wilson_interval(count, total)
    return Proportion(
        value=count / total if total else None, count=count, total=total, wilson_95=(low, high)
    )


def robust_accuracy_table(result: AuditResult) -> pd.DataFrame:
    """Robust accuracy, attack × norm (the NormOut thesis' tables 3.4/3.5): one row per attack
    with the accuracy after it (and every attack before it, AutoAttack's order), one column per
    norm and epsilon, each with its 95 % interval; first the clean accuracy, last the reliable
    worst case over all attacks."""
    columns = _columns(result)
    rows: dict[str, list[str]] = {"clean": [interval(result.clean_accuracy)] * len(columns)}
    for label in _attack_labels(result):
        cells = []
        for section, k, _ in columns:
            record = _find(section, label)
            if record is None:
                cells.append("not run")
            elif _status(record, k) != "ok":
                cells.append(_status(record, k))
            else:
                cells.append(interval(record.robust_accuracy_after[k]))
        rows[label] = cells
    rows["reliable (worst case)"] = [reliable(section, k) for section, k, _ in columns]
    return _frame(rows, [c for _, _, c in columns], "attack")


def who_broke_what_table(result: AuditResult) -> pd.DataFrame:
    """Per norm and epsilon, how many samples each attack broke that all the earlier attacks
    missed (the evidence behind the pairwise checks), with the samples it attacked; the last
    row is their sum, the clean-correct samples minus the reliably robust ones."""
    columns = _columns(result)
    labels = _attack_labels(result)
    rows: dict[str, list[str]] = {label: [] for label in labels}
    totals = []
    for section, k, _ in columns:
        counts = new_breaks(result, section, k)
        for label in labels:
            record = _find(section, label)
            if record is None:
                rows[label].append("not run")
                continue
            attempted = record.attempted[k] if record.attempted is not None else None
            rows[label].append(
                f"{counts[label]} of {attempted} attacked"
                if attempted is not None
                else str(counts[label])
            )
        totals.append(str(sum(counts.values())))
    rows["total broken"] = totals
    return _frame(rows, [c for _, _, c in columns], "attack")


def gradient_table(result: AuditResult) -> pd.DataFrame:
    """Input-gradient health of each gradient attack: the share of first input gradients that
    are exactly zero and below the vanishing threshold, with the attack's loss."""
    rows: dict[str, list[str]] = {}
    for section in result.robustness.norms:
        for record in section.attacks:
            stats = record.gradient_stats
            if stats is None:
                continue
            loss = (record.params or {}).get("loss")
            rows[f"{record.label} ({norm_label(section.norm)})"] = [
                str(loss) if loss is not None else NOT_AVAILABLE,
                f"{stats.zero_fraction:.1%}",
                f"{stats.vanishing_fraction:.1%}",
                str(stats.nonfinite_gradients),
            ]
    return _frame(
        rows, ["loss", "zero gradients", "vanishing gradients", "non-finite gradients"], "attack"
    )


def probe_table(result: AuditResult) -> pd.DataFrame:
    """The direct measurements of the model the checks read: input gradient, finite
    differences, repeated passes, batch composition, mode and outputs."""
    probes = result.probes
    if probes is None:
        return _frame({}, ["value"], "probe")

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
    return _frame({k: [v] for k, v in rows.items()}, ["value"], "probe")


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
    return _frame(rows, ["status", "kind", "evidence", "explanation", "remedy"], "check")


# --- flatness and activations ----------------------------------------------------------------


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
        return _frame({}, [], "measure")
    measures: dict[str, Callable[[FlatnessResult], str]] = {
        "Fisher-Rao norm² (empirical Fisher)": lambda f: _estimate(*_pair(f.fisher_rao_empirical)),
        "Fisher-Rao norm² (model Fisher)": lambda f: _estimate(*_pair(f.fisher_rao_model)),
        "Hessian trace": lambda f: _estimate(*_pair(f.hessian_trace)),
        "ε-sharpness": lambda f: _estimate(*_pair(f.epsilon_sharpness)),
    }
    count = max(
        (len(f.hessian_eigenvalues.eigenvalues) for _, f in sections if f.hessian_eigenvalues),
        default=0,
    )
    for i in range(count):
        measures[f"Hessian eigenvalue λ{i + 1}"] = _eigenvalue(i)
    rows = {name: [cell(f) for _, f in sections] for name, cell in measures.items()}
    return _frame(rows, [label for label, _ in sections], "measure")


_STOPPED = {
    "target": "target reached",
    "budget": "budget spent",
    "all-samples": "one pass over all samples",
}

_MEASURES = {
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
        return _frame({}, [], "measure")
    rows = {
        label: [stopping(name, getattr(f, name)) for _, f in sections]
        for name, label in _MEASURES.items()
        if any(getattr(f, name) is not None for _, f in sections)
    }
    return _frame(rows, [label for label, _ in sections], "measure")


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
    return _frame(rows, columns, "layer")


# --- provenance ------------------------------------------------------------------------------


def _time(seconds: float | None) -> str:
    if seconds is None:
        return NOT_AVAILABLE
    if not math.isfinite(seconds):
        return NON_FINITE
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def provenance_table(result: AuditResult) -> pd.DataFrame:
    """Where the result comes from: checkpoint and weight hashes, description, samples, seed,
    suite, versions, command line, times and host."""
    provenance = result.provenance
    info = result.checkpoint
    config = provenance.config or {}
    suite = config.get("suite") or {}
    rows: dict[str, str] = {
        "checkpoint": provenance.checkpoint,
        "checkpoint sha256": provenance.checkpoint_sha256,
        "weights sha256": provenance.weights_sha256 or NOT_AVAILABLE,
    }
    if info is not None:
        layer = info.layer
        positions = ",".join(map(str, layer.positions)) if layer.positions else "none"
        params = ", ".join(f"{k}={v}" for k, v in layer.params.items())
        # A model of the user's own or a graph file has no slots: its layers were found by type.
        found = provenance.model_source is not None or info.arch in (
            "torchscript",
            "pickled-module",
        )
        where = "found by type" if found else f"at {positions}"
        rows["architecture"] = info.arch
        rows["layers"] = f"{layer.kind} ({params}) {where}" if params else layer.kind
        rows["input"] = "×".join(map(str, info.input_shape))
        rows["input bounds"] = _convention(
            f"[{info.bounds[0]:g}, {info.bounds[1]:g}]", info.bounds_source
        )
        rows["normalisation"] = _convention(_normalization(info), info.normalization_source)
        rows["source format"] = info.source_format
    source = provenance.model_source
    if source is not None:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in source.kwargs.items())
        rows["model code"] = (
            f"{source.name}({kwargs}) from {source.path or source.module}, "
            f"sha256 {source.sha256 or NOT_AVAILABLE}"
        )
    evaluation = result.evaluation
    rows["dataset"] = f"{evaluation.dataset} ({evaluation.source or NOT_AVAILABLE})"
    rows["samples"] = str(evaluation.num_samples)
    rows["seed"] = str(provenance.seed)
    rows["preset"] = str(suite.get("name", NOT_AVAILABLE))
    rows["schema version"] = result.schema_version
    for package, version in provenance.versions.items():
        rows[f"version: {package}"] = version or "not installed"
    rows["command line"] = " ".join(provenance.command_line or ()) or NOT_AVAILABLE
    rows["started"] = _time(provenance.started)
    rows["finished"] = _time(provenance.finished)
    rows["attack wall time"] = (
        f"{number(result.robustness.wall_time)} s"
        if result.robustness.wall_time is not None
        else NOT_AVAILABLE
    )
    rows["host"] = provenance.host or NOT_AVAILABLE
    rows["device"] = provenance.device or NOT_AVAILABLE
    if provenance.world_size is not None:
        rows["processes"] = str(provenance.world_size)
    sizes = provenance.batch_sizes
    if sizes is not None:
        rows["batch size requested"] = "auto" if sizes.requested is None else str(sizes.requested)
        rows["batch size: attacks"] = _batch_size(sizes.attacks)
        if sizes.flatness is not None:
            rows["batch size: flatness"] = _batch_size(sizes.flatness)
    return _frame({k: [v] for k, v in rows.items()}, ["value"], "field")


def _normalization(info: CheckpointInfo) -> str:
    """``mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225`` or ``none``."""
    if info.mean is None or info.std is None:
        return "none: pixels reach the network as they are"
    mean, std = (", ".join(f"{v:g}" for v in values) for values in (info.mean, info.std))
    return f"mean {mean}; std {std}"


def _convention(values: str, source: str | None) -> str:
    """What the audit applied, and where it came from (not recorded before schema 1.6)."""
    return f"{values} ({source or 'source not recorded'})"


def _batch_size(choice: BatchSize) -> str:
    """``500 (estimated: 7.1 MB per sample + 13 MB, 23.6 GB free; halved once)``."""
    details = []
    if choice.per_sample_bytes is not None:
        fixed = f" + {choice.fixed_bytes / 1e6:.3g} MB" if choice.fixed_bytes else ""
        details.append(f"{choice.per_sample_bytes / 1e6:.3g} MB per sample{fixed}")
    if choice.available_bytes is not None:
        details.append(f"{choice.available_bytes / 1e9:.3g} GB free")
    text = f"{choice.size} ({choice.how}{': ' + ', '.join(details) if details else ''})"
    if choice.halvings:
        text += f", halved {choice.halvings}× after running out of memory"
    return text


# --- writing ---------------------------------------------------------------------------------

TABLES: dict[str, Callable[[AuditResult], pd.DataFrame]] = {
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


def _frame(rows: Mapping[str, Sequence[str]], columns: Sequence[str], index: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        [list(cells) for cells in rows.values()],
        index=pd.Index(list(rows), name=index, dtype=object),
        columns=list(columns),
        dtype=object,
    )
    return frame


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
    """Write every table of :data:`TABLES` as ``DIRECTORY/<name>.csv`` and ``.md``; a table
    the document has no rows for (flatness after ``--no-flatness``) is left out.

    Returns:
        The paths written, in order.
    """
    formats = parse_formats(",".join(formats))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in TABLES.items():
        frame = build(result)
        if frame.empty:
            continue
        for kind in formats:
            path = directory / f"{name}.{kind}"
            text = frame.to_csv(lineterminator="\n") if kind == "csv" else to_markdown(frame)
            atomic_write_text(path, text)
            written.append(path)
    return written
