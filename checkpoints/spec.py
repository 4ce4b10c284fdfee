"""What a checkpoint is: architecture, layers, data, normalisation (:class:`CheckpointSpec`).

A :class:`Description` is the partial form that a sidecar TOML/JSON file or command-line flags
give for a file that does not describe itself; loading fills the gaps from dataset defaults
and from the weights (``checkpoints.foreign`` for a file of weights, ``checkpoints.codemodels``
for the user's own class; ``checkpoints.format.load_checkpoint`` is the entry point).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from checkpoints.layers import LayerSpec
from checkpoints.usermodel import ModelReference, parse_model_kwargs, parse_model_reference
from core.boundary import load_json, load_toml

__all__ = [
    "DATASET_DEFAULTS",
    "NAMED_NORMALIZATIONS",
    "NORMOUT_CIFAR10_MEAN",
    "NORMOUT_CIFAR10_STD",
    "CheckpointSpec",
    "Description",
    "normalization_name",
    "read_sidecar",
    "sidecar_path",
]

# The normalisation the NormOut code applies to CIFAR-10; default for its VGG layouts.
NORMOUT_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
NORMOUT_CIFAR10_STD = (0.2023, 0.1994, 0.2010)
NORMOUT_LAYOUT_ARCHS = ("vgg16_bn", "vgg16")

Normalization = tuple[tuple[float, ...], tuple[float, ...]]

NAMED_NORMALIZATIONS: dict[str, Normalization] = {
    # The NormOut code's values (its std is a widespread miscopy of the per-pixel one).
    "cifar10": (NORMOUT_CIFAR10_MEAN, NORMOUT_CIFAR10_STD),
    # The per-channel mean and std of the CIFAR-10 training images, as most CIFAR-10 code
    # passes them to torchvision's Normalize.
    "cifar10-torchvision": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307,), (0.3081,)),
}
"""Normalisations accepted by name (``--normalization NAME``, ``normalization = "NAME"``):
per-channel (mean, std) of [0, 1] pixels."""

# name -> (input shape, number of classes)
DATASET_DEFAULTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


@dataclass(frozen=True)
class CheckpointSpec:
    """Everything needed to rebuild a model and evaluate it.

    Attributes:
        arch: registered architecture name (``torchscript`` or ``pickled-module`` for files that
            carry their own graph).
        num_classes: number of output logits.
        input_shape: (C, H, W) of one input.
        layer: dropout-family layer kind, parameters and positions.
        arch_kwargs: extra architecture arguments (for example ``widen_factor``).
        dataset: name of the evaluation dataset, or None if unknown.
        mean, std: per-channel normalisation applied inside the model, or None.
        bounds: valid input range (pixel space).
        training: training configuration (primitives only).
        clean_accuracy: accuracy recorded when the file was written, or None.
        source_format: how the file was read (``robaudit``, ``state_dict``, ``lightning``,
            ``torchvision-vgg``, ``torchscript``, ``pickled-module``).
        normalization_source, bounds_source: where ``mean``/``std`` and ``bounds`` came from
            (the file, a flag, a sidecar, a default), in words; "" when not said.
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    layer: LayerSpec = field(default_factory=LayerSpec)
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    training: Mapping[str, Any] = field(default_factory=dict)
    clean_accuracy: float | None = None
    source_format: str = "robaudit"
    normalization_source: str = field(default="", compare=False)
    bounds_source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the layer as a dict)."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "layer": self.layer.to_dict(),
            "arch_kwargs": dict(self.arch_kwargs),
            "dataset": self.dataset,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "bounds": list(self.bounds),
            "training": dict(self.training),
            "clean_accuracy": self.clean_accuracy,
            "source_format": self.source_format,
            "normalization_source": self.normalization_source,
            "bounds_source": self.bounds_source,
        }


