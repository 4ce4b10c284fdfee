"""Our self-describing checkpoint format: writing it, and reading it back with every field
validated and a given description checked against what the file records.

A file of ours records its architecture, layers, data, normalisation and bounds beside the
weights and their sha256. A description (flags, sidecar) given for it restates the file
(accepted), is applied with a note (``--dataset``), or is refused with the recorded value
named; it is never ignored.
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from checkpoints.architectures import get_architecture
from checkpoints.checkfile import (
    CheckpointError,
    check_tensors,
    show_value,
    tensor_mapping,
    weights_sha256,
)
from checkpoints.given import Given, show_normalization
from checkpoints.layers import LayerSpec, layer_defaults
from checkpoints.spec import CheckpointSpec, parse_bounds, parse_normalization
from core.boundary import atomic_write_bytes

FORMAT_NAME = "robaudit-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, network: nn.Module, spec: CheckpointSpec) -> Path:
    """Write ``network``'s weights and ``spec`` in our format, atomically.

    Args:
        path: destination file.
        network: the bare network (not the :class:`Normalized` wrapper) built for ``spec``.
        spec: its description; ``spec.training`` and ``spec.clean_accuracy`` are stored too.

    Returns:
        The path written.
    """
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": spec.arch,
        "arch_kwargs": dict(spec.arch_kwargs),
        "layer": spec.layer.to_dict(),
        "dataset": spec.dataset,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "normalization": None
        if spec.mean is None
        else {"mean": list(spec.mean), "std": list(spec.std or ())},
        "bounds": list(spec.bounds),
        "training": dict(spec.training),
        "clean_accuracy": spec.clean_accuracy,
        "weights_sha256": weights_sha256(state),
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(document, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


RESAVE_ADVICE = "re-save it with save_checkpoint (python -m checkpoints.train writes this format)"


def document_error(path: Path, name: str, expected: str, value: Any) -> CheckpointError:
    return CheckpointError(
        f"{path}: field {name!r} of the {FORMAT_NAME} file must be {expected}, got "
        f"{'nothing (missing)' if value is _MISSING else show_value(value)}; {RESAVE_ADVICE}"
    )


_MISSING = object()


def spec_from_document(doc: Mapping[str, Any], path: Path) -> CheckpointSpec:
    """Validate every field of our format and build its spec; CheckpointError names the field."""
    from checkpoints.architectures import architecture_names
    from checkpoints.layers import layer_kinds

    version = doc.get("format_version")
    if not _is_whole(version) or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r} is not supported (this toolkit reads version "
            f"{FORMAT_VERSION}); upgrade the toolkit or re-save the checkpoint"
        )
    arch = doc.get("arch", _MISSING)
    if not isinstance(arch, str) or arch not in architecture_names():
        raise document_error(path, "arch", f"one of {', '.join(architecture_names())}", arch)
    classes = doc.get("num_classes", _MISSING)
    if not _is_whole(classes) or classes < 2:
        raise document_error(path, "num_classes", "a whole number of at least 2", classes)
    shape = doc.get("input_shape", _MISSING)
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(_is_whole(v) and v > 0 for v in shape)
    ):
        raise document_error(path, "input_shape", "three positive whole numbers [C, H, W]", shape)
    layer = doc.get("layer")
    if layer is not None and not isinstance(layer, Mapping):
        raise document_error(path, "layer", "a table (kind, params, positions)", layer)
    layer = layer or {}
    kind = layer.get("kind", "none")
    if not isinstance(kind, str) or kind not in layer_kinds():
        raise document_error(path, "layer.kind", f"one of {', '.join(layer_kinds())}", kind)
    params = layer.get("params")
    if params is not None and not (
        isinstance(params, Mapping) and all(isinstance(k, str) for k in params)
    ):
        raise document_error(path, "layer.params", "a table of named values", params)
    positions = layer.get("positions")
    if positions is not None and not (
        isinstance(positions, list | tuple) and all(_is_whole(p) and p >= 0 for p in positions)
    ):
        raise document_error(
            path, "layer.positions", "a list of non-negative module indices", positions
        )
    arch_kwargs = doc.get("arch_kwargs")
    if arch_kwargs is not None and not (
        isinstance(arch_kwargs, Mapping) and all(isinstance(k, str) for k in arch_kwargs)
    ):
        raise document_error(path, "arch_kwargs", "a table of named values", arch_kwargs)
    dataset = doc.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise document_error(path, "dataset", "a dataset name or None", dataset)
    training = doc.get("training")
    if training is not None and not isinstance(training, Mapping):
        raise document_error(path, "training", "a table", training)
    accuracy = doc.get("clean_accuracy")
    if accuracy is not None and not (
        isinstance(accuracy, int | float) and not isinstance(accuracy, bool) and 0 <= accuracy <= 1
    ):
        raise document_error(path, "clean_accuracy", "a fraction in [0, 1] or None", accuracy)
    bounds = doc.get("bounds", (0.0, 1.0))
    if not isinstance(bounds, list | tuple):
        raise document_error(path, "bounds", "a list [LOW, HIGH]", bounds)
    norm = doc.get("normalization")
    if norm is not None and not isinstance(norm, Mapping):
        raise document_error(path, "normalization", "a table with mean and std, or None", norm)
    try:
        normalization = parse_normalization(norm, f"{path}: field 'normalization'")
        parsed_bounds = parse_bounds(bounds, f"{path}: field 'bounds'")
        layer_spec = LayerSpec.from_dict(layer)
    except (ValueError, TypeError) as err:
        text = str(err) if str(err).startswith(str(path)) else f"{path}: field 'layer': {err}"
        raise CheckpointError(f"{text}; {RESAVE_ADVICE}") from None
    mean, std = normalization if isinstance(normalization, tuple) else (None, None)
    if mean is not None and len(mean) not in (1, shape[0]):
        raise document_error(
            path, "normalization", f"one value per input channel ({shape[0]}) or a single one", norm
        )
    return CheckpointSpec(
        arch=arch,
        num_classes=classes,
        input_shape=(shape[0], shape[1], shape[2]),
        layer=layer_spec,
        arch_kwargs=dict(arch_kwargs or {}),
        dataset=dataset,
        mean=mean,
        std=std,
        bounds=parsed_bounds or (0.0, 1.0),
        training=dict(training or {}),
        clean_accuracy=None if accuracy is None else float(accuracy),
        source_format="robaudit",
    )


def our_weights(doc: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    state = doc.get("state_dict", _MISSING)
    weights = tensor_mapping(state)
    if weights is None:
        raise document_error(path, "state_dict", "a non-empty table of names to tensors", state)
    check_tensors(weights, path, "state_dict entry ")
    return weights


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return values * channels if len(values) == 1 else values


def _same_values(a: tuple[float, ...], b: tuple[float, ...], channels: int) -> bool:
    a, b = _per_channel(a, channels), _per_channel(b, channels)
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b, strict=True)
    )


def _same_layer(given: LayerSpec, recorded: LayerSpec) -> bool:
    """``given`` restates ``recorded``: same kind, the parameters it names equal (defaults
    filled in), the positions it names equal."""
    if given.kind != recorded.kind:
        return False
    if given.kind != "none":
        full = {**layer_defaults(recorded.kind), **recorded.params}
        if any(full.get(k) != v for k, v in given.params.items()):
            return False
    return given.positions is None or given.positions == recorded.positions


def _refused(path: Path, origin: str, shown: str, recorded: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path} records {recorded}, but {origin} {shown} was given: {why}; drop {origin} "
        "(this file describes itself)"
    )


def apply_overrides(
    spec: CheckpointSpec, given: Given, path: Path
) -> tuple[CheckpointSpec, list[str]]:
    """A description given for a file of ours: each field restates the file (accepted), is
    applied with a note (``--dataset``), or is refused with the recorded value named.

    ``--model`` is applied by the caller (it replaces the recorded architecture).

    Returns:
        The spec and the notes for stderr.
    """
    flags = given.merged
    notes: list[str] = []
    trained = "the weights were trained for the recorded one"
    if flags.arch is not None and flags.arch != spec.arch:
        raise _refused(path, given.origin("arch"), flags.arch, f"arch {spec.arch}", trained)
    if flags.num_classes is not None and flags.num_classes != spec.num_classes:
        raise _refused(
            path,
            given.origin("num_classes"),
            str(flags.num_classes),
            f"num_classes {spec.num_classes}",
            trained,
        )
    shape = spec.input_shape
    if flags.input_shape is not None and tuple(flags.input_shape) != shape:
        raise _refused(
            path,
            given.origin("input_shape"),
            ",".join(map(str, flags.input_shape)),
            f"input shape {','.join(map(str, shape))}",
            trained,
        )
    if flags.arch_kwargs is not None:
        build = get_architecture(spec.arch).build
        for key, value in flags.arch_kwargs.items():
            takes, default = _builder_default(build, key)
            recorded = spec.arch_kwargs.get(key, default)
            if key not in spec.arch_kwargs and not takes:
                raise _refused(
                    path,
                    given.origin("arch_kwargs"),
                    f"{key}={value}",
                    f"arch {spec.arch}, which takes no {key}",
                    trained,
                )
            if recorded != value:
                raise _refused(
                    path,
                    given.origin("arch_kwargs"),
                    f"{key}={value}",
                    f"{spec.arch} {key}={recorded}",
                    trained,
                )
    if flags.layer is not None and not _same_layer(flags.layer, spec.layer):
        raise _refused(
            path,
            given.origin("layer"),
            str(flags.layer),
            f"layers {spec.layer}",
            "other layers would audit another model than the one trained",
        )
    norm = flags.normalization
    if norm is not None and norm != "default":
        if isinstance(norm, str):
            same = spec.mean is None  # "none"
        else:
            same = (
                spec.mean is not None
                and spec.std is not None
                and _same_values(norm[0], spec.mean, shape[0])
                and _same_values(norm[1], spec.std, shape[0])
            )
        if not same:
            shown = norm if isinstance(norm, str) else show_normalization(norm[0], norm[1])
            raise _refused(
                path,
                given.origin("normalization"),
                shown,
                f"normalization {show_normalization(spec.mean, spec.std)}",
                "the model was trained with the recorded normalization, which is inside it",
            )
    if flags.bounds is not None and tuple(flags.bounds) != tuple(spec.bounds):
        raise _refused(
            path,
            given.origin("bounds"),
            f"{flags.bounds[0]:g},{flags.bounds[1]:g}",
            f"input bounds {spec.bounds[0]:g},{spec.bounds[1]:g}",
            "the model takes inputs in the recorded range",
        )
    if flags.dataset is not None and flags.dataset != spec.dataset:
        recorded = f"dataset {spec.dataset}" if spec.dataset else "no dataset"
        notes.append(
            f"{path} records {recorded}; {given.origin('dataset')} {flags.dataset} is applied: "
            f"the audit evaluates on {flags.dataset}"
        )
        spec = replace(spec, dataset=flags.dataset)
    return spec, notes


def _builder_default(build: Any, key: str) -> tuple[bool, Any]:
    """Whether a registered builder names the keyword argument ``key``, and its default (None
    when it has none)."""
    try:
        parameter = inspect.signature(build).parameters.get(key)
    except (TypeError, ValueError):
        return False, None
    if parameter is None:
        return False, None
    return True, None if parameter.default is inspect.Parameter.empty else parameter.default
