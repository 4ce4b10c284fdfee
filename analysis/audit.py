"""The audit: ``python -m analysis.audit CHECKPOINT [CHECKPOINT ...]``.

For each checkpoint: load it, take a fixed seeded selection of test samples, measure clean
accuracy, probe the model, run the attack suite (AutoAttack-style worst case over attacks),
estimate flatness, summarise the dropout-family layers' inputs, apply the gradient-masking
checks and write ``OUT/<checkpoint-stem>/audit.json``. A summary table goes to stdout,
progress to stderr.

With ``--baseline FILE`` the result is gated against a baseline (see ``analysis.gate``).

Exit status: 0 success, 1 the gate failed, 2 bad input (one line on stderr, found before any
work wherever it can be), 3 an internal error, 130 interrupted (Ctrl-C), 143 stopped by
SIGTERM; ``--verbose`` adds the traceback. An attack that failed leaves the status 0 but is
said on stderr, and the verdict reads "evaluation incomplete". No partial files: each document
is written atomically once complete.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import torch

from analysis import gate
from analysis.activations import activation_statistics, activations_note, dropout_family_layers
from analysis.batching import (
    attack_batch,
    flatness_batch,
    measure_fitting,
    parse_batch_size,
)
from analysis.batching import provenance as batch_provenance
from analysis.config import (
    DEFAULT_BATCH_SIZE,
    EOT_SAMPLES,
    PRESETS,
    AuditConfig,
    active_flatness_config,
    build_suite,
    check_suite,
    cost_warning,
    flatness_config,
    parse_epsilons,
)
from analysis.conventions import try_conventions
from analysis.document import bits, encode_exact, encode_image
from analysis.probes import probe_model
from analysis.redflags import Evidence, run_checks, verdict
from analysis.resume import LOCK, PARTIAL, FolderBusy, FolderLock, UnitCache
from attacks import Bounds, ChunkedModel, NormOutcome, SuiteResult, run_suite
from attacks.losses import NO_PREDICTION, predict
from attacks.presets import for_stochastic_model
from attacks.result import plain
from attacks.suite import Memo
from checkpoints import CheckpointError, LoadedCheckpoint, load_checkpoint
from checkpoints.cli import add_description_arguments, description_from_arguments, say_flag_notes
from checkpoints.datasets import Dataset, DatasetError, load_dataset
from core.boundary import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    InputError,
    OneLineParser,
    check_writable,
    error_line,
    one_line,
    output_error,
    run_command,
    writing,
)
from core.document import (
    SCHEMA_VERSION,
    AttackRecord,
    AuditResult,
    DocumentError,
    FisherRaoEstimate,
    FlatnessResult,
    NormResult,
    TraceEstimate,
    encode_nonfinite,
    proportion,
    read_result,
    write_json,
)
from reports.compare import write_comparison
from reports.html import write_report
from reports.tables import parse_formats, preset_caveat, write_tables
from torchutil import BatchChoice, distributed, full_precision, is_out_of_memory, make_generator

__all__ = ["EvaluationSet", "evaluation_set", "main", "run_audit", "select_samples"]

T = TypeVar("T")


@dataclass(frozen=True)
class EvaluationSet:
    """The samples an audit evaluates.

    Attributes:
        x: images [N, C, H, W] in the model's bounds.
        y: labels [N].
        indices: positions of the samples in the test split [N] (ascending).
        dataset: the dataset they come from.
    """

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    dataset: Dataset


def select_samples(total: int, num_samples: int | None, seed: int) -> torch.Tensor:
    """A fixed, seeded choice of ``num_samples`` of ``total`` indices (all if fewer), ascending."""
    if num_samples is not None and num_samples <= 0:
        raise ValueError(f"--num-samples must be positive, got {num_samples}")
    if num_samples is None or num_samples >= total:
        return torch.arange(total, device="cpu")
    # On the CPU, where the dataset is: the same samples whatever device the audit runs on.
    generator = make_generator(seed)
    return torch.randperm(total, generator=generator, device="cpu")[:num_samples].sort().values


def evaluation_set(
    loaded: LoadedCheckpoint, data: str | None, num_samples: int | None, seed: int
) -> EvaluationSet:
    """The test samples for ``loaded``, checked against its input shape and classes."""
    spec = loaded.spec
    name = spec.dataset
    if name is None and data is None:
        raise DatasetError(
            f"{loaded.path} does not name its dataset; give --dataset NAME or --data PATH"
        )
    # The loader validates dtype, NaN/Inf, range, labels and shape against the model's.
    dataset = load_dataset(
        name or "file",
        "test",
        data,
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        bounds=spec.bounds,
    )
    indices = select_samples(len(dataset), num_samples, seed)
    return EvaluationSet(dataset.x[indices], dataset.y[indices], indices, dataset)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("robaudit", "numpy", "pyautoattack", "torchattacks", "cleverhans", "pyhessian"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def _predictions(
    model: torch.nn.Module, images: torch.Tensor, padding: torch.Tensor
) -> list[int | None]:
    """The model's prediction for each image (None for logits holding NaN or Inf, or where
    the model refuses every batch tried).

    The batch is the audit's choice, not the model's: a model that refuses this batch size
    (a TorchScript model checking its batch) is asked again with the images padded by
    ``padding`` (clean images, a batch of the size the clean pass used), then one at a time.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    images = images.to(device)
    count = len(images)
    extra = padding[: max(len(padding) - count, 0)].to(device=device, dtype=images.dtype)
    attempts = (
        lambda: model(images),
        lambda: model(torch.cat([images, extra]))[:count],
        lambda: torch.cat([model(images[i : i + 1]) for i in range(count)]),
    )
    for attempt in attempts:
        try:
            with torch.no_grad():
                labels = predict(attempt()).tolist()
        except torch.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - a refused batch size is the model's quirk
            continue
        return [None if label == NO_PREDICTION else int(label) for label in labels]
    return [None] * count


