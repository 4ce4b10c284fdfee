"""Foreign files of weights: a plain state_dict, a Lightning ``.ckpt``, or a training script's
dictionary that holds one; finding the weights in them and the description they need.

A foreign file does not name its architecture, data or normalisation: the description
(flags, sidecar) says it, and when it does not, the message names what is missing and the
registered architectures the weights fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from checkpoints.checkfile import FILE_KINDS, CheckpointError, show_value, tensor_mapping
from checkpoints.matching import infer_architectures
from checkpoints.spec import CheckpointSpec, Description, described_spec, shape_and_classes


def foreign_state_dict(obj: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    """Find the weights in a foreign file; returns them and the container format."""
    weights = tensor_mapping(obj)
    if weights is not None:
        return weights, "state_dict"
    if isinstance(obj, Mapping):
        for key, fmt in (
            ("state_dict", "lightning"),
            ("model_state_dict", "state_dict"),
            ("model", "state_dict"),
        ):
            weights = tensor_mapping(obj.get(key))
            if weights is not None:
                return weights, fmt
    kind = type(obj).__name__
    keys = f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""
    if isinstance(obj, Mapping) and not obj:
        keys = " that is empty"
    elif isinstance(obj, Mapping) and "state_dict" in obj:
        keys += f" whose 'state_dict' is {show_value(obj['state_dict'])}, not names to tensors"
    raise CheckpointError(
        f"{path}: expected a state_dict (names to tensors), a Lightning checkpoint with "
        f"'state_dict', or a file of ours; got a {kind}{keys}. Save the weights with "
        "torch.save(model.state_dict(), FILE)"
    )


def resolve_foreign(
    description: Description, path: Path, source_format: str, weights: Mapping[str, Tensor]
) -> CheckpointSpec:
    from checkpoints.architectures import architecture_names

    if description.arch is None:
        # Name only what is still missing: the dataset (or shape and classes) may be given.
        shaped = description.dataset is not None or (
            description.input_shape is not None and description.num_classes is not None
        )
        dataset = "" if shaped else " and --dataset NAME"
        guesses = [
            f"--arch {a}" + ("" if shaped else f" --dataset {d}")
            for a, d, _ in infer_architectures(weights)
            if description.dataset in (None, d)
        ]
        hint = f" It looks like {' or '.join(dict.fromkeys(guesses[:3]))}." if guesses else ""
        raise CheckpointError(
            f"{path} is {FILE_KINDS.get(source_format, source_format)}: it holds weights but does "
            f"not name the architecture they belong to; describe it with --arch NAME (one of "
            f"{', '.join(architecture_names())}){dataset}, or, for a class of your own, --model "
            f"yourfile.py:YourClass{dataset}, or a sidecar file "
            f"{path.with_suffix('.toml').name} (see README).{hint}"
        )
    if description.arch not in architecture_names():
        arch = description.arch
        own = (
            f"--model {arch}"
            if ":" in arch
            else f"--model {arch}:NAME"
            if arch.endswith(".py")
            else "--model yourfile.py:YourClass"
        )
        raise CheckpointError(
            f"{path}: unknown architecture {arch!r}; give --arch as one of "
            f"{', '.join(architecture_names())}, or build a class of your own with {own}"
        )
    shape, classes = shape_and_classes(
        description.dataset, description.input_shape, description.num_classes
    )
    if shape is None or classes is None:
        raise CheckpointError(
            f"{path}: cannot tell the input shape and number of classes; give --dataset "
            f"(digits, mnist, fashion-mnist, cifar10) or --input-shape C,H,W and --num-classes N"
        )
    return described_spec(
        description,
        arch=description.arch,
        num_classes=classes,
        input_shape=shape,
        source_format=source_format,
        layer=description.layer,
        arch_kwargs=description.arch_kwargs,
    )
