"""The audit pipeline: :func:`run_audit` takes a loaded checkpoint and an evaluation set and
returns the typed result (attacks, probes, flatness, activation statistics, red flags,
verdict), each section the record a stage returns or one built here from it: the robustness
section from the suite's tensors (``analysis.robustness``), the checkpoint's from its spec
(``LoadedCheckpoint.info``), the provenance from the batch sizes the stages ran at
(``ChunkedModel.batch``, ``analysis.batching.measure_fitting``) and the configuration as run.
The command line (``commands.audit``) and ``audit_model`` (``analysis.api``) drive it and write
``result.to_dict()``.

The stages, in the order ``run_audit`` runs them:

1. ``analysis.batching.attack_batch``: the batch the model is evaluated in (``ChunkedModel``).
2. ``analysis.probes.probe_model``: the probes (a stochastic model's suite then averages
   gradients, ``attacks.presets.for_stochastic_model``).
3. ``attacks.suite.run_suite``: the attack suite.
4. ``analysis.batching.measure_fitting`` (``flatness.suite.measure`` at a batch that fits, with
   ``analysis.batching.flatness_batch`` choosing it): flatness, again with the dropout-family
   layers active where the model has any.
5. ``analysis.activations.activation_statistics``: the activation statistics.
6. ``analysis.conventions.try_conventions``: the clean accuracy in other input conventions.
7. ``analysis.redflags.run_checks``: the checks on the evidence, and their ``verdict``.
8. ``analysis.robustness.norm_section``: the robustness section's records, per norm.
9. ``core.document.AuditResult``: the typed result, its lengths checked as a document's.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any, TypeVar

import torch

from analysis.activations import activation_statistics, activations_note, dropout_family_layers
from analysis.batching import (
    FlatnessUnit,
    attack_batch,
    flatness_batch,
    measure_fitting,
)
from analysis.config import (
    EOT_SAMPLES,
    AuditConfig,
    active_flatness_config,
)
from analysis.conventions import try_conventions
from analysis.probes import probe_model
from analysis.redflags import Evidence, run_checks
from analysis.resume import UnitCache
from analysis.robustness import bit_rows, norm_section
from attacks import Bounds, ChunkedModel, SuiteConfig, run_suite
from attacks.presets import for_stochastic_model
from checkpoints import CheckpointError, LoadedCheckpoint
from checkpoints.datasets import Dataset, DatasetError, load_dataset
from core.boundary import (
    error_line,
)
from core.checks import verdict
from core.document import (
    SCHEMA_VERSION,
    AuditResult,
    BatchSize,
    BatchSizes,
    DocumentError,
    Evaluation,
    FlatnessResult,
    Proportion,
    Provenance,
    Robustness,
    as_read,
)
from torchutil import (
    Memo,
    computed,
    distributed,
    full_precision,
    is_out_of_memory,
    make_generator,
)

__all__ = ["EvaluationSet", "check_model_outputs", "evaluation_set", "run_audit", "select_samples"]

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


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("robaudit", "numpy", "pyautoattack", "torchattacks", "cleverhans", "pyhessian"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def run_audit(
    loaded: LoadedCheckpoint,
    evaluation: EvaluationSet,
    config: AuditConfig,
    *,
    device: torch.device,
    progress: bool = False,
    command_line: Sequence[str] = (),
    cache: UnitCache | None = None,
) -> AuditResult:
    """Run every stage of the audit and return its typed result; ``result.to_dict()`` is the
    document ``write_json`` writes, and what ``read_result`` reads back from it equals
    ``result``.

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


