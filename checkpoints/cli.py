"""Command-line flags that describe a checkpoint, shared by every command that loads one."""

from __future__ import annotations

import argparse

from checkpoints.layers import LayerSpec
from checkpoints.spec import (
    Description,
    parse_bounds,
    parse_normalization,
    parse_num_classes,
    parse_shape,
)

__all__ = ["add_description_arguments", "description_from_arguments"]


def add_description_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--arch``, ``--layers``, ``--dataset``, ... (they override a sidecar file)."""
    group = parser.add_argument_group(
        "checkpoint description",
        "for files that do not describe themselves (plain state_dicts, Lightning .ckpt, "
        "TorchScript); these override a sidecar FILE.toml / FILE.json",
    )
    group.add_argument("--arch", help="architecture: mlp, lenet5, vgg16_bn, vgg16, resnet18, wrn16")
    group.add_argument(
        "--layers",
        metavar="SPEC",
        help="dropout-family layers, KIND[:ARGS][@POS,...], e.g. normout:spatiotemporal@48,51",
    )
    group.add_argument("--widen-factor", type=int, help="wrn16 widen factor")
    group.add_argument("--dataset", help="digits, mnist, fashion-mnist or cifar10")
    group.add_argument("--num-classes", type=int, help="number of classes (default: the dataset's)")
    group.add_argument(
        "--input-shape", metavar="C,H,W", help="input shape (default: the dataset's)"
    )
    group.add_argument(
        "--normalization",
        metavar="NORM",
        help="none, cifar10 (the NormOut code's) or MEAN,..:STD,.. (default: the layout's)",
    )
    group.add_argument("--bounds", metavar="LOW,HIGH", help="input range (default 0,1)")
    group.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow code from the file: pickled Python objects and TorchScript archives run "
        "when loaded (and TorchScript on every forward pass); trusted files only",
    )


def description_from_arguments(args: argparse.Namespace) -> Description:
    """The :class:`Description` the flags give (ValueError on a malformed flag)."""
    return Description(
        arch=args.arch,
        layer=None if args.layers is None else _layers(args.layers),
        arch_kwargs=None if args.widen_factor is None else {"widen_factor": args.widen_factor},
        dataset=args.dataset,
        num_classes=parse_num_classes(args.num_classes, "--num-classes"),
        input_shape=parse_shape(args.input_shape, "--input-shape"),
        normalization=parse_normalization(args.normalization, "--normalization"),
        bounds=parse_bounds(args.bounds, "--bounds"),
    )


def _layers(text: str) -> LayerSpec:
    try:
        return LayerSpec.parse(text)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--layers: {err}") from None
