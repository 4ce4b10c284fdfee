"""A description of a checkpoint as given: flags over a sidecar file, key by key, and where
each value came from, for messages (``--normalization`` or ``normalization in FILE.toml``).

It serves the checkpoint readers beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from checkpoints.checkfile import CheckpointError
from checkpoints.spec import CheckpointSpec, Description, normalization_name

# Which flag sets each field of a Description (the sidecar's key has the field's name).
_FLAG_OF = {
    "arch": "--arch",
    "layer": "--layers",
    "arch_kwargs": "--widen-factor",
    "dataset": "--dataset",
    "num_classes": "--num-classes",
    "input_shape": "--input-shape",
    "normalization": "--normalization",
    "bounds": "--bounds",
    "model": "--model",
    "model_kwargs": "--model-kwargs",
}
# Fields that name the network: a flag naming it replaces the sidecar's whole choice.
_REGISTERED_FIELDS = ("arch", "layer", "arch_kwargs")
_OWN_FIELDS = ("model", "model_kwargs")


@dataclass(frozen=True)
class Given:
    """A description and where each of its values came from (flags over the sidecar)."""

    merged: Description
    flags: Description
    sidecar: Description
    sidecar_path: Path | None

    def origin(self, name: str) -> str:
        """``--normalization`` or ``normalization in FILE.toml``."""
        if getattr(self.flags, name) is not None or self.sidecar_path is None:
            return _FLAG_OF[name]
        return f"{'layers' if name == 'layer' else name} in {self.sidecar_path.name}"

    def given(self, *names: str) -> list[str]:
        """The fields among ``names`` that were given."""
        return [n for n in names if getattr(self.merged, n) is not None]


def merge_given(flags: Description, sidecar: Description, sidecar_file: Path | None) -> Given:
    """Flags over the sidecar, key by key; a flag that names the network (``--model``, or
    ``--arch``) replaces the sidecar's other way of naming it."""
    if flags.model is not None:
        sidecar = replace(sidecar, **dict.fromkeys(_REGISTERED_FIELDS))
    if flags.arch is not None:
        sidecar = replace(sidecar, **dict.fromkeys(_OWN_FIELDS))
    return Given(flags.merged_over(sidecar), flags, sidecar, sidecar_file)


def check_combination(given: Given, path: Path) -> None:
    """Fields that cannot go together, refused whatever the file."""
    merged = given.merged
    if merged.model is None:
        if merged.model_kwargs is not None:
            raise CheckpointError(
                f"{path}: {given.origin('model_kwargs')} gives arguments for --model, but no "
                "--model was given; add --model FILE.py:NAME or drop it"
            )
        return
    if merged.arch is not None:
        raise CheckpointError(
            f"{path}: {given.origin('arch')} and {given.origin('model')} both name the model; "
            "give --arch for a registered architecture or --model for your own class, not both"
        )
    if merged.layer is not None:
        raise CheckpointError(
            f"{path}: {given.origin('layer')} places layers in a registered architecture's "
            f"slots, but {given.origin('model')} builds your own class, whose dropout-family "
            "layers are in its code (found by type); drop it"
        )
    if merged.arch_kwargs is not None:
        raise CheckpointError(
            f"{path}: {given.origin('arch_kwargs')} is an argument of a registered "
            "architecture; give your class's arguments with --model-kwargs (or model_kwargs in "
            "the sidecar)"
        )


def show_normalization(mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> str:
    if mean is None or std is None:
        return "none"
    return f"{','.join(f'{v:g}' for v in mean)}:{','.join(f'{v:g}' for v in std)}"


def with_sources(spec: CheckpointSpec, given: Given, path: Path) -> CheckpointSpec:
    """``spec`` with where its normalisation and bounds came from, in words, and its
    normalisation checked against its input channels."""
    if spec.mean is not None and len(spec.mean) not in (1, spec.input_shape[0]):
        raise CheckpointError(
            f"{path}: the normalisation has {len(spec.mean)} values per statistic, but the model "
            f"takes {spec.input_shape[0]} input channel(s); give one value or one per channel "
            "(--normalization MEAN,..:STD,..), or a name that fits the data (see README)"
        )
    recorded = spec.source_format == "robaudit"

    def origin(key: str) -> str | None:
        if recorded:
            return "recorded in the checkpoint"
        value = getattr(given.merged, key)
        return None if value is None or value == "default" else given.origin(key)

    normalization = origin("normalization")
    if normalization is None:
        normalization = f"default for {spec.arch}" if spec.mean is not None else "not given"
    name = normalization_name(spec.mean, spec.std)
    if name is not None:
        normalization += f" ({name})"
    return replace(
        spec, normalization_source=normalization, bounds_source=origin("bounds") or "default"
    )
