"""Fitting weights onto a network: foreign key layouts remapped, a strict check of keys, shapes
and dtypes with the likely cause of a mismatch, and the registered architectures that fit.

Foreign layouts are handled by one remapping function per format, never per model name:
prefixes ``model.``, ``module.``, ``_orig_mod.`` and ``net.`` (Lightning, DataParallel,
compile) are stripped while they stand in the way, and torchvision-style VGG weights
(``features.*`` / ``classifier.{0,3,6}.*``) are mapped onto the flat Sequential of the
NormOut code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from checkpoints.architectures import build_network, vgg_classifier_slots
from checkpoints.checkfile import CheckpointError, error_summary
from checkpoints.spec import CheckpointSpec
from checkpoints.usermodel import ModelReference

_PREFIXES = ("model.", "module.", "_orig_mod.", "net.")


def _strip_prefixes(
    weights: dict[str, Tensor], expected: set[str]
) -> tuple[dict[str, Tensor], list[str]]:
    """Strip ``model.``, ``module.``, ``_orig_mod.`` prefixes while every key carries one."""
    stripped: list[str] = []
    while set(weights) != expected:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in weights)), None)
        if prefix is None:
            break
        weights = {k[len(prefix) :]: v for k, v in weights.items()}
        stripped.append(prefix)
    return weights, stripped


def _torchvision_vgg(weights: dict[str, Tensor], batch_norm: bool) -> dict[str, Tensor]:
    """``features.i`` -> ``i``; ``classifier.{0,3,6}`` -> the flat indices after the features."""
    first = vgg_classifier_slots(batch_norm)[0] - 2  # index of the first classifier Linear
    classifier = {0: first, 3: first + 3, 6: first + 6}
    out: dict[str, Tensor] = {}
    for key, value in weights.items():
        group, _, rest = key.partition(".")
        index, _, leaf = rest.partition(".")
        if group == "features":
            out[f"{index}.{leaf}"] = value
        elif group == "classifier" and index.isdigit() and int(index) in classifier:
            out[f"{classifier[int(index)]}.{leaf}"] = value
        else:
            out[key] = value
    return out


def remap_keys(
    weights: dict[str, Tensor], network: nn.Module, arch: str
) -> tuple[dict[str, Tensor], list[str]]:
    expected = set(network.state_dict())
    weights, stripped = _strip_prefixes(weights, expected)
    notes = [f"stripped prefix {p!r}" for p in stripped]
    if arch in ("vgg16_bn", "vgg16") and any(
        k.startswith(("features.", "classifier.")) for k in weights
    ):
        weights = _torchvision_vgg(weights, arch == "vgg16_bn")
        notes.append(
            "remapped torchvision-style VGG keys (features.*, classifier.*) to the flat layout"
        )
    return weights, notes


def _likely_cause(
    weights: Mapping[str, Tensor],
    own: Mapping[str, Tensor],
    missing: list[str],
    unexpected: list[str],
    shaped: list[str],
    spec: CheckpointSpec,
) -> str:
    """Why the weights do not fit: first what the registered architectures say about them."""
    matches = infer_architectures(weights)
    if matches:
        if spec.arch not in {arch for arch, _, _ in matches}:
            fits = " or ".join(f"--arch {a} --dataset {d}" for a, d, _ in matches[:4])
            return f"the architecture does not match the weights; they fit {fits}"
        same = [(d, k) for a, d, k in matches if a == spec.arch]
        classes = same[0][1]
        if classes != spec.num_classes:
            return (
                f"the number of classes differs: the weights have {classes} outputs, the "
                f"description {spec.num_classes} (give --num-classes {classes} or the right "
                "--dataset)"
            )
        fits = " or ".join(f"--dataset {d}" for d, _ in same)
        return f"the input shape differs: the weights fit {fits} (or give --input-shape)"
    if any("running_mean" in k for k in missing + unexpected):
        return "batch norm differs (vgg16 vs vgg16_bn?)"
    if missing or unexpected:
        return (
            "the file was saved from a different architecture or with other arguments "
            "(check --arch, --widen-factor and the sidecar's arch_kwargs)"
        )
    last = set(list(own)[-2:])
    if shaped and set(shaped) <= last:
        return "the number of classes differs (check --num-classes / --dataset)"
    return (
        "the input shape or the architecture's arguments differ (check --dataset / "
        "--input-shape and arch_kwargs)"
    )


def _user_cause(
    weights: Mapping[str, Tensor],
    own: Mapping[str, Tensor],
    missing: list[str],
    unexpected: list[str],
    shaped: list[str],
) -> str:
    """Why the weights do not fit a model of the user's own class."""
    matches = infer_architectures(weights)
    if matches and (missing or unexpected):
        fits = " or ".join(f"--arch {a} --dataset {d}" for a, d, _ in matches[:4])
        return f"the weights were saved from a registered architecture; they fit {fits}"
    if missing or unexpected:
        return (
            "the file was saved from a different class, or from the same class built with other "
            "arguments (check --model and --model-kwargs)"
        )
    last = set(list(own)[-2:])
    if shaped and set(shaped) <= last:
        return "the number of classes differs (check --model-kwargs and --num-classes / --dataset)"
    return (
        "the class was built with other sizes than the weights were saved with (check "
        "--model-kwargs and --dataset / --input-shape)"
    )