def _examples(
    outcome: NormOutcome,
    suite: SuiteResult,
    x: torch.Tensor,
    limit: int,
    model: torch.nn.Module,
    padding: torch.Tensor,
) -> list[dict[str, Any]]:
    """Up to ``limit`` adversarial examples per attack and epsilon, each the example the run
    at that epsilon returned for that sample (projected, clipped and judged by the engine),
    with the model's prediction on it (one more forward pass, for display).

    The samples the attack broke come first, then samples it attacked without breaking them,
    so that ``fooled`` can be checked both ways.
    """
    out = []
    for record in outcome.attacks:
        for k, epsilon in enumerate(outcome.epsilons):
            attacked = record.attacked[k].cpu() & suite.clean_correct.cpu()
            fooled = record.success[k].cpu()
            chosen = torch.cat([(attacked & fooled).nonzero(), (attacked & ~fooled).nonzero()])
            samples = chosen.flatten()[:limit].tolist()
            predicted = (
                _predictions(model, record.adversarial[k, samples], padding) if samples else []
            )
            for sample, prediction in zip(samples, predicted, strict=True):
                adversarial = record.adversarial[k, sample].cpu()
                dtype, exact = encode_exact(adversarial)
                _, original = encode_exact(x[sample].to(adversarial.dtype))
                out.append(
                    {
                        "attack": record.label,
                        "epsilon": epsilon,
                        "sample": sample,
                        "label": int(suite.labels[sample]),
                        "fooled": bool(fooled[sample]),
                        "predicted": prediction,
                        "margin": float(record.margin[k, sample]),
                        "success_step": int(record.success_step[k, sample]),
                        "shape": list(adversarial.shape),
                        "original": encode_image(x[sample]),
                        "adversarial": encode_image(adversarial),
                        "dtype": dtype,
                        "original_exact": original,
                        "adversarial_exact": exact,
                    }
                )
    return out


def _norm_section(
    outcome: NormOutcome,
    suite: SuiteResult,
    x: torch.Tensor,
    limit: int,
    model: torch.nn.Module,
    padding: torch.Tensor,
) -> dict[str, Any]:
    n = suite.num_samples
    attacks = []
    for record in outcome.attacks:
        stats = None if record.result is None else record.result.gradient_stats
        attacks.append(
            {
                "label": record.label,
                "kind": record.kind,
                "source": record.source,
                "status": record.status,
                "message": record.message,
                "statuses": list(record.statuses),
                "messages": list(record.messages),
                "params": {} if record.result is None else record.result.params,
                "backend": None if record.result is None else record.result.backend,
                "robust_accuracy_after": [
                    proportion(round(v * n), n) for v in record.robust_accuracy_after
                ],
                "broken": [int(v) for v in (record.success & record.attacked).sum(1)],
                "attempted": [int(v) for v in record.attacked.sum(1)],
                "success": bits(record.success),
                "attacked": bits(record.attacked),
                "last_success": bits(record.last_success),
                "success_step": plain(record.success_step),
                "mean_loss_trace": plain(record.mean_loss_trace, keep_nonfinite=True),
                "nonfinite": [int(v) for v in record.nonfinite.sum(1)],
                "nonfinite_samples": bits(record.nonfinite),
                "nonfinite_evaluations": record.nonfinite_evaluations,
                "queries": int(record.queries.sum()),
                "num_forward": 0 if record.result is None else record.result.num_forward,
                "num_backward": 0 if record.result is None else record.result.num_backward,
                "wall_time": 0.0 if record.result is None else record.result.wall_time,
                "gradient_stats": None
                if stats is None
                else {
                    "zero_fraction": stats.zero_fraction,
                    "vanishing_fraction": stats.vanishing_fraction,
                    "vanishing_threshold": stats.vanishing_threshold,
                    "nonfinite_logits": stats.nonfinite_logits,
                    "nonfinite_gradients": stats.nonfinite_gradients,
                },
            }
        )
    robust_counts = outcome.robust.sum(1).tolist()
    hit = torch.zeros_like(outcome.robust)
    for record in outcome.attacks:
        hit |= record.nonfinite.to(hit.device)
    return {
        "norm": outcome.norm.value,
        "epsilons": list(outcome.epsilons),
        "reliable_robust_accuracy": [proportion(int(c), n) for c in robust_counts],
        "robust": bits(outcome.robust),
        "robust_nonfinite": [int(v) for v in (outcome.robust & hit).sum(1)],
        "attacks": attacks,
        "unbounded_epsilon": outcome.unbounded_epsilon,
        "sweep": _sweep(outcome.sweep),
        "independent_sweep": _sweep(outcome.independent_sweep),
        "failures": [failure.to_dict() for failure in outcome.failures],
        "examples": _examples(outcome, suite, x, limit, model, padding),
    }


