"""The whole audit of an in-memory model in one call: ``analysis.audit_model(model, x, y)``.

The same pipeline as ``python -m analysis.audit`` (attacks, probes, flatness, activation
statistics of the dropout-family layers, red flags, verdict), for a model a researcher has in
Python rather than in a file, returning the typed result the report and the gate read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from analysis.activations import dropout_family_layers
from analysis.config import (
    DEFAULT_BATCH_SIZE,
    PRESETS,
    AuditConfig,
    build_audit_config,
    build_suite,
    parse_epsilons,
)
from analysis.epsilons import ascending_epsilons
from analysis.pipeline import EvaluationSet, check_model_outputs, run_audit, select_samples
from attacks import Norm, SuiteConfig
from checkpoints import CheckpointSpec, LoadedCheckpoint
from checkpoints.architectures import Normalized
from checkpoints.datasets import (
    UNNAMED,
    Dataset,
    DatasetError,
    check_dataset,
    load_dataset,
)
from checkpoints.format import weights_sha256
from checkpoints.layers import found_layer_spec
from checkpoints.spec import normalization_name, parse_dataset, parse_normalization
from core.document import AuditResult, write_json
from reports.html import write_report

__all__ = ["Epsilons", "audit_model"]

Epsilons = float | Sequence[float] | Mapping[str, float | Sequence[float]]
"""A number, a list (for the one norm run), or ``{"linf": ..., "l2": ...}``."""

DEFAULT_BOUNDS = (0.0, 1.0)
# Where the normalisation and the bounds came from, as the result's checkpoint description and
# the report say it: the keyword in place of the command's flag (``--normalization``).
NORMALIZATION_KEYWORD = "audit_model(normalization=...)"
BOUNDS_KEYWORD = "audit_model(bounds=...)"

_SHAPES: dict[tuple[int, ...], str] = {
    (1, 8, 8): "digits",
    (1, 28, 28): "mnist",
    (3, 32, 32): "cifar10",
}


@dataclass(frozen=True)
class _Inputs:
    x: Tensor
    y: Tensor
    dataset: Dataset


def audit_model(
    model: nn.Module,
    x: Tensor | None = None,
    y: Tensor | None = None,
    *,
    dataset: str | None = None,
    data: str | Path | None = None,
    preset: str = "standard",
    suite: str | Path | SuiteConfig | None = None,
    norms: str | Sequence[str] | None = None,
    epsilons: Epsilons | str | None = None,
    attacks: Sequence[str] | None = None,
    bounds: tuple[float, float] | None = None,
    normalization: str | tuple[Sequence[float], Sequence[float]] | None = None,
    num_samples: int | None = None,
    flatness: bool = True,
    flatness_samples: int = 500,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    name: str | None = None,
    out: str | Path | None = None,
    report: bool = True,
) -> AuditResult:
    """Audit ``model`` on ``x, y`` (or on a dataset's test split) and return the result.

    Args:
        model: any ``nn.Module`` mapping images ``[N, C, H, W]`` in ``bounds`` to logits
            ``[N, classes]``. It is evaluated in eval mode (its mode is restored afterwards)
            and is not modified; with ``device`` other than its own, a copy is moved there.
        x, y: evaluation images (float, in ``bounds``) and labels; or leave them out and name
            a ``dataset`` (its test split; ``data`` is its folder or file).
        dataset: ``digits``, ``mnist``, ``fashion-mnist`` or ``cifar10``: the data when ``x``
            is not given, and the presets' standard epsilons. With ``x`` and neither
            ``dataset`` nor ``epsilons``, it is told by the image shape (1x8x8 digits,
            1x28x28 mnist, 3x32x32 cifar10).
        data: the dataset's folder or file (else found through ``$ROBAUDIT_DATA``).
        preset: ``quick``, ``standard``, ``thesis`` or ``thorough`` (as ``--preset``).
        suite: a suite TOML file (as ``--suite``) or a ``SuiteConfig``.
        norms: ``"linf"``, ``"l2"`` or both (default: the suite's).
        epsilons: a number or a list for the one norm run, or per norm:
            ``{"linf": 8 / 255, "l2": [0.25, 0.5]}``. A number or a list for two norms is
            refused: an L∞ and an L2 radius are not the same size.
        attacks: labels of the suite's attacks to run (default all).
        bounds: the input range (pixel space; every epsilon is in it); default ``(0, 1)``.
        normalization: ``(mean, std)`` per channel, or a name (``cifar10``, ...), applied
            inside the audited model, for a model trained on normalised inputs whose
            ``forward`` does not normalise: ``x`` stays in pixel space.
        num_samples: a seeded choice of this many samples (default: all of ``x``, 1000 of a
            dataset).
        flatness: estimate flatness (Fisher-Rao norm, Hessian trace and spectrum, ...).
        flatness_samples: samples the flatness estimators use (the first of the evaluation).
        batch_size: samples the model evaluates at once (default: the largest that fits).
        seed: every random choice; equal seeds give equal results.
        device: where to run (default: the model's device).
        progress: progress on stderr (the attacks' bar, each flatness estimator).
        name: the model's name in the result and the report (default: its class name).
        out: a folder: ``out/<name>/audit.json`` (and ``report.html`` unless ``report`` is
            False) are written there, atomically.
        report: with ``out``, write the HTML report too.

    Returns:
        The typed result (``core.document.AuditResult``): ``.verdict``, ``.findings``,
        ``.clean_accuracy``, ``.robustness.norms[i].reliable_robust_accuracy``, ``.flatness``
        and the provenance, which names the model's class and the sha256 of its state_dict.

    Raises:
        ValueError: a wrong argument, said in one line before any work.

    Example:
        >>> result = audit_model(model, x, y, epsilons={"linf": 8 / 255}, flatness=False)
        >>> result.verdict, result.robustness.norms[0].reliable_robust_accuracy[0].value
    """
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise ValueError(
            f"model is the class {model.__name__}, not a model: pass an instance with its "
            f"trained weights, e.g. net = {model.__name__}(); net.load_state_dict(...)"
        )
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    dataset = parse_dataset(dataset, "dataset=")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    for label, value in (("flatness_samples", flatness_samples), ("num_samples", num_samples)):
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
    target = _device(model, device)
    box = DEFAULT_BOUNDS if bounds is None else (float(bounds[0]), float(bounds[1]))
    inputs = _inputs(x, y, dataset, data, box)
    shape = tuple(inputs.x.shape[1:])
    # The presets' standard epsilons are per dataset: named, or told by the image shape.
    named = dataset if dataset is not None else _SHAPES.get(shape)
    config = _config(
        preset,
        named,
        suite,
        norms,
        epsilons,
        attacks,
        flatness=flatness,
        flatness_samples=flatness_samples,
        # All of the given tensors unless told; 1000 of a dataset's test split, as the command.
        num_samples=num_samples if num_samples is not None or x is not None else 1000,
        batch_size=batch_size,
        seed=seed,
    )

    audited = model if target == _own_device(model) else copy.deepcopy(model).to(target)
    mean, std = _normalization(normalization, shape)
    wrapped = audited if mean is None else Normalized(audited, mean, std).to(target)
    was_training = audited.training
    wrapped.eval()
    try:
        sources = _sources(normalization, mean, std, bounds)
        loaded = _loaded(audited, wrapped, inputs, name, mean, std, box, sources)
        indices = select_samples(len(inputs.y), config.num_samples, seed)
        evaluation = EvaluationSet(inputs.x[indices], inputs.y[indices], indices, inputs.dataset)
        check_model_outputs(loaded, evaluation)
        check_dataset(inputs.dataset, loaded.spec.num_classes, shape, box)
        result = run_audit(
            loaded,
            evaluation,
            config,
            device=target,
            progress=progress,
            command_line=("audit_model",),
        )
    finally:
        audited.train(was_training)
    if out is not None:
        folder = Path(out) / str(loaded.path)
        write_json(folder / "audit.json", result.to_dict())
        if report:
            write_report(result, folder / "report.html")
    return result


def _own_device(model: nn.Module) -> torch.device:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        return _own_device(model)
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu', got {device!r}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but no CUDA device is available")
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", torch.cuda.current_device())
    return chosen


def _inputs(
    x: Tensor | None,
    y: Tensor | None,
    dataset: str | None,
    data: str | Path | None,
    bounds: tuple[float, float],
) -> _Inputs:
    if x is None and y is None:
        if dataset is None:
            raise ValueError("give the evaluation data: x and y, or dataset='mnist' (or another)")
        try:
            loaded = load_dataset(dataset, "test", data, bounds=bounds)
        except DatasetError as err:
            # The loader speaks in the command's flags; here they are keywords.
            raise DatasetError(str(err).replace("--data", "data=")) from None
        return _Inputs(loaded.x, loaded.y, loaded)
    if x is None or y is None:
        raise ValueError("give both x (images) and y (labels), or neither and a dataset")
    if data is not None:
        raise ValueError("data= names a dataset's files; with x and y given it would be unused")
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(
            f"x and y must be tensors (or NumPy arrays), got {type(x).__name__} and "
            f"{type(y).__name__}"
        )
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"x must be float images [N, C, H, W], got a {x.dtype} tensor of shape "
            f"{tuple(x.shape)}; add the channel dimension (x.unsqueeze(1)) for grey images"
        )
    if y.dim() != 1 or y.is_floating_point() or len(y) != len(x):
        raise ValueError(
            f"y must be integer labels [N] for the {len(x)} images, got a {y.dtype} tensor "
            f"of shape {tuple(y.shape)}"
        )
    if len(x) == 0:
        raise ValueError("x holds no images")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or infinite values")
    low, high = bounds
    if float(x.min()) < low or float(x.max()) > high:
        raise ValueError(
            f"x lies in [{float(x.min()):.4g}, {float(x.max()):.4g}], outside bounds "
            f"[{low:g}, {high:g}]: pass pixels (e.g. in [0, 1]) and the model's normalisation "
            "as normalization=(mean, std), or give the bounds the model takes"
        )
    source = Dataset(
        x=x.detach().cpu().float(),
        y=y.detach().cpu().long(),
        name=dataset or UNNAMED,
        split="test",
        source="tensors given to audit_model",
    )
    return _Inputs(source.x, source.y, source)


def _config(
    preset_name: str,
    dataset: str | None,
    suite: str | Path | SuiteConfig | None,
    norms: str | Sequence[str] | None,
    epsilons: Epsilons | str | None,
    attacks: Sequence[str] | None,
    *,
    flatness: bool,
    flatness_samples: int,
    num_samples: int | None,
    batch_size: int | None,
    seed: int,
) -> AuditConfig:
    """The audit's configuration from ``audit_model``'s keywords: the suite from them, then
    ``analysis.config.build_audit_config``, as the command does from its flags."""
    wanted = [norms] if isinstance(norms, str) else None if norms is None else list(norms)
    if isinstance(suite, SuiteConfig):
        if attacks is not None:
            raise ValueError("attacks= narrows a preset or a suite file; edit the SuiteConfig")
        built = suite
        if built.batch_size is None:
            built = built.with_options(batch_size=DEFAULT_BATCH_SIZE)
        if epsilons is not None:
            built = built.with_options(epsilons=_epsilons(epsilons, built.norms, wanted))
        if wanted is not None:
            chosen = [Norm.parse(n) for n in wanted]
            missing = [n.value for n in chosen if n not in built.epsilons]
            if missing:
                raise ValueError(f"norms {missing}: the suite has no epsilons for them")
            built = built.with_options(epsilons={n: built.epsilons[n] for n in chosen})
    else:
        path = None if suite is None else Path(suite)
        per_norm = None
        if epsilons is not None:
            # Which norms a bare number would apply to: the suite's (all, for a preset).
            norms_run = build_suite(preset_name, dataset or "cifar10", suite_file=path).norms
            per_norm = _epsilons(epsilons, norms_run, wanted)
        built = build_suite(
            preset_name,
            dataset,
            suite_file=path,
            norms=wanted,
            epsilons=per_norm,
            attacks=None if attacks is None else list(attacks),
        )
    return build_audit_config(
        built,
        preset_name,
        flatness=flatness,
        num_samples=num_samples,
        flatness_samples=flatness_samples,
        model_batch_size=batch_size,
        seed=seed,
    )


def _epsilons(
    epsilons: Epsilons | str, suite_norms: Sequence[Norm | str], wanted: list[str] | None
) -> dict[Norm, tuple[float, ...]]:
    """Per-norm ascending epsilons from a number, a list, a mapping or the command's text
    (``"linf=8/255;l2=0.5"``)."""
    given = epsilons  # as the caller wrote it, for a message to echo ("8/255", not 0.0313...)
    if isinstance(epsilons, str):
        parsed = parse_epsilons(epsilons)
        epsilons = (
            {norm.value: values for norm, values in parsed.items()}
            if isinstance(parsed, dict)
            else list(parsed)
        )
    if isinstance(epsilons, Mapping):
        out = {}
        for norm, values in epsilons.items():
            out[Norm.parse(norm)] = _ascending(values, f"epsilons[{norm!r}]")
        if wanted is not None:
            missing = [n for n in wanted if Norm.parse(n) not in out]
            if missing:
                raise ValueError(f"norms {missing} have no epsilons in {dict(epsilons)}")
        return out
    norms = [Norm.parse(n) for n in (wanted if wanted is not None else suite_norms)]
    if len(norms) != 1:
        raise ValueError(
            f"epsilons={given!r} would apply to both L∞ and L2, whose radii differ in size; "
            "give them per norm, epsilons={'linf': 8 / 255, 'l2': 0.5}, or choose one norm "
            "with norms='linf'"
        )
    return {norms[0]: _ascending(epsilons, "epsilons")}


def _ascending(values: float | Sequence[float], origin: str) -> tuple[float, ...]:
    """A number or a list as floats, checked by the audit's rule for a user's epsilons
    (``analysis.epsilons.ascending_epsilons``, as ``--epsilons`` and a suite file)."""
    listed = [values] if isinstance(values, (int, float)) else list(values)
    try:
        numbers = tuple(float(v) for v in listed)
    except (TypeError, ValueError):
        raise ValueError(f"{origin} must be numbers, got {values!r}") from None
    return ascending_epsilons(numbers, origin)


def _normalization(
    value: str | tuple[Sequence[float], Sequence[float]] | None, shape: tuple[int, ...]
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        parsed = parse_normalization(value, "normalization")
    else:
        try:
            mean, std = value
        except (TypeError, ValueError):
            raise ValueError(
                f"normalization must be (mean, std) or a name, got {value!r}"
            ) from None
        parsed = parse_normalization({"mean": list(mean), "std": list(std)}, "normalization")
    if parsed in (None, "none"):
        return None, None
    if not isinstance(parsed, tuple):
        raise ValueError(f"normalization {value!r} names no statistics; give (mean, std)")
    mean, std = parsed
    if len(mean) not in (1, shape[0]):
        raise ValueError(
            f"normalization has {len(mean)} channels, the images {shape[0]}; give one value or "
            "one per channel"
        )
    return tuple(mean), tuple(std)


def _sources(
    normalization: object,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    bounds: object,
) -> tuple[str, str]:
    """Where the normalisation and the bounds came from, in the command's words (``--normalization
    (imagenet)``, ``not given``, ``default``) with the keyword in place of the flag."""
    if normalization is None:
        origin = "not given"
    else:
        origin = NORMALIZATION_KEYWORD
        named = normalization_name(mean, std)
        if named is not None:
            origin += f" ({named})"
    return origin, "default" if bounds is None else BOUNDS_KEYWORD


def _loaded(
    model: nn.Module,
    wrapped: nn.Module,
    inputs: _Inputs,
    name: str | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    bounds: tuple[float, float],
    sources: tuple[str, str],
) -> LoadedCheckpoint:
    """The in-memory model as the audit takes a loaded checkpoint: named by its class, hashed
    by its state_dict (the hash stands in for the file's, so that a later audit of the same
    weights gates against this one)."""
    cls = type(model)
    label = name or cls.__name__
    if not label or "/" in label or label in (".", ".."):
        raise ValueError(f"name must be a plain file name, got {label!r}")
    with torch.no_grad():
        logits = wrapped(inputs.x[:2].to(_own_device(model)))
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError(
            f"the model returned {type(logits).__name__} "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else ''} for 2 images; it "
            "must return logits [N, classes]"
        )
    # The network's weights, as a file's loader hashes them: inside the toolkit's own
    # normalising wrapper (a loaded checkpoint's model) they are the wrapped network's.
    network = model.net if isinstance(model, Normalized) else model
    digest = weights_sha256(network.state_dict())
    kinds = [kind for _, kind in dropout_family_layers(model)]
    spec = CheckpointSpec(
        arch=f"{cls.__module__}.{cls.__qualname__}",
        num_classes=int(logits.shape[1]),
        input_shape=tuple(int(s) for s in inputs.x.shape[1:]),  # type: ignore[arg-type]
        layer=found_layer_spec(model),
        dataset=inputs.dataset.name if inputs.dataset.name != UNNAMED else None,
        mean=mean,
        std=std,
        bounds=(float(bounds[0]), float(bounds[1])),
        source_format="in-memory",
        normalization_source=sources[0],
        bounds_source=sources[1],
    )
    notes = (f"in-memory model {spec.arch}; its dropout-family layers: {kinds or 'none'}",)
    return LoadedCheckpoint(wrapped, spec, Path(label), digest, digest, notes)