@dataclass(frozen=True)
class Description:
    """A partial description of a checkpoint (from a sidecar file or flags); None = not given.

    ``normalization`` is ``"none"``, ``"default"`` or ``(mean, std)``. ``model`` names the
    user's own code that builds the network (``checkpoints.usermodel``), called with
    ``model_kwargs``.
    """

    arch: str | None = None
    layer: LayerSpec | None = None
    arch_kwargs: Mapping[str, Any] | None = None
    dataset: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None
    normalization: str | tuple[tuple[float, ...], tuple[float, ...]] | None = None
    bounds: tuple[float, float] | None = None
    model: ModelReference | None = None
    model_kwargs: Mapping[str, Any] | None = None

    def merged_over(self, base: Description) -> Description:
        """This description, with ``base`` filling what this one leaves out."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in values.items() if v is not None})

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], origin: str, base: Path | None = None
    ) -> Description:
        """Build from a sidecar's table; ``origin`` names it in error messages; a relative
        ``model = "FILE.py:NAME"`` is relative to ``base`` (the sidecar's folder)."""
        known = {f.name for f in fields(cls)} | {"layers"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{origin}: unknown key(s) {unknown}; known keys: {sorted(known)}")
        for key in ("arch", "dataset"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(
                    f"{origin}: {key!r} must be a name (a string), got {data[key]!r} "
                    f"({type(data[key]).__name__}); write it in quotes"
                )
        arch_kwargs = data.get("arch_kwargs")
        if arch_kwargs is not None and not isinstance(arch_kwargs, Mapping):
            raise ValueError(
                f"{origin}: 'arch_kwargs' must be a table of named values, got "
                f"{type(arch_kwargs).__name__}; write it as [arch_kwargs] with key = value lines"
            )
        layer = data.get("layers", data.get("layer"))
        try:
            if isinstance(layer, str):
                layer = LayerSpec.parse(layer)
            elif isinstance(layer, Mapping):
                layer = LayerSpec.from_dict(layer)
            elif layer is not None:
                raise ValueError(
                    f"must be a string like 'normout:spatial@0,1' or a table, got "
                    f"{type(layer).__name__}"
                )
        except (ValueError, TypeError) as err:
            raise ValueError(f"{origin}: 'layers': {err}") from None
        model = data.get("model")
        return cls(
            arch=data.get("arch"),
            model=None
            if model is None
            else parse_model_reference(model, f"{origin}: 'model'", base),
            model_kwargs=parse_model_kwargs(data.get("model_kwargs"), f"{origin}: 'model_kwargs'"),
            layer=layer,
            arch_kwargs=arch_kwargs,
            dataset=parse_dataset(data.get("dataset"), f"{origin}: 'dataset'"),
            num_classes=parse_num_classes(data.get("num_classes"), origin),
            input_shape=parse_shape(data.get("input_shape"), origin),
            normalization=parse_normalization(data.get("normalization"), origin),
            bounds=parse_bounds(data.get("bounds"), origin),
        )


def _whole(value: Any) -> int:
    """``value`` as an int: an int, a float without fraction, or a string of digits."""
    if isinstance(value, bool):
        raise TypeError("a truth value is not a size")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    if isinstance(value, int | str):
        return int(value)
    raise TypeError(f"{type(value).__name__} is not a number")


def parse_dataset(value: Any, origin: str) -> str | None:
    """A dataset name of ``DATASET_DEFAULTS`` (any case), or None; ValueError for another: a
    misspelt name must not pass for "no dataset given"."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"{origin}: the dataset must be a name (a string), got {value!r} "
            f"({type(value).__name__}); write it in quotes"
        )
    name = value.strip().lower()
    if name not in DATASET_DEFAULTS:
        raise ValueError(
            f"{origin}: unknown dataset {value!r}; known: {', '.join(DATASET_DEFAULTS)} (for "
            "other data give --data FILE with --input-shape C,H,W and --num-classes N)"
        )
    return name


def parse_num_classes(value: Any, origin: str) -> int | None:
    """A number of classes (at least 2), or None when not given."""
    if value is None:
        return None
    try:
        classes = _whole(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{origin}: num_classes must be a whole number, got {value!r}; write e.g. 10"
        ) from None
    if classes < 2:
        raise ValueError(f"{origin}: num_classes must be at least 2, got {classes}")
    return classes


def parse_shape(value: Any, origin: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.replace("x", ",").split(",") if v.strip()]
    try:
        shape = tuple(_whole(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{origin}: input_shape must be C,H,W (e.g. 3,32,32), got {value!r}"
        ) from None
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"{origin}: input_shape must be three positive sizes C,H,W, got {value!r}")
    return shape  # type: ignore[return-value]


def parse_bounds(value: Any, origin: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{origin}: bounds must be two numbers LOW,HIGH, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{origin}: bounds must satisfy LOW < HIGH, got {value!r}")
    return (low, high)


def parse_normalization(
    value: Any, origin: str
) -> str | tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``none``, ``default``, a name of ``NAMED_NORMALIZATIONS`` (``cifar10`` is the NormOut
    code's) or mean/std lists (``MEAN,..:STD,..``)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "default"):
            return text
        if text == "normout-cifar10":
            text = "cifar10"
        if text in NAMED_NORMALIZATIONS:
            return NAMED_NORMALIZATIONS[text]
        parts = text.split(":")
        if len(parts) == 2:
            value = {"mean": parts[0].split(","), "std": parts[1].split(",")}
        else:
            raise ValueError(
                f"{origin}: normalization must be none, default, "
                f"{', '.join(NAMED_NORMALIZATIONS)} or MEAN,..:STD,.. (e.g. 0.5:0.25), "
                f"got {value!r}"
            )
    if isinstance(value, Mapping) and set(value) == {"mean", "std"}:
        try:
            mean = tuple(float(v) for v in value["mean"])
            std = tuple(float(v) for v in value["std"])
        except (TypeError, ValueError):
            raise ValueError(f"{origin}: normalization mean and std must be numbers") from None
        if (
            len(mean) != len(std)
            or not mean
            or not all(math.isfinite(v) for v in mean + std)
            or min(std) <= 0
        ):
            raise ValueError(
                f"{origin}: normalization needs finite mean and std of equal length with std > 0, "
                f"got mean={list(mean)} std={list(std)}"
            )
        return (mean, std)
    raise ValueError(f"{origin}: normalization must be a string or a table with mean and std")


def normalization_name(mean: Sequence[float] | None, std: Sequence[float] | None) -> str | None:
    """The name of ``NAMED_NORMALIZATIONS`` whose values these are, else None."""
    if mean is None or std is None:
        return None
    for name, (named_mean, named_std) in NAMED_NORMALIZATIONS.items():
        if tuple(mean) == named_mean and tuple(std) == named_std:
            return name
    return None


def sidecar_path(checkpoint: Path) -> Path | None:
    """The sidecar description next to ``checkpoint``: X.toml, X.json, X.pt.toml, X.pt.json.

    Anything there but a folder counts (a FIFO or a broken link too, so that reading it
    refuses it in one line rather than the description being left out in silence)."""
    for candidate in (
        checkpoint.with_suffix(".toml"),
        checkpoint.with_suffix(".json"),
        checkpoint.with_name(checkpoint.name + ".toml"),
        checkpoint.with_name(checkpoint.name + ".json"),
    ):
        if candidate != checkpoint and os.path.lexists(candidate) and not candidate.is_dir():
            return candidate
    return None


def read_sidecar(path: Path) -> Description:
    """Read a TOML or JSON description file."""
    if path.suffix == ".toml":
        data: Any = load_toml(path, "description", ValueError)
    else:
        data = load_json(path, "description", ValueError)
    if not isinstance(data, dict):
        raise ValueError(
            f"description file {path} must hold a table of keys, got {type(data).__name__}"
        )
    return Description.from_mapping(data, str(path), path.parent)


def normalization_for(
    arch: str, dataset: str | None, given: str | tuple[tuple[float, ...], tuple[float, ...]] | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Resolve a normalisation setting: the NormOut CIFAR-10 values are the default for its
    VGG layouts on CIFAR-10; no normalisation otherwise."""
    if isinstance(given, tuple):
        return given
    if given == "none":
        return None, None
    if arch in NORMOUT_LAYOUT_ARCHS and dataset in (None, "cifar10"):
        return NORMOUT_CIFAR10_MEAN, NORMOUT_CIFAR10_STD
    return None, None


def described_spec(
    description: Description,
    *,
    arch: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    source_format: str,
    normalized_as: str | None = None,
    layer: LayerSpec | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> CheckpointSpec:
    """The spec of a file that does not describe itself, from what ``description`` says: its
    dataset, its normalisation (``normalization_for`` the architecture ``normalized_as``,
    default ``arch``) and its bounds (default [0, 1]); no layer and no extra architecture
    arguments unless given."""
    mean, std = normalization_for(
        arch if normalized_as is None else normalized_as,
        description.dataset,
        description.normalization,
    )
    return CheckpointSpec(
        arch=arch,
        num_classes=num_classes,
        input_shape=input_shape,
        layer=LayerSpec() if layer is None else layer,
        arch_kwargs=dict(arch_kwargs or {}),
        dataset=description.dataset,
        mean=mean,
        std=std,
        bounds=description.bounds or (0.0, 1.0),
        source_format=source_format,
    )


def shape_and_classes(
    dataset: str | None, input_shape: Sequence[int] | None, num_classes: int | None
) -> tuple[tuple[int, int, int] | None, int | None]:
    """Input shape and class count from explicit values, else the dataset's defaults."""
    default_shape, default_classes = DATASET_DEFAULTS.get(dataset or "", (None, None))
    shape = tuple(input_shape) if input_shape is not None else default_shape
    return shape, (num_classes if num_classes is not None else default_classes)  # type: ignore[return-value]
