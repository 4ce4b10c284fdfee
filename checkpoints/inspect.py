"""Say what a checkpoint file is, without running anything from it.

Usage:
    python -m checkpoints.inspect FILE [--arch ... --dataset ...]
    python -m checkpoints.inspect --list

Prints the container format, what was inferred (layout, batch norm, number of classes,
matching architectures), what is still missing to load it, and its sha256. Exit status 0 when
the file would load as described, 1 when something is missing, 2 for an unreadable file or a
bad flag.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from checkpoints.architectures import architecture_names, get_architecture
from checkpoints.cli import add_description_arguments, description_from_arguments
from checkpoints.format import (
    FORMAT_NAME,
    CheckpointError,
    _foreign_state_dict,
    _is_torchscript,
    file_sha256,
    infer_architectures,
    load_checkpoint,
    read_raw,
)
from checkpoints.layers import layer_kinds
from checkpoints.spec import sidecar_path

__all__ = ["describe_weights", "main"]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m checkpoints.inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", type=Path, help="checkpoint file")
    parser.add_argument("--list", action="store_true", help="list architectures and layer kinds")
    add_description_arguments(parser)
    args = parser.parse_args(argv)
    if args.list:
        for name in architecture_names():
            print(f"{name:10s} {get_architecture(name).description}")
        print(f"layer kinds: {', '.join(layer_kinds())}")
        return 0
    if args.file is None:
        parser.print_usage(sys.stderr)
        print("error: give a checkpoint FILE (or --list)", file=sys.stderr)
        return 2
    try:
        description = description_from_arguments(args)
        path: Path = args.file
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
        rows: list[tuple[str, str]] = [("file", str(path)), ("sha256", file_sha256(path))]
        sidecar = sidecar_path(path)
        rows.append(("sidecar", str(sidecar) if sidecar else "none"))
        if _is_torchscript(path):
            rows.append(("format", "TorchScript archive (carries its own graph)"))
        else:
            raw = read_raw(path, trust=False)
            if isinstance(raw, Mapping) and raw.get("format") == FORMAT_NAME:
                rows.append(("format", f"{FORMAT_NAME} version {raw.get('format_version')}"))
            else:
                weights, fmt = _foreign_state_dict(raw, path)
                rows.append(("format", fmt))
                rows += describe_weights(weights)
        status = 0
        try:
            loaded = load_checkpoint(path, description, trust=args.trust_checkpoint)
        except CheckpointError as err:
            rows.append(("loads", "no"))
            rows.append(("missing", str(err)))
            status = 1
        else:
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
                    "none"
                    if spec.mean is None
                    else f"mean {list(spec.mean)} std {list(spec.std or ())}",
                ),
                ("bounds", f"{spec.bounds[0]}, {spec.bounds[1]}"),
                ("weights sha256", loaded.weights_sha256 or "n/a (graph archive)"),
            ]
            if spec.clean_accuracy is not None:
                rows.append(("recorded accuracy", f"{spec.clean_accuracy:.4f}"))
            rows += [("note", n) for n in loaded.notes]
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return status


if __name__ == "__main__":
    sys.exit(main())
