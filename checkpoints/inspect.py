"""What a checkpoint file is, said without running anything from it.

The container format, what was inferred (layout, batch norm, number of classes, matching
architectures), what is still missing to load it, and its sha256. Nothing from the file ever
runs: files of weights are read with ``weights_only=True``; a TorchScript archive (code) is
described from its zip listing and metadata records alone, and a file of pickled Python objects
from the name of the first object it would build. The code ``--model FILE.py:NAME`` names is
never imported either: the file is parsed to check that it defines NAME.

The command, ``python -m checkpoints.inspect`` (``robaudit-inspect``), is
:mod:`commands.inspect`.
"""

from __future__ import annotations

import contextlib
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from checkpoints.checkfile import error_summary
from checkpoints.foreign import foreign_state_dict
from checkpoints.format import (
    FORMAT_NAME,
    CheckpointError,
    CodeNotRunError,
    PickledObjectsError,
    code_archive_kind,
    file_sha256,
    graph_description_error,
    infer_architectures,
    load_with_options,
    read_raw,
)
from checkpoints.spec import Description, read_sidecar, sidecar_path
from checkpoints.usermodel import check_source
from core.boundary import EXIT_WOULD_NOT_LOAD, open_input

__all__ = ["describe_archive", "describe_weights", "inspect_file"]

_ARCHIVE_NAMES = {
    "torchscript": "TorchScript archive (code: runs on load and on every forward pass)",
    "torch.export": "torch.export archive (.pt2, a program; not loadable here)",
    "torch.package": "torch.package archive (Python source; not loadable here)",
}
# Metadata records read as text; each is a few bytes, and no more than this is ever read.
_RECORD_BYTES = 64


def describe_archive(path: Path, kind: str) -> list[tuple[str, str]]:
    """(field, value) lines about a code archive, from its zip listing and metadata only.

    Reads the central directory and a few tiny text records (``version``, ``byteorder``,
    ``archive_format``); never unpickles, compiles or imports anything from it.

    Raises:
        CheckpointError: the zip archive cannot be read.
    """
    try:
        with (
            open_input(path, "checkpoint", CheckpointError) as handle,
            zipfile.ZipFile(handle) as archive,
        ):
            infos = archive.infolist()
            names = [info.filename for info in infos]
            top = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
            prefix = f"{top}/" if top else ""
            sizes = {info.filename[len(prefix) :]: info.file_size for info in infos}

            def record(name: str) -> str | None:
                if name not in sizes:
                    return None
                with archive.open(prefix + name) as handle:
                    data = handle.read(_RECORD_BYTES)
                return data.decode("ascii", "replace").strip() or "(empty)"

            records = {
                name: record(name)
                for name in ("version", ".data/version", "byteorder", "archive_format")
            }
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} looks like a zip archive but cannot be read ({error_summary(err)}); "
            "expected a complete file written by torch.save or torch.jit.save"
        ) from None
    code = sorted(n for n in sizes if n.startswith("code/") and n.endswith(".py"))
    if kind == "torch.package":
        code = sorted(n for n in sizes if n.endswith(".py"))
    extra = sorted(n[len("extra/") :] for n in sizes if n.startswith("extra/"))
    data = [n for n in sizes if n.startswith("data/")]

    def listing(items: list[str]) -> str:
        head = ", ".join(items[:8])
        return f"{head}, ... ({len(items)} in all)" if len(items) > 8 else head or "none"

    rows = [
        ("format", _ARCHIVE_NAMES[kind]),
        ("archive name", top or "(no top folder)"),
        ("entries", f"{len(names)} ({sum(sizes.values()):,} bytes uncompressed)"),
        ("code files", str(len(code))),
        ("code", listing(code)),
    ]
    for name in ("data.pkl", "constants.pkl"):
        if name in sizes:
            rows.append((name, f"{sizes[name]:,} bytes"))
    rows.append(("data records", f"{len(data)} ({sum(sizes[n] for n in data):,} bytes)"))
    rows.append(("extra files", listing(extra)))
    for name, value in records.items():
        if value is not None:
            rows.append((name, value))
    return rows


def _archive_needs(kind: str, path: Path, description: Description) -> str:
    """What loading a code archive needs beyond the flags and sidecar given."""
    if kind != "torchscript":
        return "a state_dict instead: this toolkit does not load programs of this kind"
    sidecar = sidecar_path(path)
    described = description
    if sidecar is not None:
        # Loading reports a bad sidecar; here only what it would add counts.
        with contextlib.suppress(ValueError):
            described = description.merged_over(read_sidecar(sidecar))
    needs = "--trust-checkpoint to load (only if you trust its source)"
    if described.dataset is None and described.input_shape is None:
        needs += ", and --dataset or --input-shape"
    return needs