def _flatness_memo(memo: Memo[str], progress: bool) -> Memo[FlatnessUnit]:
    """The flatness units kept in ``memo`` under their names; with ``progress``, saying on
    stderr which flatness estimator runs and how long it took: they take most of an audit's
    time, which would otherwise pass in silence."""

    def run(unit: FlatnessUnit, compute: Callable[[], T], /) -> tuple[T, bool]:
        if not progress:
            return memo(unit.name, compute)
        print(f"{unit.label} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        value, loaded = memo(unit.name, compute)
        took = "resumed" if loaded else f"done in {time.perf_counter() - started:.1f} s"
        print(f"{unit.label}: {took}", file=sys.stderr, flush=True)
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
) -> AuditResult:
    started = time.time()
    model = loaded.model
    x, y = evaluation.x.to(device), evaluation.y.to(device)

    # Every unit of the audit (see analysis.resume) goes through one memo: the cache's, or
    # without one a memo that keeps nothing.
    memo: Memo[str] = computed if cache is None else cache.memo(device)

    def unit(name: str, compute: Callable[[], T]) -> T:
        value, loaded_unit = memo(name, compute)
        if loaded_unit and progress:
            print(f"{name}: resumed", file=sys.stderr)
        return value

    # The model is evaluated in chunks that fit the memory; the stages keep their own batches
    # (and random draws), so the chunk size changes no result (see analysis.batching).
    # Every process evaluates with rank 0's choice, so that all round alike.
    attack_choice = unit(
        "batch-attacks",
        lambda: distributed.broadcast_object(
            attack_batch(model, x, y, config.model_batch_size, config.batch_size)
        ),
    )
    chunked = ChunkedModel(model, attack_choice)
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
    flatness: FlatnessResult | None = None
    flatness_note: str | None = None
    flatness_choice: BatchSize | None = None
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
        flatness_memo = _flatness_memo(memo, progress)
        try:
            flatness, flatness_choice = measure_fitting(
                model, x_flat, y_flat, config.flatness, config.seed, flatness_choice, flatness_memo
            )
            # With the dropout-family layers active the loss surface is another one (for
            # NormOut orders of magnitude sharper), and papers rarely say which they report:
            # give both.
            active = active_flatness_config(config.flatness)
            if dropout_family_layers(model) and active.measures:
                active_result, flatness_choice = measure_fitting(
                    model, x_flat, y_flat, active, config.seed, flatness_choice, flatness_memo
                )
                flatness = replace(flatness, active_layers=active_result)
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
    norms = tuple(
        norm_section(outcome, suite, x.cpu(), config.examples_per_attack, model, padding)
        for outcome in suite.norms
    )
    source = str(loaded.path)
    provenance = Provenance(
        checkpoint=source,
        checkpoint_sha256=loaded.sha256,
        weights_sha256=loaded.weights_sha256,
        model_source=loaded.model_source,
        versions=as_read(package_versions()),
        seed=config.seed,
        config=_config_as_run(config, suite_config),
        command_line=tuple(command_line),
        started=started,
        finished=time.time(),
        host=platform.node(),
        device=str(device),
        world_size=distributed.world_size(),
        batch_sizes=BatchSizes(
            requested=config.model_batch_size, attacks=chunked.batch, flatness=flatness_choice
        ),
    )
    try:
        result = AuditResult(
            schema_version=SCHEMA_VERSION,
            baseline=False,
            provenance=provenance,
            checkpoint=loaded.info(),
            evaluation=Evaluation(
                dataset=evaluation.dataset.name,
                source=evaluation.dataset.source,
                num_samples=len(y),
                indices=tuple(evaluation.indices.tolist()),
                labels=tuple(evaluation.y.tolist()),
                classes=tuple(evaluation.dataset.classes),
            ),
            clean_accuracy=Proportion.of(correct, len(y)),
            clean_correct=bit_rows(suite.clean_correct[None])[0],
            clean_nonfinite=bit_rows(suite.clean_nonfinite[None])[0],
            robustness=Robustness(
                eot_samples=suite_config.eot_samples,
                norms=norms,
                num_forward=suite.num_forward,
                num_backward=suite.num_backward,
                wall_time=as_read(suite.wall_time),
            ),
            flatness=flatness,
            flatness_note=flatness_note,
            activations=tuple(activations),
            activations_note=activations_note(model),
            probes=probes,
            findings=tuple(findings),
            verdict=verdict(findings),
        )
        return result.checked(source)
    except DocumentError as err:
        # Not bad input: the pipeline and the declarations disagree, an internal error.
        raise RuntimeError(f"the audit's own result does not read back: {err}") from err


def _config_as_run(config: AuditConfig, suite: SuiteConfig) -> Mapping[str, Any]:
    """``provenance.config``: the audit's configuration (``AuditConfig.to_dict``) with the
    suite as it ran (the model's bounds and the audit's batch, EOT for a stochastic model)
    in place of the one asked for."""
    return as_read(replace(config, suite=suite).to_dict())


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
            f"{tuple(x.shape)} images: {error_line(err)}; check --arch, --dataset and the input "
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
