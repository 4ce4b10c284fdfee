"""Evaluation and training data, read from disk (nothing is ever downloaded).

Every loader returns images as float32 NCHW in [0, 1] and labels as int64.

Datasets and where they are looked for, in order: the ``path`` argument (``--data``), then
``$ROBAUDIT_DATA/<name>``, then the defaults below.

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 17 grey levels scaled to [0, 1]).
  Fixed split: the first 1347 images are the training set, the last 450 the test set (the set
  is ordered by writer, so the split is close to writer-disjoint). Always available.
- ``mnist`` / ``fashion-mnist``: a folder with the four IDX files
  (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-...``), gzipped or
  not. Fashion-MNIST defaults to ``/usr/share/datasets/fashion-mnist`` (Debian's
  ``dataset-fashion-mnist``).
- ``cifar10``: the standard ``cifar-10-batches-py`` folder (or its parent), or an ``.npz``
  with ``x`` uint8 [N, 32, 32, 3] and ``y``.
- any ``.npz`` (``x``, ``y``) or ``.pt`` (a dict with tensors ``x`` and ``y``) file: uint8
  images are scaled by 1/255, float images must already lie in [0, 1]; NHWC is recognised.

Every file is validated when it is read, before any work, and every problem is one
:class:`DatasetError` line naming the file (and the array), what was expected, what arrived
and the fix:

- images: float (any width) or uint8, [N, H, W], [N, C, H, W] or [N, H, W, C] with N >= 1 and
  no empty axis; no NaN or Inf; float images inside the bounds (default [0, 1]).
- uint8 images must use the 0..255 scale. A set whose brightest pixel is below
  ``UINT8_MIN_PEAK`` (64, a quarter of the scale) holds levels such as the 0..16 of the raw
  digits set and is refused; so is a set of ``UINT8_LARGE_SET`` (1000) images or more whose
  brightest pixel is below ``UINT8_LARGE_PEAK`` (200): thousands of real photographs or scans
  essentially always reach 200 somewhere.
- labels: an integer dtype (float labels are refused, not truncated), 1-D, one per image,
  in [0, num_classes) when the number of classes is known.
- ``.npz`` files are read without pickle (object arrays are refused); ``.pt`` files with
  ``torch.load(weights_only=True)``; CIFAR-10 batch pickles admit numpy arrays only.

This module finds a dataset and reads the built-in digits; the rest are its parts:
``checkpoints.datacheck`` (the dataset, its error and the validation of images and labels),
``checkpoints.idx`` (MNIST and Fashion-MNIST), ``checkpoints.cifar`` (CIFAR-10) and
``checkpoints.tensorfiles`` (``.npz`` and ``.pt`` files).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from checkpoints.checkfile import error_summary
from checkpoints.cifar import cifar_folder
from checkpoints.datacheck import (
    CLASS_NAMES,
    UINT8_LARGE_PEAK,
    UINT8_LARGE_SET,
    UINT8_MIN_PEAK,
    Dataset,
    DatasetError,
    Expect,
    check_dataset,
    checked_pair,
    dataset_names,
    make_expect,
)
from checkpoints.idx import idx_folder, read_idx
from checkpoints.tensorfiles import tensor_file
from core.boundary import open_input
from core.document import UNNAMED

__all__ = [
    "DATA_ENV",
    "UINT8_LARGE_PEAK",
    "UINT8_LARGE_SET",
    "UINT8_MIN_PEAK",
    "UNNAMED",
    "Dataset",
    "DatasetError",
    "check_dataset",
    "dataset_names",
    "load_dataset",
    "read_idx",
]


DATA_ENV = "ROBAUDIT_DATA"
_DIGITS_TRAIN = 1347
_DEFAULT_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}


# ------------------------------------------------------------------------------------- digits


def _digits(split: str, expect: Expect) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    part = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    images, labels = checked_pair(
        bunch.images[part].astype(np.float32) / 16.0,
        bunch.target[part],
        "sklearn.datasets.load_digits",
        expect,
    )
    return Dataset(
        images,
        labels,
        "digits",
        split,
        "sklearn.datasets.load_digits",
        tuple(CLASS_NAMES["digits"]),
    )


def _read(path: Path, name: str, split: str, expect: Expect) -> Dataset:
    if path.is_file():
        return tensor_file(path, name, "file" if name not in CLASS_NAMES else split, expect)
    if not path.is_dir():
        open_input(path, "dataset", DatasetError).close()  # says what it is instead (a FIFO, ...)
        raise DatasetError(f"{path} is neither a file nor a folder; give a dataset file or folder")
    if name in ("mnist", "fashion-mnist"):
        return idx_folder(path, name, split, expect)
    if name == "cifar10":
        for candidate in (path, path / "cifar-10-batches-py"):
            if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
                return cifar_folder(path, split, expect)
        npz = sorted(p for p in path.glob("*.npz") if p.is_file())
        if len(npz) == 1:
            return tensor_file(npz[0], name, split, expect)
        raise DatasetError(
            f"{path} holds neither cifar-10-batches-py nor exactly one .npz with x and y "
            f"(found {len(npz)} .npz files)"
        )
    raise DatasetError(
        f"{path} is a folder, but dataset {name!r} is read from a file; give the .npz or .pt "
        "file itself (a folder is read only for mnist, fashion-mnist and cifar10)"
    )


def load_dataset(
    name: str,
    split: str = "test",
    path: str | Path | None = None,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = None,
) -> Dataset:
    """Load a dataset by name (or a generic ``.npz``/``.pt`` file by path), validated.

    Args:
        name: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, or ``file`` with
            ``path`` pointing at a tensor file.
        split: ``train`` or ``test``.
        path: explicit location (``--data``); a folder or a file.
        num_classes: labels must lie in [0, num_classes); defaults to the built-in dataset's
            number of classes (none for a generic file).
        input_shape: the (C, H, W) the caller needs; also settles NCHW against NHWC.
        bounds: the range float images must lie in (default [0, 1]).

    Returns:
        The images (float32 [N, C, H, W] in [0, 1]) and labels (int64 [N]).

    Raises:
        DatasetError: not found, unreadable or invalid; one line that names the file and
            array, what was expected, what arrived and the fix. No other exception escapes.
    """
    if not isinstance(name, str) or not isinstance(split, str):
        raise DatasetError(f"dataset name and split must be strings, got {name!r}, {split!r}")
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if num_classes is None and name in CLASS_NAMES:
        num_classes = len(CLASS_NAMES[name])
    expect = make_expect(num_classes, input_shape, bounds)
    try:
        return _locate(name, split, path, expect)
    except OSError as err:
        raise DatasetError(
            f"{getattr(err, 'filename', None) or path or name}: cannot read the dataset "
            f"({error_summary(err)}); check the path and its permissions"
        ) from None


def _locate(name: str, split: str, path: str | Path | None, expect: Expect) -> Dataset:
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise DatasetError(f"--data must be a path, got {type(path).__name__} {path!r}")
        location = Path(path).expanduser()
        if "\x00" in str(location):
            raise DatasetError(f"--data {str(location)!r} contains a NUL byte; give a real path")
        if not location.exists():
            raise DatasetError(
                f"--data {location} does not exist; give the folder or file holding {name}"
            )
        return _read(location, name, split, expect)
    if name == "digits":
        return _digits(split, expect)
    if name not in CLASS_NAMES:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {', '.join(dataset_names())}, "
            "or give a file with --data"
        )
    tried = []
    env = os.environ.get(DATA_ENV)
    candidates = ([Path(env) / name] if env else []) + _DEFAULT_DIRS.get(name, [])
    for candidate in candidates:
        tried.append(str(candidate))
        if candidate.exists():
            return _read(candidate, name, split, expect)
    where = ", ".join(tried) if tried else f"nowhere (${DATA_ENV} is not set)"
    raise DatasetError(
        f"dataset {name!r} not found; looked in {where}. Nothing is downloaded: pass --data PATH "
        f"or set {DATA_ENV} to a folder that holds {name}/"
    )
