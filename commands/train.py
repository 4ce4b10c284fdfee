"""Seeded, deterministic CPU training that writes our checkpoint format; builds the zoo.

Examples:
    python -m checkpoints.train --arch mlp --dataset digits --layers qsd:drop_rate=0.2,alpha=0.2 \
        --epochs 60 --out my-mlp.pt
    python -m checkpoints.train --zoo            # rebuild checkpoints/zoo/ and its manifest
    python -m checkpoints.train --zoo --only digits-mlp-qsd

Determinism: all randomness (initialisation, shuffling, the dropout-family layers' masks) comes
from generators seeded with ``--seed``; deterministic algorithms are enforced and the number of
CPU threads is fixed (``--threads``, default 1), so the same command writes the same weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from checkpoints.datasets import DatasetError
from checkpoints.format import CheckpointError, save_checkpoint
from checkpoints.train import ZOO, TrainConfig, build_zoo, train
from core.boundary import check_writable, writing

__all__ = ["main", "script"]


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m checkpoints.train") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--zoo", action="store_true", help="train the example zoo into checkpoints/zoo/"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="with --zoo: only these entries")
    parser.add_argument("--arch", help="architecture (see python -m checkpoints.inspect --list)")
    parser.add_argument("--dataset", help="digits, mnist, fashion-mnist or cifar10")
    parser.add_argument(
        "--layers", default="none", help="e.g. normout:spatiotemporal, qsd:drop_rate=0.2,alpha=0.2"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        help="cross-entropy label smoothing in [0, 1) (the zoo uses 0.1)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (fixed for determinism)"
    )
    parser.add_argument("--data", help="dataset folder or file (else $ROBAUDIT_DATA/<name>)")
    parser.add_argument("--out", help="output checkpoint file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        if args.zoo:
            names = args.only or list(ZOO)
            unknown = [n for n in names if n not in ZOO]
            if unknown:
                raise ValueError(f"unknown zoo entries {unknown}; known: {', '.join(ZOO)}")
            build_zoo(names, args.data, sys.stderr)
            return 0
        if not (args.arch and args.dataset and args.out):
            raise ValueError("give --arch, --dataset and --out (or --zoo)")
        check_writable(Path(args.out), "--out")
        config = TrainConfig(
            args.arch,
            args.dataset,
            args.layers,
            args.epochs,
            args.batch_size,
            args.lr,
            args.weight_decay,
            args.seed,
            args.label_smoothing,
        )
        network, spec = train(config, args.data, sys.stderr)
        with writing(Path(args.out), "--out"):
            path = save_checkpoint(args.out, network, spec)
        print(f"wrote {path} (clean accuracy {spec.clean_accuracy:.4f})")
        return 0
    except (ValueError, CheckpointError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def script() -> int:
    """The ``robaudit-train`` console script: :func:`main` under its own name."""
    return main(prog="robaudit-train")


if __name__ == "__main__":
    sys.exit(main())
