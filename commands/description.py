"""Command-line flags that describe a checkpoint, shared by every command that loads one."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from checkpoints.layers import LayerSpec
from checkpoints.spec import (
    Description,
    parse_bounds,
    parse_dataset,
    parse_normalization,
    parse_num_classes,
    parse_shape,
)
from checkpoints.usermodel import parse_model_kwargs, parse_model_reference

if TYPE_CHECKING:
    from checkpoints.format import LoadedCheckpoint

__all__ = ["add_description_arguments", "description_from_arguments", "say_flag_notes"]


def add_description_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--arch``, ``--layers``, ``--dataset``, ... (they override a sidecar file)."""
    group = parser.add_argument_group(
        "checkpoint description",
        "for files that do not describe themselves (plain state_dicts, Lightning .ckpt, "
        "TorchScript); these override a sidecar FILE.toml / FILE.json. On a file that describes "
        "itself or carries its own graph each flag is applied (said on stderr) or refused (see "
        "README)",
    )
    group.add_argument("--arch", help="architecture: mlp, lenet5, vgg16_bn, vgg16, resnet18, wrn16")
    group.add_argument(
        "--model",
        metavar="FILE.py:NAME",
        help="build the model from your own code: FILE.py:NAME or package.module:NAME, NAME a "
        "class or a function returning the nn.Module; the code runs because you name it, and "
        "the weights load into it strictly",
    )
    group.add_argument(
        "--model-kwargs",
        metavar="ARGS",
        help="keyword arguments for --model: JSON ('{\"width\": 64}') or key=value,...",
    )
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
        "--normalisation",
        metavar="NORM",
        help="what the model subtracts and divides by, per channel, of [0, 1] pixels: none, "
        "imagenet, cifar10 (the NormOut code's), cifar10-torchvision, mnist, or MEAN,..:STD,.. "
        "(default: none, or the NormOut code's for vgg16_bn/vgg16)",
    )
    group.add_argument(
        "--bounds",
        metavar="LOW,HIGH",
        help="the range of the pixels the model takes and the attacks stay in (default 0,1)",
    )
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
        dataset=parse_dataset(args.dataset, "--dataset"),
        num_classes=parse_num_classes(args.num_classes, "--num-classes"),
        input_shape=parse_shape(args.input_shape, "--input-shape"),
        normalization=parse_normalization(args.normalization, "--normalization"),
        bounds=parse_bounds(args.bounds, "--bounds"),
        model=None if args.model is None else parse_model_reference(args.model, "--model"),
        model_kwargs=parse_model_kwargs(args.model_kwargs, "--model-kwargs"),
    )


def say_flag_notes(loaded: LoadedCheckpoint, stream: TextIO | None = None) -> None:
    """Print, one line each, what the description flags did to a file that describes itself
    or carries its own graph (``LoadedCheckpoint.flag_notes``)."""
    for note in loaded.flag_notes:
        print(f"note: {note}", file=stream or sys.stderr)


def _layers(text: str) -> LayerSpec:
    try:
        return LayerSpec.parse(text)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--layers: {err}") from None