def check_match(
    network: nn.Module,
    weights: dict[str, Tensor],
    path: Path,
    spec: CheckpointSpec | None,
    user: ModelReference | None = None,
) -> None:
    """Keys, shapes and kinds of dtype must agree exactly (a strict load, without loading).

    ``spec`` describes a registered architecture; ``user`` names a model of the user's own
    (then ``spec`` may be None)."""
    own = network.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    common = sorted(set(own) & set(weights))
    shaped = [k for k in common if weights[k].shape != own[k].shape]
    shapes = [f"{k}: file {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}" for k in shaped]
    dtypes = [
        f"{k}: file {weights[k].dtype} vs model {own[k].dtype}"
        for k in common
        if weights[k].is_floating_point() != own[k].is_floating_point()
    ]
    if missing or unexpected or shapes or dtypes:

        def show(items: list[str]) -> str:
            head = ", ".join(items[:6])
            return f"{head}, ... ({len(items)} in all)" if len(items) > 6 else head

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        if dtypes:
            parts.append(f"dtype mismatches: {show(dtypes)}")
        if dtypes and not (missing or unexpected or shapes):
            cause = "the file holds integer or boolean values where the model has real ones"
        elif user is not None or spec is None:
            cause = _user_cause(weights, own, missing, unexpected, shaped)
        else:
            cause = _likely_cause(weights, own, missing, unexpected, shaped, spec)
        what = (
            f"the model built by --model {user}"
            if user is not None
            else f"architecture {spec.arch if spec else '?'!r}"
        )
        raise CheckpointError(
            f"{path}: weights do not match {what}; {'; '.join(parts)}. Likely cause: {cause}"
        )


def infer_architectures(weights: Mapping[str, Tensor]) -> list[tuple[str, str, int]]:
    """Registered (architecture, dataset, number of classes) whose keys and shapes match.

    Networks are built on the meta device, so no memory is spent on the candidates.
    """
    from checkpoints.architectures import architecture_names
    from checkpoints.spec import DATASET_DEFAULTS

    matrices = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices or int(matrices[-1].shape[0]) < 2:
        return []
    classes = int(matrices[-1].shape[0])
    found = []
    for arch in architecture_names():
        for dataset, (shape, _) in DATASET_DEFAULTS.items():
            if dataset == "fashion-mnist":
                continue  # same shape as mnist
            try:
                with torch.device("meta"):
                    network = build_network(arch, shape, classes)
            except (ValueError, RuntimeError):
                continue
            own = network.state_dict()
            remapped, _ = remap_keys(dict(weights), network, arch)
            if set(remapped) == set(own) and all(remapped[k].shape == own[k].shape for k in own):
                found.append((arch, dataset, classes))
    return found


def build_spec_network(spec: CheckpointSpec, path: Path) -> nn.Module:
    """The bare network for ``spec``; any failure to build it is the description's fault."""
    sizes = (*spec.input_shape, spec.num_classes)
    if max(sizes) >= 2**63:
        raise CheckpointError(
            f"{path}: input shape {'x'.join(map(str, spec.input_shape))} and "
            f"{spec.num_classes} classes must each be below 2**63 (torch's largest size); fix "
            "the description (--input-shape, --num-classes, sidecar)"
        )
    try:
        return build_network(
            spec.arch, spec.input_shape, spec.num_classes, spec.layer, **spec.arch_kwargs
        )
    except (ValueError, TypeError, KeyError, RuntimeError, OverflowError) as err:
        raise CheckpointError(
            f"{path}: cannot build architecture {spec.arch!r} for input shape "
            f"{'x'.join(map(str, spec.input_shape))}, {spec.num_classes} classes, layers "
            f"{spec.layer} and arguments {dict(spec.arch_kwargs)} "
            f"({error_summary(err)}); fix the description (--arch, --layers, --dataset, "
            "--input-shape, --num-classes, sidecar)"
        ) from None
