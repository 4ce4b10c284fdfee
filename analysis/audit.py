"""The audit command line: ``python -m analysis.audit CHECKPOINT [CHECKPOINT ...]``.

Loads each checkpoint and its evaluation data, measures clean accuracy on a fixed, seeded
selection of test samples, prints a summary and writes ``OUT/<checkpoint-stem>/audit.json``.

Exit status: 0 success, 2 bad input (one line on stderr; ``--verbose`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from checkpoints import CheckpointError, LoadedCheckpoint, load_checkpoint
from checkpoints.cli import add_description_arguments, description_from_arguments
from checkpoints.datasets import Dataset, DatasetError, load_dataset
from checkpoints.train import evaluate_accuracy

__all__ = ["SCHEMA_VERSION", "EvaluationSet", "evaluation_set", "main", "select_samples"]

SCHEMA_VERSION = "0.1"


@dataclass(frozen=True)
class EvaluationSet:
    """The samples an audit evaluates.

    Attributes:
        x: images [N, C, H, W] in the model's bounds.
        y: labels [N].
        indices: positions of the samples in the test split [N] (ascending).
        dataset: the dataset they come from.
    """

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    dataset: Dataset


def select_samples(total: int, num_samples: int | None, seed: int) -> torch.Tensor:
    """A fixed, seeded choice of ``num_samples`` of ``total`` indices (all if fewer), ascending."""
    if num_samples is not None and num_samples <= 0:
        raise ValueError(f"--num-samples must be positive, got {num_samples}")
    if num_samples is None or num_samples >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:num_samples].sort().values


def evaluation_set(
    loaded: LoadedCheckpoint, data: str | None, num_samples: int | None, seed: int
) -> EvaluationSet:
    """The test samples for ``loaded``, checked against its input shape and classes."""
    spec = loaded.spec
    name = spec.dataset
    if name is None and data is None:
        raise DatasetError(
            f"{loaded.path} does not name its dataset; give --dataset NAME or --data PATH"
        )
    dataset = load_dataset(name or "file", "test", data)
    if tuple(dataset.x.shape[1:]) != tuple(spec.input_shape):
        raise DatasetError(
            f"dataset {dataset.source} has images of shape {tuple(dataset.x.shape[1:])}, but "
            f"{loaded.path.name} expects {tuple(spec.input_shape)}; pass the right --data or --dataset"
        )
    if int(dataset.y.max()) >= spec.num_classes or int(dataset.y.min()) < 0:
        raise DatasetError(
            f"dataset {dataset.source} has labels in [{int(dataset.y.min())}, {int(dataset.y.max())}], "
            f"but the model has {spec.num_classes} classes"
        )
    indices = select_samples(len(dataset), num_samples, seed)
    return EvaluationSet(dataset.x[indices], dataset.y[indices], indices, dataset)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available; use --device cpu")
    return torch.device(name)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(document, out, indent=1)
            out.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def audit_one(path: Path, args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Load, evaluate and write the document for one checkpoint; returns the document."""
    started = time.time()
    device = _device(args.device)
    loaded = load_checkpoint(path, description_from_arguments(args), args.trust_checkpoint, device)
    evaluation = evaluation_set(loaded, args.data, args.num_samples, args.seed)
    correct, total = evaluate_accuracy(
        loaded.model, evaluation.x.to(device), evaluation.y.to(device), args.batch_size
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "provenance": {
            "checkpoint": str(path),
            "checkpoint_sha256": loaded.sha256,
            "weights_sha256": loaded.weights_sha256,
            "torch": torch.__version__,
            "seed": args.seed,
            "command_line": ["python", "-m", "analysis.audit", *argv],
            "started": started,
            "finished": time.time(),
            "host": platform.node(),
            "device": str(device),
        },
        "checkpoint": loaded.spec.to_dict(),
        "loading_notes": list(loaded.notes),
        "evaluation": {
            "dataset": evaluation.dataset.name,
            "source": evaluation.dataset.source,
            "num_samples": total,
            "indices": evaluation.indices.tolist(),
        },
        "clean_accuracy": correct / total,
        "num_correct": correct,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT")
    parser.add_argument("--data", help="dataset folder or file (else the checkpoint's dataset, "
                        "found through $ROBAUDIT_DATA)")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="evaluation samples, a fixed seeded selection (default 1000 or the whole test split)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default out/)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    add_description_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.batch_size <= 0:
            raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
        documents = [(path, audit_one(path, args, argv)) for path in args.checkpoints]
    except (CheckpointError, DatasetError, ValueError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, document in documents:
        target = args.out / path.stem / "audit.json"
        _write_json(target, document)
        if not args.quiet:
            spec = document["checkpoint"]
            layer = spec["layer"]
            print(f"{path}: {spec['arch']} with {layer['kind']} layers on {document['evaluation']['dataset']}")
            print(
                f"  clean accuracy {document['clean_accuracy']:.4f} "
                f"({document['num_correct']}/{document['evaluation']['num_samples']})"
            )
            print(f"  result written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