def _sweep(record: Any) -> dict[str, Any] | None:
    """A sweep on its own samples (all, or the independent runs' subsample)."""
    if record is None:
        return None
    columns = record.sample_index
    success = record.success[:, columns]
    return {
        "attack": record.label,
        "epsilons": list(record.epsilons),
        "success_rate": [proportion(int(b), len(columns)) for b in success.sum(1).tolist()],
        "success": bits(success),
        "samples": columns.tolist(),
        "mean_loss_trace": plain(
            record.loss_trace[:, :, columns].nanmean(dim=2), keep_nonfinite=True
        ),
    }


def run_audit(
    loaded: LoadedCheckpoint,
    evaluation: EvaluationSet,
    config: AuditConfig,
    *,
    device: torch.device,
    progress: bool = False,
    command_line: Sequence[str] = (),
    cache: UnitCache | None = None,
) -> dict[str, Any]:
    """Run every stage of the audit and return the result document (a plain dict, with NaN
    and infinite numbers already encoded as ``analysis.document`` writes them).

    With ``cache`` each finished unit of work is kept there and taken from there when it
    already holds it (``analysis.resume``): an interrupted audit resumes.

    The audit runs in full float32 (no TF32, no autocast; `torchutil.full_precision`):
    reduced precision rounds small gradients away and would look like gradient masking.
    """
    with full_precision(device):
        return _run_audit(
            loaded,
            evaluation,
            config,
            device=device,
            progress=progress,
            command_line=command_line,
            cache=cache,
        )


