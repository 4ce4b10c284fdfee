"""Checkpoint files: our self-describing format and the foreign layouts real users have.

Nothing from a file runs without consent: every ``torch.load`` uses ``weights_only=True``. A
file that holds pickled Python objects (a whole ``nn.Module``, a payload) or a TorchScript
archive is refused with the remedy named, and loads only with ``trust=True``
(``--trust-checkpoint``). Every bad file ends in one :class:`CheckpointError` whose one-line
message names the file, what was expected, what arrived and the fix.

Foreign layouts are handled by one remapping function per format, never per model name:

- ``state_dict``: a plain mapping of names to tensors;
- ``lightning``: a PyTorch Lightning ``.ckpt`` (weights under ``state_dict``);
- prefixes ``model.``, ``module.`` and ``_orig_mod.`` (Lightning, DataParallel, compile) are
  stripped while they stand in the way;
- ``torchvision-vgg``: VGG weights as ``features.*`` / ``classifier.{0,3,6}.*``, mapped onto
  the flat Sequential of the NormOut code;
- ``torchscript``: an archive that carries its own graph. It is code (it runs on load and on
  every forward pass), so it loads only with ``trust=True``; torch.export and torch.package
  archives, programs too, are refused.

A network of the user's own (``Description.model``, ``--model FILE.py:NAME``) is built from
their code (``checkpoints.usermodel``) and takes the weights of a state_dict, a Lightning
``.ckpt`` or a file of ours in place of a registered architecture.

The weights are always loaded with ``strict=True``; a mismatch is an error that lists the
missing and unexpected keys and the likely cause.

A description (flags, sidecar) given for a file that describes itself (ours) or carries its
own graph (TorchScript, a pickled module) is applied, with a line in
``LoadedCheckpoint.flag_notes`` for the command to print, or refused; it is never ignored.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import math
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from checkpoints.architectures import (
    Normalized,
    build_network,
    get_architecture,
    vgg_classifier_slots,
)
from checkpoints.layers import LayerSpec, family_layers, found_layer_spec, layer_defaults
from checkpoints.spec import (
    CheckpointSpec,
    Description,
    normalization_for,
    normalization_name,
    parse_bounds,
    parse_normalization,
    read_sidecar,
    shape_and_classes,
    sidecar_path,
)
from checkpoints.usermodel import ModelReference, UserModelError, build_user_model
from core.boundary import atomic_write_bytes, check_archive, open_input

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "CodeNotRunError",
    "LoadedCheckpoint",
    "PickledObjectsError",
    "code_archive_kind",
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
    """A checkpoint that cannot be loaded as described; the message says how to fix it.

    The message is always one line (values quoted from a file may hold line breaks)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


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
        model_source: where a model of the user's own came from (``--model``): reference,
            kind, path, module, name, kwargs and the sha256 of its file
            (``checkpoints.usermodel.build_user_model``); None for any other model.
        flag_notes: what description flags did to a file that describes itself or carries
            its own graph, one line each, for the command to print on stderr (also in
            ``notes``).
    """

    model: nn.Module
    spec: CheckpointSpec
    path: Path
    sha256: str
    weights_sha256: str | None
    notes: tuple[str, ...] = ()
    model_source: Mapping[str, Any] | None = None
    flag_notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- hashing


def _open(path: str | Path) -> IO[bytes]:
    """The checkpoint, open for reading once known to be a regular file within the limit of
    a checkpoint (``core.boundary.INPUT_LIMITS``)."""
    return open_input(path, "checkpoint", CheckpointError)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with _open(path) as handle:
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


def _show(value: Any) -> str:
    """A short one-line rendering of a value found in a file, with its type."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value).replace("\n", " ")
    if len(text) > 60 and isinstance(value, list | tuple | Mapping):
        kinds = sorted(
            {type(v).__name__ for v in (value.values() if isinstance(value, Mapping) else value)}
        )
        return f"a {type(value).__name__} of {len(value)} items ({', '.join(kinds[:4])})"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


# Boilerplate that torch appends to its reader errors; the file name and our fix say more.
_TORCH_BOILERPLATE = (
    " In PyTorch 2.6",
    " This is an internal miniz error",
    " Re-running `torch.load`",
)


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (torch's advice cut off, at most
    160 characters), or its type when it has none."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    for marker in _TORCH_BOILERPLATE:
        text = text.split(marker, 1)[0]
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(err).__name__}: {text}"


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_RESAVE = "re-save it with save_checkpoint (python -m checkpoints.train writes this format)"


