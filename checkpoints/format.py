"""Checkpoint files: our self-describing format and the foreign layouts real users have.

Loading never unpickles code: every ``torch.load`` uses ``weights_only=True``. A file that
holds pickled Python objects (a whole ``nn.Module``, a payload) is refused with the remedy
named, and loads only with ``trust=True`` (``--trust-checkpoint``).

Foreign layouts are handled by one remapping function per format, never per model name:

- ``state_dict``: a plain mapping of names to tensors;
- ``lightning``: a PyTorch Lightning ``.ckpt`` (weights under ``state_dict``);
- prefixes ``model.``, ``module.`` and ``_orig_mod.`` (Lightning, DataParallel, compile) are
  stripped while they stand in the way;
- ``torchvision-vgg``: VGG weights as ``features.*`` / ``classifier.{0,3,6}.*``, mapped onto
  the flat Sequential of the NormOut code;
- ``torchscript``: an archive that carries its own graph.

The weights are always loaded with ``strict=True``; a mismatch is an error that lists the
missing and unexpected keys and the likely cause.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from checkpoints.architectures import Normalized, build_network, vgg_classifier_slots
from checkpoints.layers import LayerSpec
from checkpoints.spec import (
    CheckpointSpec,
    Description,
    normalization_for,
    read_sidecar,
    shape_and_classes,
    sidecar_path,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedCheckpoint",
    "file_sha256",
    "load_checkpoint",
    "read_raw",
    "save_checkpoint",
    "weights_sha256",
]

FORMAT_NAME = "robaudit-checkpoint"
FORMAT_VERSION = 1
_PREFIXES = ("model.", "module.", "_orig_mod.", "net.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as described; the message says how to fix it."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready for evaluation and what is known about it.

    Attributes:
        model: maps images in ``spec.bounds`` (normally [0, 1]) to logits; normalisation is
            inside; eval mode.
        spec: the full description.
        path: the file it came from.
        sha256: sha256 of the file's bytes.
        weights_sha256: sha256 of the weights (names, dtypes, shapes, values), or None for a
            TorchScript archive.
        notes: what was inferred or remapped while loading, for display.
    """

    model: nn.Module
    spec: CheckpointSpec
    path: Path
    sha256: str
    weights_sha256: str | None
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- hashing


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(state_dict: Mapping[str, Tensor]) -> str:
    """sha256 over the sorted names, dtypes, shapes and raw bytes of a state_dict."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ our format


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temp, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _spec_from_document(doc: Mapping[str, Any], path: Path) -> CheckpointSpec:
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r} is not supported (this toolkit reads version "
            f"{FORMAT_VERSION}); upgrade the toolkit or re-save the checkpoint"
        )
    norm = doc.get("normalization")
    return CheckpointSpec(
        arch=str(doc["arch"]),
        num_classes=int(doc["num_classes"]),
        input_shape=tuple(int(v) for v in doc["input_shape"]),  # type: ignore[arg-type]
        layer=LayerSpec.from_dict(doc.get("layer") or {}),
        arch_kwargs=dict(doc.get("arch_kwargs") or {}),
        dataset=doc.get("dataset"),
        mean=None if norm is None else tuple(float(v) for v in norm["mean"]),
        std=None if norm is None else tuple(float(v) for v in norm["std"]),
        bounds=tuple(float(v) for v in doc.get("bounds", (0.0, 1.0))),  # type: ignore[arg-type]
        training=dict(doc.get("training") or {}),
        clean_accuracy=doc.get("clean_accuracy"),
        source_format="robaudit",
    )


# ------------------------------------------------------------------------------ raw reading


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_raw(path: Path, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; refuse pickled code unless trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        detail = next((line.strip() for line in lines if "GLOBAL" in line), "")
        if not detail:
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint (bad pickle data); "
                "expected a file written by torch.save or torch.jit.save"
            ) from None
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        raise CheckpointError(
            f"{path} holds pickled Python objects, not just tensors ({detail}); "
            "loading it could run arbitrary code. Re-save it as a state_dict "
            "(torch.save(model.state_dict(), FILE)), or pass --trust-checkpoint if you trust "
            "its source"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({str(err).splitlines()[0]}); "
            "expected a file written by torch.save or torch.jit.save"
        ) from None


def _tensor_mapping(obj: Any) -> dict[str, Tensor] | None:
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        return dict(obj)
    return None


def _foreign_state_dict(obj: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    """Find the weights in a foreign file; returns them and the container format."""
    weights = _tensor_mapping(obj)
    if weights is not None:
        return weights, "state_dict"
    if isinstance(obj, Mapping):
        for key, fmt in (
            ("state_dict", "lightning"),
            ("model_state_dict", "state_dict"),
            ("model", "state_dict"),
        ):
            weights = _tensor_mapping(obj.get(key))
            if weights is not None:
                return weights, fmt
    kind = type(obj).__name__
    keys = f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""
    raise CheckpointError(
        f"{path}: expected a state_dict (names to tensors), a Lightning checkpoint with "
        f"'state_dict', or a file of ours; got a {kind}{keys}"
    )


# --------------------------------------------------------------------------------- remapping


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


def _remap(
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


def _likely_cause(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    text = " ".join(missing + unexpected)
    if shapes and all(".weight" in s or ".bias" in s for s in shapes):
        return "the number of classes or the input shape differs (check --num-classes / --dataset)"
    if "running_mean" in text:
        return "batch norm differs (vgg16 vs vgg16_bn?)"
    if any(
        k.startswith(("features.", "classifier.", "layer", "block", "conv1"))
        for k in missing + unexpected
    ):
        return "the layout or architecture differs (check --arch)"
    return "the file was saved from a different architecture (check --arch and its arguments)"


def _load_strict(network: nn.Module, weights: dict[str, Tensor], path: Path, arch: str) -> None:
    own = network.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k}: file {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(weights))
        if weights[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:

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
        raise CheckpointError(
            f"{path}: weights do not match architecture {arch!r}; {'; '.join(parts)}. "
            f"Likely cause: {_likely_cause(missing, unexpected, shapes)}"
        )
    network.load_state_dict(weights, strict=True)


# -------------------------------------------------------------------------------- top level


def _apply_overrides(spec: CheckpointSpec, flags: Description, path: Path) -> CheckpointSpec:
    """Flags on a self-describing file may only restate it (or set the dataset)."""
    for name, ours in (("arch", spec.arch), ("num_classes", spec.num_classes)):
        given = getattr(flags, name)
        if given is not None and given != ours:
            raise CheckpointError(
                f"{path} describes itself as {name}={ours!r}, but {name}={given!r} was given; "
                f"drop that flag"
            )
    if flags.dataset is not None:
        spec = replace(spec, dataset=flags.dataset)
    return spec


def infer_architectures(weights: Mapping[str, Tensor]) -> list[tuple[str, str, int]]:
    """Registered (architecture, dataset, number of classes) whose keys and shapes match.

    Networks are built on the meta device, so no memory is spent on the candidates.
    """
    from checkpoints.architectures import architecture_names
    from checkpoints.spec import DATASET_DEFAULTS

    matrices = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices:
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
            remapped, _ = _remap(dict(weights), network, arch)
            if set(remapped) == set(own) and all(remapped[k].shape == own[k].shape for k in own):
                found.append((arch, dataset, classes))
    return found


def _resolve_foreign(
    description: Description, path: Path, source_format: str, weights: Mapping[str, Tensor]
) -> CheckpointSpec:
    if description.arch is None:
        from checkpoints.architectures import architecture_names

        guesses = infer_architectures(weights)
        hint = ""
        if guesses:
            hint = (
                " It looks like "
                + " or ".join(f"--arch {a} --dataset {d}" for a, d, _ in guesses[:3])
                + "."
            )
        raise CheckpointError(
            f"{path} is a {source_format} that does not say what it is; describe it with "
            f"--arch NAME (one of {', '.join(architecture_names())}) and --dataset NAME, "
            f"or a sidecar file {path.with_suffix('.toml').name} (see README).{hint}"
        )
    shape, classes = shape_and_classes(
        description.dataset, description.input_shape, description.num_classes
    )
    if shape is None or classes is None:
        raise CheckpointError(
            f"{path}: cannot tell the input shape and number of classes; give --dataset "
            f"(digits, mnist, fashion-mnist, cifar10) or --input-shape C,H,W and --num-classes N"
        )
    mean, std = normalization_for(description.arch, description.dataset, description.normalization)
    return CheckpointSpec(
        arch=description.arch,
        num_classes=classes,
        input_shape=shape,
        layer=description.layer or LayerSpec(),
        arch_kwargs=dict(description.arch_kwargs or {}),
        dataset=description.dataset,
        mean=mean,
        std=std,
        bounds=description.bounds or (0.0, 1.0),
        source_format=source_format,
    )


def _wrap_graph(model: nn.Module, description: Description, path: Path, fmt: str) -> CheckpointSpec:
    shape, classes = shape_and_classes(
        description.dataset, description.input_shape, description.num_classes
    )
    if shape is None:
        raise CheckpointError(
            f"{path} is a {fmt} that carries its own graph but not its data; give --dataset NAME "
            f"or --input-shape C,H,W"
        )
    model.eval()
    try:
        with torch.no_grad():
            probe = model(torch.zeros(2, *shape))
    except Exception as err:  # noqa: BLE001 - any failure of the file's forward is the finding
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise CheckpointError(
            f"{path}: the {fmt} model raised {type(err).__name__} on a batch of zeros of shape "
            f"{(2, *shape)}: {lines[-1] if lines else ''}; check --dataset or --input-shape"
        ) from None
    if not isinstance(probe, Tensor) or probe.dim() != 2:
        raise CheckpointError(
            f"{path}: the {fmt} model returned "
            f"{type(probe).__name__ if not isinstance(probe, Tensor) else tuple(probe.shape)} for "
            f"a batch of {(2, *shape)}, expected a tensor of logits [2, classes]; wrap it so that "
            "forward returns the logits"
        )
    if classes is None:
        classes = int(probe.shape[-1])
    mean, std = normalization_for(fmt, description.dataset, description.normalization)
    return CheckpointSpec(
        arch=fmt,
        num_classes=classes,
        input_shape=shape,
        dataset=description.dataset,
        mean=mean,
        std=std,
        bounds=description.bounds or (0.0, 1.0),
        source_format=fmt,
    )


def load_checkpoint(
    path: str | Path,
    description: Description | None = None,
    trust: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint of any supported layout as an eval-mode model taking [0, 1] pixels.

    Args:
        path: the file (ours, a state_dict, a Lightning ``.ckpt``, a TorchScript archive).
        description: what flags say about it; overrides a sidecar ``FILE.toml``/``FILE.json``.
        trust: allow unpickling Python objects (runs code from the file: only for trusted files).
        device: where the model goes.

    Returns:
        The model with its spec, file hash and notes.

    Raises:
        CheckpointError: the file cannot be read or does not match its description; the message
            says what was expected, what arrived and how to fix it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    flags = description or Description()
    sidecar = sidecar_path(path)
    described = flags.merged_over(read_sidecar(sidecar)) if sidecar else flags
    notes = [f"description from {sidecar}"] if sidecar else []
    sha = file_sha256(path)

    if _is_torchscript(path):
        graph = torch.jit.load(str(path), map_location="cpu")
        spec = _wrap_graph(graph, described, path, "torchscript")
        return _finish(graph, spec, path, sha, None, notes, device)

    raw = read_raw(path, trust)
    if isinstance(raw, nn.Module):
        spec = _wrap_graph(raw, described, path, "pickled-module")
        notes.append("unpickled a whole module (--trust-checkpoint)")
        return _finish(raw, spec, path, sha, None, notes, device)

    if isinstance(raw, Mapping) and raw.get("format") == FORMAT_NAME:
        spec = _apply_overrides(_spec_from_document(raw, path), described, path)
        weights = dict(raw["state_dict"])
        recorded = raw.get("weights_sha256")
        if recorded is not None and recorded != weights_sha256(weights):
            raise CheckpointError(
                f"{path}: the weights do not match their recorded sha256 (file damaged or edited); "
                "re-create it from its source"
            )
    else:
        weights, fmt = _foreign_state_dict(raw, path)
        spec = _resolve_foreign(described, path, fmt, weights)

    network = build_network(
        spec.arch, spec.input_shape, spec.num_classes, spec.layer, **spec.arch_kwargs
    )
    weights, remap_notes = _remap(weights, network, spec.arch)
    notes += remap_notes
    if any("torchvision-style" in n for n in remap_notes):
        spec = replace(spec, source_format="torchvision-vgg")
    _load_strict(network, weights, path, spec.arch)
    return _finish(network, spec, path, sha, weights_sha256(network.state_dict()), notes, device)


def _finish(
    network: nn.Module,
    spec: CheckpointSpec,
    path: Path,
    sha: str,
    weights_sha: str | None,
    notes: list[str],
    device: str | torch.device,
) -> LoadedCheckpoint:
    model = Normalized(network, spec.mean, spec.std).to(device).eval()
    return LoadedCheckpoint(model, spec, path, sha, weights_sha, tuple(notes))


def build_model(spec: CheckpointSpec) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (network, normalised model) pair for ``spec``."""
    network = build_network(
        spec.arch, spec.input_shape, spec.num_classes, spec.layer, **spec.arch_kwargs
    )
    return network, Normalized(network, spec.mean, spec.std)