def _announcing(memo: Memo | None) -> Memo:
    """``memo`` (or none) saying on stderr which flatness estimator runs and how long it took:
    they take most of an audit's time, which would otherwise pass in silence."""

    def run(name: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        # flatness-<mode>-<measure>-batch=<size>: the measure and its mode.
        parts = name.rsplit("-batch=", 1)[0].split("-", 2)
        label = name
        if len(parts) == 3:
            label = f"flatness {parts[2]}{' (layers active)' if parts[1] == 'train' else ''}"
        print(f"{label} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        value, loaded = memo(name, compute) if memo is not None else (compute(), False)
        took = "resumed" if loaded else f"done in {time.perf_counter() - started:.1f} s"
        print(f"{label}: {took}", file=sys.stderr, flush=True)
        return value, loaded

    return run


def _run_audit(
    loaded: LoadedCheckpoint,
    evaluation: EvaluationSet,
    config: AuditConfig,
    *,
    device: torch.device,
    progress: bool,
    command_line: Sequence[str],
    cache: UnitCache | None,
) -> dict[str, Any]:
    started = time.time()
    model = loaded.model
    x, y = evaluation.x.to(device), evaluation.y.to(device)

    def unit(name: str, compute: Callable[[], T]) -> T:
        if cache is None:
            return compute()
        value, loaded_unit = cache.unit(name, compute, device)
        if loaded_unit and progress:
            print(f"{name}: resumed", file=sys.stderr)
        return value

    memo = None if cache is None else cache.memo(device)
    # The model is evaluated in chunks that fit the memory; the stages keep their own batches
    # (and random draws), so the chunk size changes no result (see analysis.batching).
    # Every process evaluates with rank 0's choice, so that all round alike.
    attack_choice = unit(
        "batch-attacks",
        lambda: distributed.broadcast_object(
            attack_batch(model, x, y, config.model_batch_size, config.batch_size)
        ),
    )
    chunked = ChunkedModel(model, attack_choice.size)
    # Every random draw is made on the CPU and moved to the model's device, so the same seed
    # gives the same directions, starts and probes on a CPU and on a GPU (a CUDA generator
    # would draw another stream).
    # The batches of the whole-set passes are shared out between processes; the probes of a
    # few samples are computed by each, and rank 0's are everyone's, so that all take the same
    # decisions (a stochastic model's repeats could differ between processes).
    probes = unit(
        "probes",
        lambda: distributed.broadcast_object(
            probe_model(
                chunked,
                x,
                y,
                make_generator(config.seed),
                bounds=loaded.spec.bounds,
                batch_size=config.batch_size,
            )
        ),
    )
    suite_config = config.suite.with_options(
        bounds=Bounds(*loaded.spec.bounds), batch_size=config.batch_size
    )
    if probes.stochastic:
        suite_config = for_stochastic_model(suite_config, EOT_SAMPLES)
    suite = run_suite(
        chunked, x, y, suite_config, make_generator(config.seed), progress=progress, memo=memo
    )
    flatness: dict[str, Any] | None = None
    flatness_note: str | None = None
    flatness_choice: BatchChoice | None = None
    if config.flatness is not None and probes.nonfinite_logits:
        # The estimators differentiate the loss; with NaN in it they return noise or fail.
        flatness_note = (
            f"not measured: {probes.nonfinite_logits} of {len(y)} samples have NaN or Inf "
            "clean logits, so the loss is not finite"
        )
    elif config.flatness is not None:
        count = min(config.flatness_samples, len(y))
        x_flat, y_flat = x[:count], y[:count]
        flatness_choice = unit(
            "batch-flatness",
            lambda: distributed.broadcast_object(
                flatness_batch(model, x_flat, y_flat, config.model_batch_size, count)
            ),
        )
        flatness_memo = _announcing(memo) if progress else memo
        try:
            eval_result, flatness_choice = measure_fitting(
                model, x_flat, y_flat, config.flatness, config.seed, flatness_choice, flatness_memo
            )
            flatness = eval_result.to_dict()
            # With the dropout-family layers active the loss surface is another one (for
            # NormOut orders of magnitude sharper), and papers rarely say which they report:
            # give both.
            active = active_flatness_config(config.flatness)
            flatness["active_layers"] = None
            if dropout_family_layers(model) and active.measures:
                active_result, flatness_choice = measure_fitting(
                    model, x_flat, y_flat, active, config.seed, flatness_choice, flatness_memo
                )
                flatness["active_layers"] = active_result.to_dict()
        except Exception as error:  # noqa: BLE001 - the model's own exception, recorded
            if is_out_of_memory(error):
                raise
            flatness = None
            flatness_note = (
                f"not measured: the model raised {type(error).__name__} in a flatness pass "
                f"({error_line(error)})"
            )
            print(f"warning: flatness {flatness_note}", file=sys.stderr)
    # Sums over the samples, so batched by the memory's chunk; named as in the model itself.
    activations = activation_statistics(model, x, chunked.chunk_size)
    spec = loaded.spec
    conventions = unit(
        "conventions",
        lambda: try_conventions(
            chunked,
            x,
            y,
            mean=spec.mean,
            std=spec.std,
            bounds=spec.bounds,
            batch_size=config.batch_size,
        ),
    )
    evidence = Evidence(
        suite,
        probes,
        suite_config.eot_samples,
        num_classes=spec.num_classes,
        recorded_clean_accuracy=spec.clean_accuracy,
        conventions=conventions,
    )
    findings = run_checks(evidence)
    correct = int(suite.clean_correct.sum())
    # The first batch the clean pass gave the model: a size it accepts.
    padding = x[: min(len(x), config.batch_size, chunked.chunk_size)].cpu()
    norms = [
        _norm_section(outcome, suite, x.cpu(), config.examples_per_attack, model, padding)
        for outcome in suite.norms
    ]
    document = {
        "schema_version": SCHEMA_VERSION,
        "provenance": {
            "checkpoint": str(loaded.path),
            "checkpoint_sha256": loaded.sha256,
            "weights_sha256": loaded.weights_sha256,
            "model_source": None if loaded.model_source is None else dict(loaded.model_source),
            "versions": _versions(),
            "seed": config.seed,
            "config": {**config.to_dict(), "suite": suite_config.to_dict()},
            "command_line": list(command_line),
            "started": started,
            "finished": time.time(),
            "host": platform.node(),
            "device": str(device),
            "world_size": distributed.world_size(),
            "batch_sizes": batch_provenance(
                config.model_batch_size,
                replace(attack_choice, size=chunked.chunk_size, halvings=chunked.halvings),
                flatness_choice,
            ),
        },
        "checkpoint": {**loaded.spec.to_dict(), "loading_notes": list(loaded.notes)},
        "evaluation": {
            "dataset": evaluation.dataset.name,
            "source": evaluation.dataset.source,
            "num_samples": len(y),
            "indices": evaluation.indices.tolist(),
            "labels": evaluation.y.tolist(),
            "classes": list(evaluation.dataset.classes),
        },
        "clean_accuracy": proportion(correct, len(y)),
        "clean_correct": bits(suite.clean_correct),
        "clean_nonfinite": bits(suite.clean_nonfinite),
        "robustness": {
            "eot_samples": suite_config.eot_samples,
            "norms": norms,
            "num_forward": suite.num_forward,
            "num_backward": suite.num_backward,
            "wall_time": suite.wall_time,
        },
        "flatness": flatness,
        "flatness_note": flatness_note,
        "activations": [a.to_dict() for a in activations],
        "activations_note": activations_note(model),
        "probes": probes.to_dict(),
        "findings": [f.to_dict() for f in findings],
        "verdict": verdict(findings),
    }
    return encode_nonfinite(document)  # type: ignore[no-any-return]


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
    status = attack.statuses[k] if attack.statuses is not None else attack.status
    if status == "failed":
        return f"{attack.label} failed"
    if status == "not-applicable":
        return f"{attack.label} n/a"
    return f"{attack.label} {attack.robust_accuracy_after[k].value:.3f}"


def incomplete_lines(result: AuditResult) -> list[str]:
    """One line per attack run that failed, for stderr: an incomplete evaluation is said where
    it cannot be missed, not only inside the document. Each names the error by the line of its
    message that says what failed (``core.boundary.error_line``); the document keeps it whole."""
    lines = []
    for norm in result.robustness.norms:
        for failure in norm.failures or ():
            if failure.status != "failed":
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
    flags = [f for f in result.findings if f.status in ("warn", "fail")]
    lines.append(f"  verdict: {result.verdict}")
    caveat = preset_caveat(result)
    if caveat is not None:
        lines.append(f"  caution: {caveat}")
    for finding in flags:
        lines.append(f"    [{finding.status}] {finding.code}: {finding.explanation}")
    return lines


def _parser(prog: str = "python -m analysis.audit") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    parser.add_argument(
        "--data",
        help="dataset folder or file (else the checkpoint's dataset through $ROBAUDIT_DATA)",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1000,
        help="evaluation samples, a fixed seeded selection (default 1000 or the whole test split)",
    )
    parser.add_argument(
        "--batch-size",
        default="auto",
        help="samples the model evaluates at once: auto (default: the largest that fits in "
        "half the free memory, measured) or a number; bounds memory, changes no result",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--preset",
        default="standard",
        help=f"attack suite preset: {', '.join(PRESETS)} (default standard)",
    )
    parser.add_argument(
        "--suite", type=Path, metavar="FILE.toml", help="attack suite file (see README)"
    )
    parser.add_argument("--norms", help="comma-separated norms to run: linf, l2")
    parser.add_argument(
        "--epsilons",
        help="per norm: 'linf=8/255;l2=0.5' (decimals or fractions); a bare list such as 0.1,0.2 "
        "only with one norm (--norms)",
    )
    parser.add_argument("--attacks", help="comma-separated attack labels of the suite to run")
    parser.add_argument("--backend", help="FGSM/PGD backend: native, cleverhans, torchattacks")
    parser.add_argument("--no-flatness", action="store_true", help="skip the flatness estimators")
    parser.add_argument(
        "--flatness-samples", type=int, default=500, help="samples for flatness (default 500)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="ignore the finished units an interrupted run kept in OUT/<name>/.partial/ and "
        "start over (by default the same command resumes from them)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("out"), help="output folder (default out/)"
    )
    parser.add_argument("--baseline", type=Path, help="gate the result against this baseline")
    gate.add_gate_arguments(parser, in_audit=True)
    parser.add_argument(
        "--no-report", action="store_true", help="do not write report.html beside audit.json"
    )
    parser.add_argument(
        "--tables", help="also write every table of the report beside it: csv, md or csv,md"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no summary (a failing gate still prints its one-line result on "
        "stderr)",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    add_description_arguments(parser)
    return parser


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and distributed.is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for, but no CUDA device is available; use --device cpu"
        )
    return torch.device(name)


def _suite_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "suite_file": args.suite,
        "norms": None
        if args.norms is None
        else [n.strip() for n in args.norms.split(",") if n.strip()],
        "epsilons": None if args.epsilons is None else parse_epsilons(args.epsilons),
        "attacks": None
        if args.attacks is None
        else [a.strip() for a in args.attacks.split(",") if a.strip()],
        "backend": args.backend,
    }


def _config(args: argparse.Namespace, dataset: str | None) -> AuditConfig:
    suite = build_suite(args.preset, dataset, **_suite_flags(args))
    # The attacks' own batch (their random draws are per batch): the suite file's, else the
    # default. --batch-size only chunks the model's evaluations within it.
    batch_size = DEFAULT_BATCH_SIZE if suite.batch_size is None else suite.batch_size
    return AuditConfig(
        suite=suite,
        flatness=None if args.no_flatness else flatness_config(args.preset, batch_size),
        num_samples=args.num_samples,
        flatness_samples=args.flatness_samples,
        batch_size=batch_size,
        model_batch_size=parse_batch_size(args.batch_size),
        seed=args.seed,
    )


def _check_arguments(args: argparse.Namespace) -> None:
    parse_batch_size(args.batch_size)
    for flag in ("flatness_samples", "num_samples"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ValueError(
                f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}"
            )
    if args.tables is not None:
        parse_formats(args.tables)
    if not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be an integer in [0, 2**63), got {args.seed}")
    gate.check_max_drop(args.max_drop)
    gate_flags = args.junit or args.update_baseline or args.max_drop is not None
    if (gate_flags or args.allow_different_checkpoint) and args.baseline is None:
        raise ValueError(
            "--junit, --max-drop, --update-baseline and --allow-different-checkpoint need "
            "--baseline FILE"
        )
    if args.baseline is not None and len(args.checkpoints) != 1:
        raise ValueError("--baseline gates one checkpoint at a time; give a single CHECKPOINT")
    # The suite (file and flags) is checked before any checkpoint or dataset is loaded.
    check_suite(args.preset, **_suite_flags(args))
    check_writable(args.out, "--out", folder=True)
    if args.junit is not None:
        check_writable(args.junit, "--junit")
    if args.update_baseline:
        check_writable(args.baseline, "--baseline (with --update-baseline)")
    targets: dict[Path, Path] = {}
    for path in args.checkpoints:
        target = _target(args.out, path)
        if target in targets:
            raise ValueError(
                f"checkpoints {targets[target]} and {path} would both write {target}; audit "
                "them in separate runs with different --out folders, or rename one"
            )
        targets[target] = path
        check_writable(target, f"--out (result of {path})")


def _target(out: Path, checkpoint: Path) -> Path:
    return out / checkpoint.stem / "audit.json"


def _last_line(error: BaseException) -> str:
    """The last non-empty line of an error's message: TorchScript puts its own traceback first
    and the model's message last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def check_model_outputs(loaded: LoadedCheckpoint, evaluation: EvaluationSet) -> None:
    """One forward pass on two evaluation samples, before any work: the model must map a batch
    of images to a floating-point [N, num_classes] tensor of logits.

    Raises:
        CheckpointError: it raised, or returned something else; the message says what.
    """
    spec = loaded.spec
    device = next((p.device for p in loaded.model.parameters()), torch.device("cpu"))
    x = evaluation.x[:2].to(device)
    try:
        with torch.no_grad():
            output = loaded.model(x)
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward is the finding
        raise CheckpointError(
            f"{loaded.path}: the model raised {type(err).__name__} on a batch of "
            f"{tuple(x.shape)} images: {_last_line(err)}; check --arch, --dataset and the input "
            "shape the model expects (a model that takes one image at a time needs --batch-size 1)"
        ) from None
    expected = (len(x), spec.num_classes)
    if not isinstance(output, torch.Tensor):
        raise CheckpointError(
            f"{loaded.path}: the model returned {type(output).__name__}, expected a tensor of "
            f"logits of shape {expected}; wrap it so that forward returns the logits"
        )
    if tuple(output.shape) != expected or not output.is_floating_point():
        raise CheckpointError(
            f"{loaded.path}: the model returned a {output.dtype} tensor of shape "
            f"{tuple(output.shape)} for {len(x)} images, expected floating-point logits of "
            f"shape {expected} ({spec.num_classes} classes of {spec.dataset or 'the dataset'}); "
            "give the right --num-classes or --dataset, or fix the model's last layer"
        )


def _warn_whole_box(loaded: LoadedCheckpoint, config: AuditConfig) -> None:
    """An epsilon that covers the whole input box makes a bounded attack unbounded: allowed,
    but said (the unbounded baseline exists for that)."""
    low, high = loaded.spec.bounds
    dims = math.prod(loaded.spec.input_shape)
    for norm, epsilons in config.suite.epsilons.items():
        diameter = (high - low) * (1.0 if norm.value == "linf" else math.sqrt(dims))
        covering = [e for e in epsilons if e >= diameter]
        if covering:
            print(
                f"warning: {norm.value} epsilon {covering[0]:g} covers the whole input box "
                f"(its {norm.value} diameter is {diameter:.4g}): every bounded attack is "
                "unbounded there; the suite's unbounded attack already measures that",
                file=sys.stderr,
            )


@dataclass(frozen=True)
class _Planned:
    path: Path
    loaded: LoadedCheckpoint
    evaluation: EvaluationSet
    config: AuditConfig
    target: Path


def _prepare(
    args: argparse.Namespace,
) -> tuple[torch.device, list[_Planned], AuditResult | None]:
    """Everything that can be checked before work: flags, suite, paths, checkpoints, datasets,
    model outputs, the baseline and its identity."""
    _check_arguments(args)
    device = _device(args.device)
    description = description_from_arguments(args)
    planned = []
    for path in args.checkpoints:
        loaded = load_checkpoint(path, description, args.trust_checkpoint, device)
        evaluation = evaluation_set(loaded, args.data, args.num_samples, args.seed)
        check_model_outputs(loaded, evaluation)
        config = _config(args, loaded.spec.dataset)
        planned.append(_Planned(path, loaded, evaluation, config, _target(args.out, path)))
    baseline = None
    if args.baseline is not None and not args.update_baseline:
        baseline = gate.read_baseline(args.baseline)
        only = planned[0]
        gate.check_same_evaluation(
            baseline,
            args.baseline,
            checkpoint_sha256=only.loaded.sha256,
            dataset=only.loaded.spec.dataset,
            indices=only.evaluation.indices.tolist(),
            allow_different=args.allow_different_checkpoint,
            weights_sha256=only.loaded.weights_sha256,
        )
    for plan in planned:
        say_flag_notes(plan.loaded)
        _warn_whole_box(plan.loaded, plan.config)
        costly = cost_warning(
            plan.config.suite, plan.loaded.spec.num_classes, len(plan.evaluation.y)
        )
        if costly is not None:
            print(f"warning: {plan.path}: {costly}", file=sys.stderr)
    return device, planned, baseline


def _run(args: argparse.Namespace, command_line: list[str]) -> int:
    try:
        device, planned, baseline = _prepare(args)
    except (CheckpointError, DatasetError, DocumentError, ValueError) as err:
        raise InputError(one_line(err)) from err
    with contextlib.ExitStack() as stack:
        locks = _lock_folders(planned, stack)
        return _audit_all(args, command_line, device, planned, baseline, locks)


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)
"""What ``flock`` says on a file system without file locks."""


def _lock_folders(planned: list[_Planned], stack: contextlib.ExitStack) -> dict[Path, FolderLock]:
    """Lock every checkpoint's folder before any work, so that a second audit into the same
    place is refused (status 2) instead of discarding this one's units. Under
    torch.distributed rank 0 alone locks (it alone writes), and every process learns of a
    refusal."""
    locks: dict[Path, FolderLock] = {}
    refusal = None
    folders = [plan.target.parent for plan in planned] if distributed.rank() == 0 else []
    for folder in folders:
        try:
            locks[folder] = stack.enter_context(FolderLock.acquire(folder))
        except FolderBusy as err:
            refusal = str(err)
        except OSError as err:
            if err.errno in _NO_LOCKS:
                refusal = (
                    f"{folder} cannot be locked for the audit ({one_line(err)}); give another "
                    "--out, on a file system with file locks (--fresh does not change this)"
                )
            else:  # a full disk, a quota: the lock file cannot be written
                refusal = str(output_error(folder / LOCK, "--out", err))
        if refusal is not None:
            break
    # Every process learns of a refusal, so that none waits for the others in vain.
    refusal = distributed.broadcast_object(refusal)
    if refusal is not None:
        raise InputError(refusal)
    return locks


def _audit_all(
    args: argparse.Namespace,
    command_line: list[str],
    device: torch.device,
    planned: list[_Planned],
    baseline: AuditResult | None,
    locks: dict[Path, FolderLock],
) -> int:
    status = EXIT_OK
    # Under torch.distributed every process runs the audit on its share of the samples and
    # holds the whole result; rank 0 alone reports, keeps the finished units and writes.
    first = distributed.rank() == 0
    for plan in planned:
        report = None if not args.quiet and first else (lambda line: None)
        lock = locks.get(plan.target.parent)
        if lock is not None:
            stale = lock.remove_stale_temporaries()
            if stale and report is None:
                files = "file" if len(stale) == 1 else "files"
                print(
                    f"removed {len(stale)} temporary {files} a killed run left in {lock.folder} "
                    "(its finished units are kept; --fresh discards them)",
                    file=sys.stderr,
                )
        cache = UnitCache(
            plan.target.parent / PARTIAL,
            _identity(plan, device),
            fresh=args.fresh,
            writer=first,
            report=report,
        )
        try:
            document = run_audit(
                plan.loaded,
                plan.evaluation,
                plan.config,
                device=device,
                progress=not args.quiet and first,
                command_line=command_line,
                cache=cache,
            )
        except KeyboardInterrupt:
            if first and cache.folder.exists():
                print(
                    f"finished units are kept in {cache.folder}: the same command resumes "
                    "from them (--fresh starts over)",
                    file=sys.stderr,
                )
            raise
        if not first:
            continue
        with writing(plan.target, "--out"):
            write_json(plan.target, document)
        cache.remove()
        try:
            result = read_result(plan.target)
        except DocumentError as err:
            # Not bad input: the writer and the reader disagree, an internal error (status 3).
            raise RuntimeError(f"the audit's own result does not read back: {err}") from err
        with writing(plan.target.parent, "--out"):
            written = _write_report(result, plan.target, args)
        if lock is not None:
            lock.release()  # everything in the folder is written
        if not args.quiet:
            print("\n".join(summary_lines(plan.path, result)))
            print(f"  result written to {plan.target}")
            for line in written:
                print(f"  {line}")
        # Even with --quiet: a failed attack must not pass for robustness.
        for line in incomplete_lines(result):
            print(f"{plan.path}: {line}", file=sys.stderr)
        if args.update_baseline:
            with writing(args.baseline, "--baseline (with --update-baseline)"):
                write_json(args.baseline, gate.baseline_from(document))
            if not args.quiet:
                print(f"  baseline written to {args.baseline}")
        elif baseline is not None:
            outcome = gate.compare(result, baseline, max_drop=args.max_drop)
            if args.junit:
                with writing(args.junit, "--junit"):
                    gate.write_junit(args.junit, outcome)
            if not args.quiet:
                print("\n".join(gate.report_lines(outcome)))
            if not outcome.passed:
                status = EXIT_GATE_FAILED
                if args.quiet:
                    # --quiet silences progress and the summary, never a failure.
                    print(gate.result_line(outcome), file=sys.stderr)
    if len(planned) > 1 and first:
        comparison = args.out / "comparison.html"
        formats = parse_formats(args.tables) if args.tables is not None else ()
        with writing(comparison, "--out"):
            warnings = write_comparison([plan.target for plan in planned], comparison, formats)
        if not args.quiet:
            for warning in warnings:
                print(f"warning: comparison: {warning}", file=sys.stderr)
            print(f"comparison written to {comparison}")
    return int(distributed.broadcast_object(status))


def _in_processes(args: argparse.Namespace, command_line: list[str]) -> int:
    """``_run`` in the process group torchrun describes in the environment (``WORLD_SIZE``
    above 1), else in this process alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or distributed.is_distributed():
        return _run(args, command_line)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    status = _run(args, command_line)
    # Every process waits until rank 0 has written everything. The group is not destroyed:
    # gloo's teardown sometimes aborts the process ("terminate called without an active
    # exception") even after this barrier, so `main` leaves with os._exit instead.
    torch.distributed.barrier()
    return status


def _identity(plan: _Planned, device: torch.device) -> dict[str, Any]:
    """What an audit's finished units were computed from (``analysis.resume``): a unit is
    reused only when all of it is the same."""
    evaluation = plan.evaluation
    return {
        "schema_version": SCHEMA_VERSION,
        "checkpoint_sha256": plan.loaded.sha256,
        "weights_sha256": plan.loaded.weights_sha256,
        "model_source": plan.loaded.model_source,
        "checkpoint": plan.loaded.spec.to_dict(),
        "dataset": evaluation.dataset.name,
        "source": evaluation.dataset.source,
        "indices": evaluation.indices.tolist(),
        "labels": evaluation.y.tolist(),
        "data_sha256": hashlib.sha256(
            evaluation.x.detach().cpu().contiguous().numpy().tobytes()
        ).hexdigest(),
        "config": plan.config.to_dict(),
        "device": device.type,
        "versions": _versions(),
        "source_sha256": _source_sha256(),
    }


_SOURCE_PACKAGES = ("analysis", "attacks", "checkpoints", "flatness", "torchutil")
_SOURCE_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _source_sha256(root: Path = _SOURCE_ROOT) -> str:
    """SHA-256 over the Python source of the packages (under ``root``) that compute an audit's
    units: the version number of a working copy stays the same from one change to the next,
    and a unit made by other code may not even have the shape this code expects."""
    digest = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _write_report(result: AuditResult, target: Path, args: argparse.Namespace) -> list[str]:
    """``report.html`` (unless ``--no-report``) and the ``--tables`` beside ``audit.json``,
    rendered from the document just written (``result``, read back from ``target``), as
    ``python -m reports.html`` would."""
    if args.no_report and args.tables is None:
        return []
    lines = []
    if not args.no_report:
        lines.append(f"report written to {write_report(result, target.parent / 'report.html')}")
    if args.tables is not None:
        written = write_tables(result, target.parent, parse_formats(args.tables))
        lines.append(f"tables written to {target.parent} ({len(written)} files)")
    return lines


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m analysis.audit") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("RANK", "0")) > 0:
        # Under torchrun the other processes work silently: rank 0 says everything once.
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    args = _parser(prog).parse_args(argv)
    status = run_command(
        # The provenance names the command as it was run: `robaudit ...` or
        # `python -m analysis.audit ...`.
        lambda: _in_processes(args, [*prog.split(), *argv]),
        verbose=args.verbose,
        input_errors=(InputError, CheckpointError, DatasetError, DocumentError),
    )
    if distributed.is_distributed():
        # A process of a torchrun group leaves without tearing the group down (see
        # `_in_processes`): everything it wrote is closed and renamed, so only the streams
        # remain to flush.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def script() -> int:
    """The ``robaudit`` console script: :func:`main` under its own name."""
    return main(prog="robaudit")


if __name__ == "__main__":
    sys.exit(main())
