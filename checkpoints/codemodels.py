"""Models built by code rather than a registered architecture: a file that carries its own
graph (a TorchScript archive, a pickled whole module) and a class of the user's own
(``--model FILE.py:NAME``, built by ``checkpoints.usermodel``).

Neither says how many classes it gives: a probe on two zero inputs tells (and must agree with
the description). A file that carries its own graph takes no flag that would build or change
a network; ``--normalization`` and ``--bounds`` are applied to it with a note.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from checkpoints.checkfile import (
    FILE_KINDS,
    CheckpointError,
    error_summary,
    show_value,
)
from checkpoints.given import Given, check_combination, merge_given, show_normalization
from checkpoints.layers import family_layers, found_layer_spec
from checkpoints.matching import check_match, remap_keys
from checkpoints.spec import (
    CheckpointSpec,
    Description,
    described_spec,
    read_sidecar,
    shape_and_classes,
    sidecar_path,
)
from checkpoints.usermodel import ModelReference, UserModelError, build_user_model
from core.document import ModelSource


def refuse_on_graph(given: Given, path: Path, what: str) -> None:
    """A file that carries its own graph takes no flag that would build or change a network."""
    fixed = given.given("arch", "layer", "arch_kwargs", "model", "model_kwargs")
    if not fixed:
        return
    names = ", ".join(given.origin(n) for n in fixed)
    own = (
        "; for your own class, audit a state_dict saved from it with --model"
        if given.merged.model is not None
        else ""
    )
    raise CheckpointError(
        f"{path} is {what}, which carries its own graph and weights: {names} cannot change it "
        f"(its dropout-family layers are found in the graph by their class names); drop "
        f"{names}{own}"
    )


def graph_description_error(path: Path, description: Description | None) -> str | None:
    """Why the description (flags over the sidecar) cannot apply to an archive that carries
    its own graph, or None: checked without loading it (``checkpoints.inspect``)."""
    sidecar = sidecar_path(path)
    try:
        given = merge_given(
            description or Description(),
            Description() if sidecar is None else read_sidecar(sidecar),
            sidecar,
        )
        check_combination(given, path)
        refuse_on_graph(given, path, "a TorchScript archive")
    except (CheckpointError, ValueError) as err:
        return " ".join(str(err).split())
    return None


def _probe_classes(
    model: nn.Module, shape: tuple[int, int, int], classes: int | None, path: Path, what: str
) -> int:
    """Run ``model`` on two zero inputs: it must give logits [2, K]; returns K (which must be
    ``classes`` when that is known)."""
    try:
        model.eval()
        with torch.no_grad():
            probe = model(torch.zeros(2, *shape))
    except Exception as err:
        # The model is the file's (trusted) or the user's own code; whatever it raises is its
        # failure, and the description (shape) is the likely cause.
        raise CheckpointError(
            f"{path}: {what} fails on a batch of two zero inputs of "
            f"shape {'x'.join(map(str, shape))} ({error_summary(err)}); check "
            "--dataset / --input-shape"
        ) from None
    if not isinstance(probe, Tensor) or probe.dim() != 2 or probe.shape[0] != 2:
        got = show_value(probe) if not isinstance(probe, Tensor) else f"shape {tuple(probe.shape)}"
        raise CheckpointError(
            f"{path}: {what} must return logits [N, K] for input [N, C, H, W], got "
            f"{got} for two inputs; wrap it so that it returns the logits alone"
        )
    outputs = int(probe.shape[-1])
    if classes is None:
        classes = outputs
    if outputs != classes or outputs < 2:
        raise CheckpointError(
            f"{path}: {what} gives {outputs} outputs, but {classes} classes were "
            f"expected (from --dataset or --num-classes); give --num-classes {outputs} and the "
            "dataset the model was trained on"
        )
    return classes


def _graph_notes(given: Given, path: Path, what: str, spec: CheckpointSpec) -> list[str]:
    """What --normalization and --bounds do to a file that carries its own graph."""
    notes = []
    if isinstance(given.merged.normalization, tuple):
        notes.append(
            f"{given.origin('normalization')} is applied to {path} ({what}): pixels are "
            f"normalised with {show_normalization(spec.mean, spec.std)} before its graph runs; "
            "drop it if the graph normalises by itself"
        )
    if given.merged.bounds is not None:
        notes.append(
            f"{given.origin('bounds')} is applied to {path} ({what}): its inputs are taken in "
            f"[{spec.bounds[0]:g}, {spec.bounds[1]:g}]"
        )
    return notes


def wrap_graph(
    model: nn.Module, given: Given, path: Path, fmt: str
) -> tuple[CheckpointSpec, list[str]]:
    description = given.merged
    shape, classes = shape_and_classes(
        description.dataset, description.input_shape, description.num_classes
    )
    if shape is None:
        raise CheckpointError(
            f"{path} is {FILE_KINDS[fmt]}: it carries its own graph but not its data; give "
            "--dataset NAME or --input-shape C,H,W"
        )
    classes = _probe_classes(model, shape, classes, path, f"the model of {FILE_KINDS[fmt]}")
    spec = described_spec(
        description,
        arch=fmt,
        num_classes=classes,
        input_shape=shape,
        source_format=fmt,
        layer=found_layer_spec(model),
    )
    return spec, _graph_notes(given, path, fmt, spec)


def user_spec(given: Given, path: Path, source_format: str) -> CheckpointSpec:
    """The description of a foreign file's weights for a model of the user's own, before it is
    built: the input shape is needed, the number of classes may come from the model."""
    description = given.merged
    reference = description.model
    shape, classes = shape_and_classes(
        description.dataset, description.input_shape, description.num_classes
    )
    if shape is None or reference is None:
        raise CheckpointError(
            f"{path}: --model {reference} builds your class, but nothing says what input it "
            "takes; give --dataset (digits, mnist, fashion-mnist, cifar10) or --input-shape C,H,W"
        )
    return described_spec(
        description,
        arch=_model_name(reference),
        num_classes=classes or 2,  # until the model's own output says (`load_user_model`)
        input_shape=shape,
        source_format=source_format,
        normalized_as=reference.text,
        arch_kwargs=description.model_kwargs,
    )


def _model_name(reference: ModelReference) -> str:
    """The architecture's name for a model of the user's own: ``mynet.py:MyNet`` (the file's
    name; its path is in the model's source) or ``package.module:MyNet``."""
    if reference.kind == "file":
        return f"{Path(reference.target).name}:{reference.name}"
    return reference.text


def load_user_model(
    given: Given,
    spec: CheckpointSpec,
    classes_known: bool,
    weights: dict[str, Tensor],
    path: Path,
) -> tuple[nn.Module, CheckpointSpec, ModelSource, list[str]]:
    """Build the user's model, load ``weights`` into it strictly and check its output.

    Returns:
        The network (weights loaded), its spec (layers found by type, classes from the
        model's output when the description gave none), its source and the loading notes.
    """
    reference = given.merged.model
    if reference is None:
        raise TypeError("load_user_model needs a description with a model")
    try:
        network, source = build_user_model(
            reference, given.merged.model_kwargs, given.origin("model")
        )
    except UserModelError as err:
        raise CheckpointError(str(err)) from None
    weights, notes = remap_keys(weights, network, reference.text)
    check_match(network, weights, path, None, reference)
    try:
        network.load_state_dict(weights, strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path}: the weights cannot be loaded into the model built by --model {reference} "
            f"({error_summary(err)}); re-save them from the trained model (model.state_dict())"
        ) from None
    classes = _probe_classes(
        network,
        spec.input_shape,
        spec.num_classes if classes_known else None,
        path,
        f"the model built by --model {reference}",
    )
    layer = found_layer_spec(network)
    found = [f"{name} ({kind})" for name, kind in family_layers(network)]
    notes.append(
        f"built by {source.reference} from the user's own code; dropout-family layers found "
        f"by type: {', '.join(found) or 'none'}"
    )
    spec = replace(
        spec,
        arch=_model_name(reference),
        arch_kwargs=dict(given.merged.model_kwargs or {}),
        layer=layer,
        num_classes=classes,
    )
    return network, spec, source, notes