def _document_error(path: Path, name: str, expected: str, value: Any) -> CheckpointError:
    return CheckpointError(
        f"{path}: field {name!r} of the {FORMAT_NAME} file must be {expected}, got "
        f"{'nothing (missing)' if value is _MISSING else _show(value)}; {_RESAVE}"
    )


_MISSING = object()


def _spec_from_document(doc: Mapping[str, Any], path: Path) -> CheckpointSpec:
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
        raise _document_error(path, "arch", f"one of {', '.join(architecture_names())}", arch)
    classes = doc.get("num_classes", _MISSING)
    if not _is_whole(classes) or classes < 2:
        raise _document_error(path, "num_classes", "a whole number of at least 2", classes)
    shape = doc.get("input_shape", _MISSING)
    if (
        not isinstance(shape, list | tuple)
        or len(shape) != 3
        or not all(_is_whole(v) and v > 0 for v in shape)
    ):
        raise _document_error(path, "input_shape", "three positive whole numbers [C, H, W]", shape)
    layer = doc.get("layer")
    if layer is not None and not isinstance(layer, Mapping):
        raise _document_error(path, "layer", "a table (kind, params, positions)", layer)
    layer = layer or {}
    kind = layer.get("kind", "none")
    if not isinstance(kind, str) or kind not in layer_kinds():
        raise _document_error(path, "layer.kind", f"one of {', '.join(layer_kinds())}", kind)
    params = layer.get("params")
    if params is not None and not (
        isinstance(params, Mapping) and all(isinstance(k, str) for k in params)
    ):
        raise _document_error(path, "layer.params", "a table of named values", params)
    positions = layer.get("positions")
    if positions is not None and not (
        isinstance(positions, list | tuple) and all(_is_whole(p) and p >= 0 for p in positions)
    ):
        raise _document_error(
            path, "layer.positions", "a list of non-negative module indices", positions
        )
    arch_kwargs = doc.get("arch_kwargs")
    if arch_kwargs is not None and not (
        isinstance(arch_kwargs, Mapping) and all(isinstance(k, str) for k in arch_kwargs)
    ):
        raise _document_error(path, "arch_kwargs", "a table of named values", arch_kwargs)
    dataset = doc.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise _document_error(path, "dataset", "a dataset name or None", dataset)
    training = doc.get("training")
    if training is not None and not isinstance(training, Mapping):
        raise _document_error(path, "training", "a table", training)
    accuracy = doc.get("clean_accuracy")
    if accuracy is not None and not (
        isinstance(accuracy, int | float) and not isinstance(accuracy, bool) and 0 <= accuracy <= 1
    ):
        raise _document_error(path, "clean_accuracy", "a fraction in [0, 1] or None", accuracy)
    bounds = doc.get("bounds", (0.0, 1.0))
    if not isinstance(bounds, list | tuple):
        raise _document_error(path, "bounds", "a list [LOW, HIGH]", bounds)
    norm = doc.get("normalization")
    if norm is not None and not isinstance(norm, Mapping):
        raise _document_error(path, "normalization", "a table with mean and std, or None", norm)
    try:
        normalization = parse_normalization(norm, f"{path}: field 'normalization'")
        parsed_bounds = parse_bounds(bounds, f"{path}: field 'bounds'")
        layer_spec = LayerSpec.from_dict(layer)
    except (ValueError, TypeError) as err:
        text = str(err) if str(err).startswith(str(path)) else f"{path}: field 'layer': {err}"
        raise CheckpointError(f"{text}; {_RESAVE}") from None
    mean, std = normalization if isinstance(normalization, tuple) else (None, None)
    if mean is not None and len(mean) not in (1, shape[0]):
        raise _document_error(
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


# ------------------------------------------------------------------------ files that are code

# Archives that are programs rather than weights, by the records that mark them (paths inside
# the archive after its top folder, as torch's own reader names them).
_PROGRAMS = {
    "torchscript": "a TorchScript archive",
    "torch.export": "a torch.export archive (.pt2)",
    "torch.package": "a torch.package archive",
}


def _archive_records(path: Path) -> list[str] | None:
    """The archive's entry names without their top folder, or None for a non-zip file.

    Raises:
        CheckpointError: an entry declares more than the file can hold (see
            ``core.boundary.check_archive``).
    """
    with _open(path) as handle:
        # Unreadable for zipfile (None): torch.load (weights only) judges it and refuses it.
        members = check_archive(handle, path, "checkpoint", CheckpointError)
    if members is None:
        return None
    names = [member.filename for member in members]
    return [name.split("/", 1)[1] if "/" in name else name for name in names]


def code_archive_kind(path: str | Path) -> str | None:
    """``torchscript``, ``torch.export`` or ``torch.package`` when the file is such an archive
    (code, not just weights), else None. Reads the zip listing only."""
    records = _archive_records(Path(path))
    if records is None:
        return None
    if "constants.pkl" in records or any(r.startswith("code/") for r in records):
        return "torchscript"
    if (
        "archive_format" in records
        or "serialized_exported_program.json" in records
        or any(r.startswith("models/") and r.endswith(".json") for r in records)
    ):
        return "torch.export"
    if ".data/extern_modules" in records or any(r.endswith(".py") for r in records):
        return "torch.package"
    return None


# The route for a class of the user's own, named wherever a file cannot load as it is.
_OWN_CLASS = (
    "save model.state_dict() (torch.save(model.state_dict(), FILE)) and pass --model "
    "yourfile.py:YourClass (or --arch for a registered architecture) with --dataset"
)


def _torchscript_refused(path: Path) -> str:
    return (
        f"{path} is a TorchScript archive, which is code: it runs when the file is loaded and on "
        "every forward pass of the audit, and it can read and write files. Pass "
        f"--trust-checkpoint if you trust its source, or {_OWN_CLASS}"
    )


def _program_unsupported(path: Path, kind: str) -> str:
    return (
        f"{path} is {_PROGRAMS[kind]}, a program rather than weights, and this toolkit does not "
        f"load programs of that kind (not even with --trust-checkpoint); {_OWN_CLASS}"
    )


# ------------------------------------------------------------------------------ raw reading


class PickledObjectsError(CheckpointError):
    """The file unpickles Python objects (code); ``detail`` names the first one refused."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def _not_readable(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({_first_line(err)}); expected a file "
        "written by torch.save (a state_dict, a Lightning .ckpt or a file of ours): re-save it, "
        "or check that the file is complete"
    )


# Pickle opcodes that push a string, which STACK_GLOBAL then takes as a module and a name.
_STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH = frozenset({"PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK"})
# At most this many opcodes are read when looking for the objects a pickle would build.
_SCAN_OPCODES = 1_000_000


def _tensor_globals() -> frozenset[str]:
    """The globals torch.load(weights_only=True) builds: tensors, storages and plain
    containers, none of which runs code of the file's choosing."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return frozenset(_get_allowed_globals())
    except (ImportError, AttributeError):  # a private helper; without it, every global counts
        return frozenset()


def _globals_of(stream: IO[bytes]) -> Iterator[tuple[str, int]]:
    """The globals (``module.name``) one pickle names and the protocol of each opcode, read
    with ``pickletools`` (opcodes only: nothing is built, imported or run).

    ``STACK_GLOBAL`` takes its module and name from the stack: the last two values pushed are
    followed (strings, and strings fetched from the memo; anything else pushed counts as not a
    string)."""
    recent: list[str | None] = []  # the values last pushed, where they are strings
    memo: dict[int, str | None] = {}
    for count, (opcode, argument, _) in enumerate(pickletools.genops(stream)):
        if count >= _SCAN_OPCODES:
            return
        name = opcode.name
        found = ""
        if name in _STRING_OPCODES:
            recent.append(str(argument))
        elif name in _MEMO_GETS:
            recent.append(memo.get(int(str(argument))))
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in _MEMO_PUTS:
            memo[int(str(argument))] = recent[-1] if recent else None
        elif name not in _NO_PUSH:
            if name in ("GLOBAL", "INST"):
                found = str(argument).replace(" ", ".", 1)
            elif name == "STACK_GLOBAL":
                module, member = ([None, None] + recent)[-2:]
                found = f"{module or '?'}.{member or '?'}"
            recent.append(None)
        yield found, opcode.proto
        del recent[:-2]


def _pickle_contents(path: Path) -> tuple[str | None, int]:
    """The first global a pickled checkpoint names that torch.load(weights_only=True) would
    not build (None if there is none), and the highest pickle protocol of its opcodes.

    The pickle is the archive's ``data.pkl`` for a zip checkpoint, else the pickles at the
    start of the file (torch's legacy format writes a few small ones before its data; a plain
    ``pickle.dump`` writes one).
    """
    allowed = _tensor_globals()
    first: str | None = None
    protocol = 0

    def scan(stream: IO[bytes]) -> bool:
        """Scan one pickle; False once nothing more can be read."""
        nonlocal first, protocol
        try:
            for name, proto in _globals_of(stream):
                protocol = max(protocol, proto)
                if name and first is None and name not in allowed:
                    first = name
                    return False
        except Exception:  # noqa: BLE001 - the end of the pickles, or damage: what was read stands
            return False
        return True

    with _open(path) as handle:
        try:
            archive = zipfile.ZipFile(handle)
        except Exception:  # noqa: BLE001 - not a readable zip: the file itself holds the pickles
            archive = None
        if archive is None:
            handle.seek(0)  # zipfile looked for a directory at the end
            for _ in range(5):  # torch's legacy format: 4 small pickles, then the data's
                if not scan(handle):
                    break
            return first, protocol
        with archive:
            data = [n for n in archive.namelist() if n.split("/")[-1] == "data.pkl"]
            if data:
                try:
                    with archive.open(data[0]) as stream:
                        scan(stream)
                except Exception:  # noqa: BLE001 - a damaged member: nothing found in it
                    pass
    return first, protocol


def _pickled_objects(path: Path, name: str) -> PickledObjectsError:
    detail = f"it would build {name}"
    advice = _resave_advice(name)
    return PickledObjectsError(
        f"{path} holds pickled Python objects, not just tensors ({detail}); nothing from it "
        f"ran, since unpickling it could run arbitrary code. {advice[0].upper()}{advice[1:]}, "
        "or pass --trust-checkpoint if you trust its source",
        detail,
    )


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    """torch.load of the checked file on the CPU, without torch's warnings about the pickle
    protocol (the failure, if any, is reported in one line instead)."""
    with _open(path) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(handle, map_location="cpu", weights_only=weights_only)


def read_raw(path: Path, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; refuse pickled code unless trusted.

    Raises:
        CheckpointError: for anything but a readable weights-only file (or, with ``trust``, a
            readable pickle); :class:`PickledObjectsError` when it holds Python objects.
    """
    path = Path(path)
    try:
        return _torch_load(path, weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        name, protocol = (found.group(1), 0) if found else _pickle_contents(path)
        # torch's weights-only reader stops at the opcodes of pickle protocols above 2.
        newer_protocol = protocol > 2 and "Unsupported operand" in str(err)
        if name is None and not newer_protocol:
            raise _not_readable(path, err) from None
        if trust:
            return _read_unrestricted(path, name)
        if name is None:
            raise CheckpointError(
                f"{path} is a pickle of protocol {protocol}, which torch.load(weights_only=True) "
                "cannot read (it reads protocol 2, torch.save's default); nothing from it ran. "
                "Re-save it with torch.save(model.state_dict(), FILE), or pass "
                "--trust-checkpoint if you trust its source"
            ) from None
        raise _pickled_objects(path, name) from None
    except Exception as err:
        # torch.load on damaged bytes raises whatever its parsers meet (RuntimeError, EOFError,
        # IndexError, UnicodeDecodeError, ...); each means the same thing to the user.
        if code_archive_kind(path) == "torchscript":  # told by its zip listing, not the error
            raise CheckpointError(_torchscript_refused(path)) from None
        raise _not_readable(path, err) from None


def _resave_advice(global_name: str | None) -> str:
    """How to re-save a file of pickled objects: for a whole model of the user's own class,
    its state_dict and ``--model`` with that class."""
    module, _, name = (global_name or "").rpartition(".")
    # Not a model class: torch's and the standard library's (a payload calls os.system).
    ordinary = ("torch", "collections", "builtins", "numpy", "os", "posix", "nt", "subprocess")
    if not name or module.split(".")[0] in ordinary:
        return (
            "re-save it as a state_dict (torch.save(model.state_dict(), FILE)); for a class of "
            "your own, pass --model yourfile.py:YourClass"
        )
    file = "yourfile.py" if module == "__main__" else f"{module.replace('.', '/')}.py"
    return (
        f"for a model of your own class {name}, save model.state_dict() "
        f"(torch.save(model.state_dict(), FILE)) and pass --model {file}:{name} (the file that "
        f"defines {name})"
    )


def _read_unrestricted(path: Path, global_name: str | None) -> Any:
    try:
        return _torch_load(path, weights_only=False)
    except CheckpointError:
        raise
    except Exception as err:
        # A trusted pickle runs its own code while loading; whatever it raises is its failure.
        hint = (
            f"the class {global_name} it was saved with cannot be found here; "
            if global_name is not None and isinstance(err, ModuleNotFoundError | AttributeError)
            else "expected a file written by torch.save; "
        )
        raise CheckpointError(
            f"{path}: unpickling the trusted file failed ({_first_line(err)}); {hint}"
            f"{_resave_advice(global_name)}"
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
    if isinstance(obj, Mapping) and not obj:
        keys = " that is empty"
    elif isinstance(obj, Mapping) and "state_dict" in obj:
        keys += f" whose 'state_dict' is {_show(obj['state_dict'])}, not names to tensors"
    raise CheckpointError(
        f"{path}: expected a state_dict (names to tensors), a Lightning checkpoint with "
        f"'state_dict', or a file of ours; got a {kind}{keys}. Save the weights with "
        "torch.save(model.state_dict(), FILE)"
    )


def _check_tensors(weights: Mapping[str, Tensor], path: Path, where: str) -> None:
    """Every weight a dense real tensor (sparse, quantised or complex ones cannot be loaded)."""
    for name, tensor in weights.items():
        if (
            tensor.layout != torch.strided
            or tensor.is_quantized
            or tensor.is_complex()
            or tensor.device.type == "meta"
        ):
            raise CheckpointError(
                f"{path}: {where}{name!r} must be a dense real tensor, got "
                f"layout {tensor.layout}, dtype {tensor.dtype}, device {tensor.device.type}; "
                "re-save the weights from the trained model (model.state_dict())"
            )


def _our_weights(doc: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    state = doc.get("state_dict", _MISSING)
    weights = _tensor_mapping(state)
    if weights is None:
        raise _document_error(path, "state_dict", "a non-empty table of names to tensors", state)
    _check_tensors(weights, path, "state_dict entry ")
    return weights


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


def _check_match(
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


# -------------------------------------------------------------------------------- top level


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
class _Given:
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


def _given(flags: Description, sidecar: Description, sidecar_file: Path | None) -> _Given:
    """Flags over the sidecar, key by key; a flag that names the network (``--model``, or
    ``--arch``) replaces the sidecar's other way of naming it."""
    if flags.model is not None:
        sidecar = replace(sidecar, **dict.fromkeys(_REGISTERED_FIELDS))
    if flags.arch is not None:
        sidecar = replace(sidecar, **dict.fromkeys(_OWN_FIELDS))
    return _Given(flags.merged_over(sidecar), flags, sidecar, sidecar_file)


def _check_combination(given: _Given, path: Path) -> None:
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


def _show_normalization(mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> str:
    if mean is None or std is None:
        return "none"
    return f"{','.join(f'{v:g}' for v in mean)}:{','.join(f'{v:g}' for v in std)}"


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


def _apply_overrides(
    spec: CheckpointSpec, given: _Given, path: Path
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
            shown = norm if isinstance(norm, str) else _show_normalization(norm[0], norm[1])
            raise _refused(
                path,
                given.origin("normalization"),
                shown,
                f"normalization {_show_normalization(spec.mean, spec.std)}",
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
            remapped, _ = _remap(dict(weights), network, arch)
            if set(remapped) == set(own) and all(remapped[k].shape == own[k].shape for k in own):
                found.append((arch, dataset, classes))
    return found


_KINDS = {
    "state_dict": "a plain state_dict",
    "lightning": "a PyTorch Lightning checkpoint",
    "torchscript": "a TorchScript archive",
    "pickled-module": "a pickled module",
}
"""What a file of each container format is, in words, for messages."""


def _resolve_foreign(
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
            f"{path} is {_KINDS.get(source_format, source_format)}: it holds weights but does "
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


def _build(spec: CheckpointSpec, path: Path) -> nn.Module:
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
            f"{spec.layer} and arguments {dict(spec.arch_kwargs)} ({_first_line(err)}); fix the "
            "description (--arch, --layers, --dataset, --input-shape, --num-classes, sidecar)"
        ) from None


def _last_line(error: BaseException) -> str:
    """The last non-empty line of an error (TorchScript prints its own traceback first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def _refuse_on_graph(given: _Given, path: Path, what: str) -> None:
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
        given = _given(
            description or Description(),
            Description() if sidecar is None else read_sidecar(sidecar),
            sidecar,
        )
        _check_combination(given, path)
        _refuse_on_graph(given, path, "a TorchScript archive")
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
            f"shape {'x'.join(map(str, shape))} ({_last_line(err)}); check "
            "--dataset / --input-shape"
        ) from None
    if not isinstance(probe, Tensor) or probe.dim() != 2 or probe.shape[0] != 2:
        got = _show(probe) if not isinstance(probe, Tensor) else f"shape {tuple(probe.shape)}"
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


def _graph_notes(given: _Given, path: Path, what: str, spec: CheckpointSpec) -> list[str]:
    """What --normalization and --bounds do to a file that carries its own graph."""
    notes = []
    if isinstance(given.merged.normalization, tuple):
        notes.append(
            f"{given.origin('normalization')} is applied to {path} ({what}): pixels are "
            f"normalised with {_show_normalization(spec.mean, spec.std)} before its graph runs; "
            "drop it if the graph normalises by itself"
        )
    if given.merged.bounds is not None:
        notes.append(
            f"{given.origin('bounds')} is applied to {path} ({what}): its inputs are taken in "
            f"[{spec.bounds[0]:g}, {spec.bounds[1]:g}]"
        )
    return notes


def _wrap_graph(
    model: nn.Module, given: _Given, path: Path, fmt: str
) -> tuple[CheckpointSpec, list[str]]:
    description = given.merged
    shape, classes = shape_and_classes(
        description.dataset, description.input_shape, description.num_classes
    )
    if shape is None:
        raise CheckpointError(
            f"{path} is {_KINDS[fmt]}: it carries its own graph but not its data; give "
            "--dataset NAME or --input-shape C,H,W"
        )
    classes = _probe_classes(model, shape, classes, path, f"the model of {_KINDS[fmt]}")
    mean, std = normalization_for(fmt, description.dataset, description.normalization)
    spec = CheckpointSpec(
        arch=fmt,
        num_classes=classes,
        input_shape=shape,
        layer=found_layer_spec(model),
        dataset=description.dataset,
        mean=mean,
        std=std,
        bounds=description.bounds or (0.0, 1.0),
        source_format=fmt,
    )
    return spec, _graph_notes(given, path, fmt, spec)


def _user_spec(given: _Given, path: Path, source_format: str) -> CheckpointSpec:
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
    mean, std = normalization_for(reference.text, description.dataset, description.normalization)
    return CheckpointSpec(
        arch=_model_name(reference),
        num_classes=classes or 2,  # until the model's own output says (`_load_user`)
        input_shape=shape,
        arch_kwargs=dict(description.model_kwargs or {}),
        dataset=description.dataset,
        mean=mean,
        std=std,
        bounds=description.bounds or (0.0, 1.0),
        source_format=source_format,
    )


def _model_name(reference: ModelReference) -> str:
    """The architecture's name for a model of the user's own: ``mynet.py:MyNet`` (the file's
    name; its path is in the model's source) or ``package.module:MyNet``."""
    if reference.kind == "file":
        return f"{Path(reference.target).name}:{reference.name}"
    return reference.text


def _load_user(
    given: _Given,
    spec: CheckpointSpec,
    classes_known: bool,
    weights: dict[str, Tensor],
    path: Path,
) -> tuple[nn.Module, CheckpointSpec, dict[str, Any], list[str]]:
    """Build the user's model, load ``weights`` into it strictly and check its output.

    Returns:
        The network (weights loaded), its spec (layers found by type, classes from the
        model's output when the description gave none), its source and the loading notes.
    """
    reference = given.merged.model
    if reference is None:
        raise TypeError("_load_user needs a description with a model")
    try:
        network, source = build_user_model(
            reference, given.merged.model_kwargs, given.origin("model")
        )
    except UserModelError as err:
        raise CheckpointError(str(err)) from None
    weights, notes = _remap(weights, network, reference.text)
    _check_match(network, weights, path, None, reference)
    try:
        network.load_state_dict(weights, strict=True)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path}: the weights cannot be loaded into the model built by --model {reference} "
            f"({_first_line(err)}); re-save them from the trained model (model.state_dict())"
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
        f"built by {source['reference']} from the user's own code; dropout-family layers found "
        f"by type: {', '.join(found) or 'none'}"
    )
    spec = replace(
        spec,
        arch=_model_name(reference),
        arch_kwargs=dict(source["kwargs"]),
        layer=layer,
        num_classes=classes,
    )
    return network, spec, source, notes


def load_checkpoint(
    path: str | Path,
    description: Description | None = None,
    trust: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint of any supported layout as an eval-mode model taking [0, 1] pixels.

    Nothing from the file runs unless ``trust`` is set: pickled Python objects and TorchScript
    archives (programs that run on load and on every forward pass) are refused without it.
    The user's own model code (``description.model``) runs because they named it; code that
    a sidecar file names runs only with ``trust``.

    Args:
        path: the file (ours, a state_dict, a Lightning ``.ckpt``, a TorchScript archive).
        description: what flags say about it; overrides a sidecar ``FILE.toml``/``FILE.json``.
            For a file that describes itself or carries its own graph, each given field is
            applied (with a line in ``flag_notes``) or refused.
        trust: allow code from the file (unpickling Python objects, TorchScript) and a file of
            ours without its recorded weights hash: only for files from a trusted source.
        device: where the model goes.

    Returns:
        The model with its spec, file hash and notes.

    Raises:
        CheckpointError: the file cannot be read, carries code without ``trust``, or does not
            match its description, or the user's model code fails; the one-line message names
            the file, what was expected, what arrived and how to fix it. No other exception
            escapes.
    """
    return _load(Path(path), description, trust, trust, device)


class CodeNotRunError(CheckpointError):
    """The file would load into a model built from the user's code, which was not run
    (``checkpoints.inspect`` never runs code); ``reference`` names that code."""

    def __init__(self, message: str, reference: ModelReference) -> None:
        super().__init__(message)
        self.reference = reference


def _load(
    path: Path,
    description: Description | None,
    trust: bool,
    run_code: bool,
    device: str | torch.device,
    inspect_only: bool = False,
) -> LoadedCheckpoint:
    """:func:`load_checkpoint`; ``run_code`` False refuses code from the file even when
    ``trust`` is set (``trust`` then only accepts a file of ours without its weights hash);
    ``inspect_only`` never runs the user's model code either (:class:`CodeNotRunError`)."""
    _open(path).close()  # a regular file within the limit, before anything else is read
    flags = description or Description()
    sidecar = sidecar_path(path)
    side, notes = Description(), []
    if sidecar is not None:
        try:
            side = read_sidecar(sidecar)
        except ValueError as err:
            raise CheckpointError(str(err)) from None
        notes.append(f"description from {sidecar}")
    given = _given(flags, side, sidecar)
    described = given.merged
    _check_combination(given, path)
    if described.model is not None and flags.model is None and not trust and not inspect_only:
        reference = described.model
        named = f"{reference.target}:{reference.name}" if reference.kind == "file" else reference
        raise CheckpointError(
            f"{sidecar} names model code {reference}, which would run to build the model, and "
            f"code named by a file runs only with consent: pass --model {named} yourself, or "
            "--trust-checkpoint if you trust the sidecar"
        )
    try:
        sha = file_sha256(path)
    except OSError as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({_first_line(err)}); check its permissions"
        ) from None

    kind = code_archive_kind(path)
    if kind is not None:
        if kind != "torchscript":
            raise CheckpointError(_program_unsupported(path, kind))
        _refuse_on_graph(given, path, "a TorchScript archive")
        if not run_code:
            raise CheckpointError(_torchscript_refused(path))
        try:
            with _open(path) as handle:
                graph = torch.jit.load(handle, map_location="cpu")
        except CheckpointError:
            raise
        except Exception as err:
            # Trusted TorchScript runs its own code while loading; any failure is the file's.
            raise CheckpointError(
                f"{path}: loading the trusted TorchScript archive failed ({_first_line(err)}); "
                "expected a file written by torch.jit.save: re-save it"
            ) from None
        spec, flag_notes = _wrap_graph(graph, given, path, "torchscript")
        notes += ["ran the TorchScript archive's code (--trust-checkpoint)", *flag_notes]
        return _finish(
            graph,
            _with_sources(spec, given, path),
            path,
            sha,
            None,
            notes,
            device,
            flag_notes=flag_notes,
        )

    raw = read_raw(path, run_code)
    if isinstance(raw, nn.Module):
        _refuse_on_graph(given, path, "a pickled whole module")
        spec, flag_notes = _wrap_graph(raw, given, path, "pickled-module")
        notes += ["unpickled a whole module (--trust-checkpoint)", *flag_notes]
        return _finish(
            raw,
            _with_sources(spec, given, path),
            path,
            sha,
            None,
            notes,
            device,
            flag_notes=flag_notes,
        )

    flag_notes = []
    classes_known = True
    if (
        isinstance(raw, Mapping)
        and isinstance(raw.get("format"), str)
        and raw["format"] == FORMAT_NAME
    ):
        spec, flag_notes = _apply_overrides(_spec_from_document(raw, path), given, path)
        weights = _our_weights(raw, path)
        recorded = raw.get("weights_sha256")
        if recorded is None:
            if not trust:
                raise CheckpointError(
                    f"{path}: a {FORMAT_NAME} file must record its 'weights_sha256' "
                    "(save_checkpoint always writes it), got none, so damage or edits to the "
                    f"weights cannot be detected; {_RESAVE}, or pass --trust-checkpoint to load "
                    "it unchecked"
                )
            notes.append("no recorded weights sha256: loaded unchecked (--trust-checkpoint)")
        elif not isinstance(recorded, str):
            raise _document_error(path, "weights_sha256", "a hex string", recorded)
        elif recorded != weights_sha256(weights):
            raise CheckpointError(
                f"{path}: the weights do not match their recorded sha256 (file damaged or edited); "
                "re-create it from its source"
            )
        if described.model is not None:
            flag_notes.append(
                f"{given.origin('model')} {described.model} is applied to {path}: the model is "
                f"built from that code instead of the recorded architecture {spec.arch} "
                f"({spec.layer} layers), and the file's weights load into it strictly"
            )
    else:
        weights, fmt = _foreign_state_dict(raw, path)
        _check_tensors(weights, path, "weight ")
        if described.model is not None:
            spec = _user_spec(given, path, fmt)
            classes_known = (
                shape_and_classes(described.dataset, None, described.num_classes)[1] is not None
            )
        else:
            spec = _resolve_foreign(described, path, fmt, weights)
    notes += flag_notes

    if described.model is not None:
        if inspect_only:
            raise CodeNotRunError(
                f"--model {described.model} would build the model from that code and load the "
                "weights into it; inspect never runs code",
                described.model,
            )
        network, spec, source, user_notes = _load_user(given, spec, classes_known, weights, path)
        return _finish(
            network,
            _with_sources(spec, given, path),
            path,
            sha,
            weights_sha256(network.state_dict()),
            notes + user_notes,
            device,
            model_source=source,
            flag_notes=flag_notes,
        )

    # Keys and shapes are checked on a meta-device skeleton first, so a description that does
    # not fit the weights costs no memory however large it claims the network is. Dropout-family
    # layers hold no weights (and some draw numbers while built), so the skeleton has none.
    with torch.device("meta"):
        skeleton = _build(replace(spec, layer=LayerSpec()), path)
    weights, remap_notes = _remap(weights, skeleton, spec.arch)
    _check_match(skeleton, weights, path, spec)
    network = _build(spec, path)
    notes += remap_notes
    if any("torchvision-style" in n for n in remap_notes):
        spec = replace(spec, source_format="torchvision-vgg")
    spec = _with_sources(spec, given, path)
    try:
        network.load_state_dict(weights, strict=True)
        model_sha = weights_sha256(network.state_dict())
        return _finish(network, spec, path, sha, model_sha, notes, device, flag_notes=flag_notes)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path}: the weights cannot be loaded into {spec.arch!r} ({_first_line(err)}); "
            "re-save them from the trained model (model.state_dict())"
        ) from None


def _with_sources(spec: CheckpointSpec, given: _Given, path: Path) -> CheckpointSpec:
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


def _finish(
    network: nn.Module,
    spec: CheckpointSpec,
    path: Path,
    sha: str,
    weights_sha: str | None,
    notes: list[str],
    device: str | torch.device,
    *,
    model_source: Mapping[str, Any] | None = None,
    flag_notes: list[str] | tuple[str, ...] = (),
) -> LoadedCheckpoint:
    model = Normalized(network, spec.mean, spec.std).to(device).eval()
    return LoadedCheckpoint(
        model, spec, path, sha, weights_sha, tuple(notes), model_source, tuple(flag_notes)
    )


def build_model(spec: CheckpointSpec) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (network, normalised model) pair for ``spec``."""
    network = build_network(
        spec.arch, spec.input_shape, spec.num_classes, spec.layer, **spec.arch_kwargs
    )
    return network, Normalized(network, spec.mean, spec.std)
