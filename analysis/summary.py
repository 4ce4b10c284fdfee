"""The audit's summary on stdout: per norm and epsilon the robust accuracy after each
attack, what the reliable figure is the worst case over, what did not run, flatness with its
standard errors and what stopped each estimate; from the typed result alone."""

from __future__ import annotations

from pathlib import Path

from core.boundary import (
    error_line,
)
from core.document import (
    FAILED,
    NOT_APPLICABLE,
    WARN_OR_FAIL,
    AttackRecord,
    AuditResult,
    FisherRaoEstimate,
    FlatnessResult,
    NormResult,
    TraceEstimate,
    preset_caveat,
)

__all__ = ["incomplete_lines", "summary_lines"]


def _flatness_parts(flatness: FlatnessResult | None) -> list[str]:
    if flatness is None:
        return []
    parts = []
    for estimate, label in (
        (flatness.fisher_rao_empirical, "Fisher-Rao (emp)"),
        (flatness.fisher_rao_model, "Fisher-Rao (model)"),
        (flatness.hessian_trace, "Hessian trace"),
    ):
        if estimate is not None:
            stderr = "" if estimate.stderr is None else f" ± {estimate.stderr:.2g}"
            parts.append(f"{label} {estimate.value:.4g}{stderr}")
    return parts


def _stops(flatness: FlatnessResult | None) -> list[str]:
    """What stopped each stochastic estimator, briefly: ``trace target (96 probes in 12
    draws of 64)``; documents before schema 1.8 record less, and say so."""
    if flatness is None:
        return []
    parts = []

    def add(label: str, stopped: str | None, work: str) -> None:
        parts.append(f"{label} {stopped or 'not recorded'}" + (f" ({work})" if work else ""))

    def draws(estimate: FisherRaoEstimate | TraceEstimate) -> str:
        if estimate.num_draws is None:
            return ""
        if estimate.minibatch_size is None:
            return "all samples"
        return f"{estimate.num_draws} draws of {estimate.minibatch_size}"

    for fisher, label in (
        (flatness.fisher_rao_empirical, "Fisher-Rao (emp)"),
        (flatness.fisher_rao_model, "Fisher-Rao (model)"),
    ):
        if fisher is not None:
            add(label, fisher.stopped_by, draws(fisher))
    trace = flatness.hessian_trace
    if trace is not None:
        work = draws(trace)
        add(
            "trace",
            trace.stopped_by,
            f"{trace.num_probes} probes" + (f" in {work}" if work else ""),
        )
    eigenvalues = flatness.hessian_eigenvalues
    if eigenvalues is not None:
        add("eigenvalues", eigenvalues.stopped_by, f"{eigenvalues.num_iterations} steps")
    density = flatness.spectral_density
    if density is not None:
        add(
            "density",
            density.stopped_by,
            f"{density.num_runs} runs on {density.sample_size or 'all'} samples",
        )
    sizes = [
        str(landscape.sample_size)
        for landscape in (flatness.landscape_1d, flatness.landscape_2d)
        if landscape is not None and landscape.sample_size is not None
    ]
    if sizes:
        parts.append(f"landscapes on {' and '.join(sizes)} samples")
    return parts


def _after(attack: AttackRecord, k: int) -> str:
    """``label value``, the robust accuracy after an attack, or what became of it."""
    status = attack.status_at(k)
    if status == FAILED:
        return f"{attack.label} failed"
    if status == NOT_APPLICABLE:
        return f"{attack.label} n/a"
    return f"{attack.label} {attack.robust_accuracy_after[k].value:.3f}"


def incomplete_lines(result: AuditResult) -> list[str]:
    """One line per attack run that failed, for stderr: an incomplete evaluation is said where
    it cannot be missed, not only inside the document. Each names the error by the line of its
    message that says what failed (``core.boundary.error_line``); the document keeps it whole."""
    lines = []
    for norm in result.robustness.norms:
        for failure in norm.failures or ():
            if failure.status != FAILED:
                continue
            at = "" if failure.epsilon is None else f" eps {failure.epsilon:.4g}"
            stage = "" if failure.stage == "attack" else f" {failure.stage}"
            lines.append(
                f"warning: {failure.label}{stage} failed at {norm.norm}{at}: "
                f"{error_line(failure.message)}"
            )
    if lines:
        lines.append(
            f"warning: {result.verdict}: the samples a failed attack would have attacked count "
            "as robust; fix the cause and rerun"
        )
    return lines


def _chain_lines(norm: NormResult, k: int) -> list[str]:
    """What the robust accuracy at the ``k``-th epsilon is the worst case over, and which
    attacks of AutoAttack's standard version are not among them."""
    indent = " " * 20
    lines = [f"{indent}worst case over: {', '.join(norm.chain(k)) or 'no attack'}"]
    missing = norm.autoattack_not_run(k)
    if missing:
        lines.append(f"{indent}not run of AutoAttack's standard version: {', '.join(missing)}")
    return lines


def summary_lines(path: Path, result: AuditResult) -> list[str]:
    """The compact table printed after an audit.

    Raises:
        ValueError: ``result`` is a baseline (it has no checkpoint description to summarise).
    """
    spec = result.checkpoint
    if spec is None:
        raise ValueError(f"{path} is a baseline; a summary needs the whole audit result")
    clean = result.clean_accuracy
    lines = [
        f"{path}: {spec.arch} with {spec.layer.kind} layers on "
        f"{result.evaluation.dataset} ({result.evaluation.num_samples} samples)",
        f"  clean accuracy              {clean.value:.4f} ({clean.count}/{clean.total})",
    ]
    for norm in result.robustness.norms:
        for k, epsilon in enumerate(norm.epsilons):
            row = "  ".join(_after(attack, k) for attack in norm.attacks)
            value = norm.reliable_robust_accuracy[k].value
            failed = norm.failed_attacks(k)
            if not norm.tested(k):
                figure = f"untested {value:.4f} (no attack ran: this is the clean accuracy)"
            elif failed:
                figure = f"at most {value:.4f} (upper bound: {', '.join(failed)} failed)"
            else:
                figure = f"reliable {value:.4f}"
            lines.append(f"  {norm.norm:4s} eps {epsilon:<8.4g} {figure}   after: {row}")
            lines.extend(_chain_lines(norm, k))
        passes = "; ".join(f"{n} ({', '.join(labels)})" for n, labels in norm.eot_passes())
        if passes:
            lines.append(f"  {norm.norm:4s} EOT, forward passes averaged per gradient: {passes}")
    flat = result.flatness
    for heading, measured in (
        ("flatness", flat),
        ("layers active", flat.active_layers if flat else None),
    ):
        parts = _flatness_parts(measured)
        if parts:
            lines.append(f"  {heading}: " + "; ".join(parts))
        stops = _stops(measured)
        if stops:
            lines.append("    stopped by: " + "; ".join(stops))
    flagged = [f for f in result.findings if f.status in WARN_OR_FAIL]
    lines.append(f"  verdict: {result.verdict}")
    caveat = preset_caveat(result)
    if caveat is not None:
        lines.append(f"  caution: {caveat}")
    for finding in flagged:
        lines.append(f"    [{finding.status}] {finding.code}: {finding.explanation}")
    return lines