def describe_weights(weights: Mapping[str, Tensor]) -> list[tuple[str, str]]:
    """(field, value) lines about a foreign state_dict's layout."""
    keys = list(weights)
    prefixes = sorted(
        {
            k.split(".", 1)[0] + "."
            for k in keys
            if k.split(".", 1)[0] in ("model", "module", "_orig_mod")
        }
    )
    if any(k.startswith(("features.", "classifier.")) for k in keys):
        layout = "torchvision-style VGG (features.*, classifier.*)"
    elif any(".layer1." in k or k.startswith("layer1.") for k in keys):
        layout = "ResNet (conv1, bn1, layerK.J, linear)"
    elif any(k.startswith("block1.") or ".block1." in k for k in keys):
        layout = "wide ResNet (blockK.J)"
    elif all(k.split(".")[-2].isdigit() for k in keys if k.count(".") >= 1):
        layout = "flat Sequential (N.*)"
    else:
        layout = "unrecognised"
    matrices = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 2]
    lines = [
        ("tensors", f"{len(keys)} ({sum(v.numel() for v in weights.values()):,} values)"),
        ("prefixes", ", ".join(prefixes) or "none"),
        ("layout", layout),
        ("batch norm", "yes" if any(k.endswith("running_mean") for k in keys) else "no"),
        ("classes", str(int(matrices[-1].shape[0])) if matrices else "unknown"),
    ]
    matches = infer_architectures(weights)
    lines.append(
        (
            "matches",
            "; ".join(f"{a} on {d}-shaped input" for a, d, _ in matches)
            or "no registered architecture",
        )
    )
    return lines


def inspect_file(
    path: Path, description: Description, trust: bool
) -> tuple[list[tuple[str, str]], int]:
    """The rows that say what the file at ``path`` is, and the command's exit status: 0 when
    it would load as described, ``EXIT_WOULD_NOT_LOAD`` when something is missing to load it
    (a flag, ``trust`` for a file that carries code, or the user's model code, never run
    here). Raises ``CheckpointError``, ``ValueError`` or ``OSError`` for an unreadable file."""
    open_input(path, "checkpoint", CheckpointError).close()
    rows: list[tuple[str, str]] = [("file", str(path)), ("sha256", file_sha256(path))]
    sidecar = sidecar_path(path)
    rows.append(("sidecar", str(sidecar) if sidecar else "none"))
    kind = code_archive_kind(path)
    if kind is not None:
        rows += describe_archive(path, kind)
        rows.append(("loads", "not here: inspect never runs code from a file"))
        rows.append(("needs", _archive_needs(kind, path, description)))
        refused = graph_description_error(path, description) if kind == "torchscript" else None
        if refused is not None:
            rows.append(("refused", refused))
        return rows, EXIT_WOULD_NOT_LOAD
    try:
        raw = read_raw(path, trust=False)
    except PickledObjectsError as err:
        rows += [
            ("format", "pickled Python objects (code: runs when unpickled)"),
            ("would build", err.detail.removeprefix("it would build ")),
            ("loads", "not here: inspect never runs code from a file"),
            (
                "needs",
                "--trust-checkpoint to load (only if you trust its source); or save "
                "model.state_dict() and pass --model yourfile.py:YourClass",
            ),
        ]
        return rows, EXIT_WOULD_NOT_LOAD
    rows += _describe_data(raw, path)
    return rows, _try_loading(path, description, trust, rows)


def _describe_data(raw: object, path: Path) -> list[tuple[str, str]]:
    """Rows about a weights-only file's container (ours or a foreign layout)."""
    if (
        isinstance(raw, Mapping)
        and isinstance(raw.get("format"), str)
        and raw["format"] == FORMAT_NAME
    ):
        return [("format", f"{FORMAT_NAME} version {raw.get('format_version')!r}")]
    weights, fmt = foreign_state_dict(raw, path)
    return [("format", fmt), *describe_weights(weights)]


def _try_loading(
    path: Path, description: Description, trust: bool, rows: list[tuple[str, str]]
) -> int:
    """Load a weights-only file as described (never running code); add rows; exit status."""
    try:
        loaded = load_with_options(path, description, trust, False, "cpu", inspect_only=True)
    except CodeNotRunError as err:
        # The user's model code is read (parsed, never imported) to say what it names.
        rows.append(("model code", check_source(err.reference)))
        rows.append(
            (
                "loads",
                f"not here: --model would build the model from {err.reference} (its code "
                "runs in the audit, because you name it; inspect never runs code) and load "
                "these weights into it strictly",
            )
        )
        return EXIT_WOULD_NOT_LOAD
    except CheckpointError as err:
        rows.append(("loads", "no"))
        rows.append(("missing", str(err)))
        return EXIT_WOULD_NOT_LOAD
    spec = loaded.spec
    rows += [
        ("loads", "yes"),
        ("architecture", f"{spec.arch} {dict(spec.arch_kwargs) or ''}".strip()),
        ("layers", str(spec.layer)),
        ("dataset", spec.dataset or "not given (needs --dataset or --data to evaluate)"),
        ("input shape", "x".join(map(str, spec.input_shape))),
        ("classes", str(spec.num_classes)),
        (
            "normalisation",
            "none" if spec.mean is None else f"mean {list(spec.mean)} std {list(spec.std or ())}",
        ),
        ("bounds", f"{spec.bounds[0]}, {spec.bounds[1]}"),
        ("weights sha256", loaded.weights_sha256 or "n/a (graph archive)"),
    ]
    if spec.clean_accuracy is not None:
        rows.append(("recorded accuracy", f"{spec.clean_accuracy:.4f}"))
    rows += [("note", n) for n in loaded.notes]
    return 0


if __name__ == "__main__":
    from commands.inspect import main

    sys.exit(main())
