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
"""

from __future__ import annotations

import gzip
import math
import operator
import os
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from core.boundary import (
    DEFLATE_MAX_RATIO,
    INPUT_LIMITS,
    check_archive,
    open_input,
    size_text,
)

__all__ = [
    "DATA_ENV",
    "UINT8_LARGE_PEAK",
    "UINT8_LARGE_SET",
    "UINT8_MIN_PEAK",
    "Dataset",
    "DatasetError",
    "check_dataset",
    "dataset_names",
    "load_dataset",
    "read_idx",
]

DATA_ENV = "ROBAUDIT_DATA"
UINT8_MIN_PEAK = 64
UINT8_LARGE_SET = 1000
UINT8_LARGE_PEAK = 200
_DIGITS_TRAIN = 1347
_MAX_MESSAGE_PART = 160
_IDX_CHUNK = 1 << 20  # a gzipped IDX file is inflated this many bytes at a time
_DEFAULT_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
_CLASSES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
}


class DatasetError(ValueError):
    """A dataset that cannot be found, read or used; the message is one line.

    It names the file (and the array), what was expected, what arrived and the fix.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _brief(err: BaseException) -> str:
    """The first line of a foreign error message, shortened (some span pages)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    if len(text) > _MAX_MESSAGE_PART // 2 and ". " in text:
        text = text[: text.index(". ") + 1]
    if len(text) > _MAX_MESSAGE_PART:
        text = text[: _MAX_MESSAGE_PART - 3] + "..."
    return f"{type(err).__name__}: {text}"


@dataclass(frozen=True)
class Dataset:
    """Images and labels.

    Attributes:
        x: images, float32 [N, C, H, W] in [0, 1].
        y: labels, int64 [N].
        name: dataset name (or the file name for a generic file).
        split: ``train``, ``test`` or ``file``.
        source: where it was read from.
        classes: class names, when known.
    """

    x: Tensor
    y: Tensor
    name: str
    split: str
    source: str
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.y.shape[0])


UNNAMED = "tensors"
"""The name of images and labels handed over as tensors (``analysis.audit_model`` without
``dataset=``): no named dataset, so nothing to compare by name."""


def dataset_names() -> list[str]:
    """Names of the built-in datasets."""
    return sorted(_CLASSES)


@dataclass(frozen=True)
class _Expect:
    """What the caller knows about the data before reading it."""

    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)


# --------------------------------------------------------------------------------- validation


def _layouts(shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """The NCHW readings of an image array's shape, most likely first."""
    if len(shape) == 3:
        return [("[N, H, W]", (shape[0], 1, shape[1], shape[2]))]
    nchw = ("[N, C, H, W]", shape)
    nhwc = ("[N, H, W, C]", (shape[0], shape[3], shape[1], shape[2]))
    if shape[-1] in (1, 3) and shape[1] not in (1, 3):
        return [nhwc, nchw]
    return [nchw, nhwc]


def _images(array: np.ndarray, where: str, expect: _Expect) -> Tensor:
    """Validate images as stored and convert them to float32 NCHW in [0, 1].

    Args:
        array: uint8 or float images, [N, H, W], [N, C, H, W] or [N, H, W, C].
        where: the file and array, for messages.
        expect: the input shape and bounds the caller needs, if known.

    Returns:
        float32 [N, C, H, W].

    Raises:
        DatasetError: on any problem, in one line.
    """
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise DatasetError(
            f"{where}: expected uint8 (0..255) or float in [0, 1], got dtype {array.dtype}; "
            "save them as uint8 or float32"
        )
    if array.ndim not in (3, 4):
        raise DatasetError(
            f"{where}: expected [N, H, W], [N, C, H, W] or [N, H, W, C], got shape "
            f"{tuple(array.shape)}; reshape before saving"
        )
    if array.shape[0] < 1:
        raise DatasetError(f"{where}: the set is empty (shape {tuple(array.shape)}); save N >= 1")
    if 0 in array.shape:
        raise DatasetError(
            f"{where}: an image axis is empty (shape {tuple(array.shape)}); save whole images"
        )
    layouts = _layouts(tuple(array.shape))
    chosen = layouts[0]
    if expect.input_shape is not None:
        fits = [layout for layout in layouts if layout[1][1:] == tuple(expect.input_shape)]
        if not fits:
            seen = " or ".join(f"{name} {tuple(s[1:])}" for name, s in layouts)
            raise DatasetError(
                f"{where}: the model expects images of shape {tuple(expect.input_shape)} "
                f"(C, H, W), got shape {tuple(array.shape)} (read as {seen}); pass the "
                "dataset the model was trained on"
            )
        chosen = fits[0]
    low, high = expect.bounds
    if array.dtype == np.uint8:
        peak = int(array.max())
        count = array.shape[0]
        if peak < UINT8_MIN_PEAK or (count >= UINT8_LARGE_SET and peak < UINT8_LARGE_PEAK):
            need = UINT8_MIN_PEAK if peak < UINT8_MIN_PEAK else UINT8_LARGE_PEAK
            raise DatasetError(
                f"{where}: uint8 values lie in [{int(array.min())}, {peak}] over {count} images; "
                f"uint8 images are divided by 255, so a set must reach {need} somewhere "
                f"({UINT8_MIN_PEAK} for any set, {UINT8_LARGE_PEAK} from {UINT8_LARGE_SET} "
                f"images on); rescale: save x / {max(peak, 1)} as float32 in [0, 1], or "
                f"x * 255 // {max(peak, 1)} as uint8"
            )
        images = torch.from_numpy(np.array(array, copy=True)).float().div_(255.0)
    else:
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)
            first = tuple(int(i) for i in bad[0])
            kinds = "NaN" if np.isnan(array).any() else "Inf"
            if kinds == "NaN" and np.isinf(array).any():
                kinds = "NaN and Inf"
            raise DatasetError(
                f"{where}: {len(bad)} pixels are {kinds}, the first at index {list(first)}; "
                "replace or drop those images"
            )
        smallest, largest = float(array.min()), float(array.max())
        if smallest < low or largest > high:
            raise DatasetError(
                f"{where}: float images must lie in the bounds [{low:g}, {high:g}], got range "
                f"[{smallest:.6g}, {largest:.6g}]; rescale to [{low:g}, {high:g}] "
                "or save uint8 0..255"
            )
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if images.dim() == 3:
        images = images.unsqueeze(1)
    elif chosen[0] == "[N, H, W, C]":
        images = images.permute(0, 3, 1, 2)
    images = images.contiguous()
    if images.numel() and (float(images.min()) < low or float(images.max()) > high):
        raise DatasetError(
            f"{where}: values after scaling lie in [{float(images.min()):.6g}, "
            f"{float(images.max()):.6g}], outside the bounds [{low:g}, {high:g}]; "
            "save float images inside the bounds"
        )
    return images


def _labels(array: np.ndarray, count: int, where: str, expect: _Expect) -> Tensor:
    """Validate labels as stored and convert them to int64 [N].

    Args:
        array: integer labels [N].
        count: the number of images, N.
        where: the file and array, for messages.
        expect: the number of classes, if known.

    Returns:
        int64 [N].

    Raises:
        DatasetError: on any problem, in one line.
    """
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        fix = "save integer class indices (int64)"
        if np.issubdtype(array.dtype, np.floating) and array.size:
            with np.errstate(invalid="ignore"):
                whole = bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))
            fix = (
                "all are whole numbers: convert with y.astype(np.int64) (numpy) or y.long() "
                "(torch) before saving"
                if whole
                else "they are not all whole numbers, so they are not class indices"
            )
        raise DatasetError(f"{where}: expected an integer dtype, got {array.dtype}; {fix}")
    if array.ndim != 1:
        raise DatasetError(
            f"{where}: expected one label per image, shape [N], got shape {tuple(array.shape)}; "
            "save y.reshape(-1)"
        )
    if array.shape[0] != count:
        raise DatasetError(
            f"{where}: {count} images but {array.shape[0]} labels; save one label per image"
        )
    if array.size == 0:
        return torch.zeros(0, dtype=torch.int64)
    smallest, largest = int(array.min()), int(array.max())
    limit = expect.num_classes
    if smallest < 0 or largest > np.iinfo(np.int64).max or (limit is not None and largest >= limit):
        expected = f"[0, {limit - 1}] ({limit} classes)" if limit is not None else ">= 0"
        raise DatasetError(
            f"{where}: expected class indices {expected}, got range [{smallest}, {largest}]; "
            "give the dataset the model was trained on, or relabel to 0..num_classes-1"
        )
    return torch.from_numpy(array.astype(np.int64))


def _validated(
    images: np.ndarray, labels: np.ndarray, origin: str, expect: _Expect
) -> tuple[Tensor, Tensor]:
    x = _images(images, f"{origin} (images)", expect)
    return x, _labels(labels, int(x.shape[0]), f"{origin} (labels)", expect)


def check_dataset(
    dataset: Dataset,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = None,
) -> Dataset:
    """Check a loaded dataset against what a model needs, when that is known only later.

    Args:
        dataset: a loaded dataset (x float32 [N, C, H, W], y int64 [N]).
        num_classes: labels must lie in [0, num_classes).
        input_shape: the model's (C, H, W).
        bounds: the model's input range (LOW, HIGH).

    Returns:
        ``dataset`` unchanged.

    Raises:
        DatasetError: one line naming ``dataset.source``.
    """
    expect = _make_expect(num_classes, input_shape, bounds)
    if expect.input_shape is not None and tuple(dataset.x.shape[1:]) != expect.input_shape:
        raise DatasetError(
            f"{dataset.source} (images): the model expects images of shape {expect.input_shape} "
            f"(C, H, W), got {tuple(dataset.x.shape[1:])}; pass the dataset the model was "
            "trained on"
        )
    _labels(dataset.y.numpy(), len(dataset), f"{dataset.source} (labels)", expect)
    low, high = expect.bounds
    if len(dataset) and (float(dataset.x.min()) < low or float(dataset.x.max()) > high):
        raise DatasetError(
            f"{dataset.source} (images): values lie in [{float(dataset.x.min()):.6g}, "
            f"{float(dataset.x.max()):.6g}], outside the model's bounds [{low:g}, {high:g}]; "
            "pass data in the model's input range"
        )
    return dataset


def _make_expect(
    num_classes: int | None,
    input_shape: Sequence[int] | None,
    bounds: tuple[float, float] | None,
) -> _Expect:
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise DatasetError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        shape = None if input_shape is None else tuple(operator.index(s) for s in input_shape)
    except TypeError:
        raise DatasetError(
            f"input_shape must be three positive integers (C, H, W), got {input_shape!r}"
        ) from None
    if shape is not None and (len(shape) != 3 or min(shape) < 1):
        raise DatasetError(f"input_shape must be three positive sizes (C, H, W), got {shape}")
    try:
        chosen = (0.0, 1.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
    except (TypeError, ValueError, IndexError):
        raise DatasetError(f"bounds must be two numbers (LOW, HIGH), got {bounds!r}") from None
    if not chosen[0] < chosen[1]:
        raise DatasetError(f"bounds must satisfy LOW < HIGH, got {bounds}")
    return _Expect(None if num_classes is None else int(num_classes), shape, chosen)


# ------------------------------------------------------------------------------------- digits


def _digits(split: str, expect: _Expect) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    part = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    images, labels = _validated(
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
        tuple(_CLASSES["digits"]),
    )


# ---------------------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzipped or not) as a numpy array.

    The header is read first and checked against what the file can hold before the images
    are: an uncompressed file must be exactly as long as its header says; a gzipped one must
    be large enough to inflate to it (DEFLATE expands a byte to at most
    ``DEFLATE_MAX_RATIO`` bytes), and it is inflated in chunks into a buffer of the size the
    header says, never further than one byte past it.

    Raises:
        DatasetError: the file is unreadable, is not IDX, or its size disagrees with its header.
    """
    path = Path(path)
    with open_input(path, "dataset", DatasetError) as raw:
        size = os.fstat(raw.fileno()).st_size
        try:
            if path.suffix != ".gz":
                return _idx_stream(path, raw, size, compressed=False)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _idx_stream(path, stream, size, compressed=True)
        except DatasetError:
            raise
        except (OSError, EOFError) as err:
            raise DatasetError(
                f"{path}: cannot read the IDX file ({_brief(err)}); give an intact "
                "(optionally gzipped) IDX file"
            ) from None
        except Exception as err:  # zlib and gzip raise several types on corrupt streams
            raise DatasetError(
                f"{path}: the gzip stream is corrupt ({_brief(err)}); download the file again"
            ) from None


def _read_up_to(stream: IO[bytes] | gzip.GzipFile, count: int) -> bytes:
    """Up to ``count`` bytes (fewer only at the end of the stream)."""
    parts, got = [], 0
    while got < count:
        part = stream.read(count - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _idx_stream(
    path: Path, stream: IO[bytes] | gzip.GzipFile, size: int, *, compressed: bool
) -> np.ndarray:
    """The array of an IDX stream (see ``read_idx``); ``size`` is the file's size on disk."""
    magic = _read_up_to(stream, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08 or magic[3] == 0:
        raise DatasetError(
            f"{path} is not an unsigned-byte IDX file (bad magic number, first bytes "
            f"{magic.hex() or 'none: the file is empty'}); expected 00 00 08 <ndim>"
        )
    ndim = magic[3]
    shape = _read_up_to(stream, 4 * ndim)
    if len(shape) < 4 * ndim:
        raise DatasetError(
            f"{path}: the IDX header declares {ndim} dimensions but the file ends after "
            f"{4 + len(shape)} bytes; the file is truncated"
        )
    dims = struct.unpack(f">{ndim}I", shape)
    if 0 in dims:
        raise DatasetError(
            f"{path}: the IDX header says shape {dims}, which holds nothing; give a file with "
            "at least one image"
        )
    count = math.prod(dims)
    header = 4 + 4 * ndim
    if not compressed and header + count != size:
        raise DatasetError(
            f"{path}: the IDX header says shape {dims} but the file holds {size - header} bytes "
            f"of data, not the {count} that shape needs; the file is truncated or not IDX"
        )
    most = size * DEFLATE_MAX_RATIO
    if compressed and header + count > most:
        raise DatasetError(
            f"{path}: the IDX header says shape {dims}, {count} bytes of data, but the file is "
            f"{size} bytes compressed, which inflate to at most {most}; the file is truncated "
            "or its header is wrong"
        )
    limit = INPUT_LIMITS["dataset"]
    if count > limit.max_bytes:
        raise DatasetError(
            f"{path}: the IDX header says shape {dims}, {size_text(count)} of data, more than "
            f"a dataset can hold ({size_text(limit.max_bytes)}: {limit.reason}); check that it "
            "is the right file"
        )
    body, filled = np.empty(count, dtype=np.uint8), 0
    while filled < count:
        part = stream.read(min(_IDX_CHUNK, count - filled))
        if not part:
            break
        body[filled : filled + len(part)] = np.frombuffer(part, dtype=np.uint8)
        filled += len(part)
    arrived = "the stream inflates to" if compressed else "the file holds"
    if filled < count:
        raise DatasetError(
            f"{path}: the IDX header says shape {dims} but {arrived} {filled} bytes of data, "
            f"not the {count} that shape needs; the file is truncated"
        )
    if stream.read(1):
        raise DatasetError(
            f"{path}: the IDX header says shape {dims}, {count} bytes of data, but {arrived} "
            "more; the file is not what its header says (stopped reading there)"
        )
    return body.reshape(dims)


def _idx_folder(folder: Path, name: str, split: str, expect: _Expect) -> Dataset:
    stem = "train" if split == "train" else "t10k"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [folder / f"{stem}-{kind}{ext}" for ext in (".gz", "")]
        hit = next((f for f in found if f.is_file()), None)
        if hit is None:
            raise DatasetError(f"{folder} has no {found[0].name} (or unzipped {found[1].name})")
        files.append(hit)
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3:
        raise DatasetError(
            f"{files[0]}: an IDX image file holds [N, H, W], got shape {images.shape}; "
            "check that images and labels files are not swapped"
        )
    x = _images(images, f"{files[0]} (images)", expect)
    y = _labels(labels, int(x.shape[0]), f"{files[1]} (labels)", expect)
    return Dataset(x, y, name, split, str(folder), tuple(_CLASSES[name]))


# ------------------------------------------------------------------------------------ CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batch files that only admits numpy arrays (no code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open_input(path, "dataset", DatasetError) as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except DatasetError:
        raise
    except pickle.UnpicklingError as err:
        raise DatasetError(
            f"{path} is not a CIFAR-10 batch file: {_brief(err)}; give the files of the "
            "standard cifar-10-batches-py folder"
        ) from None
    except Exception as err:  # a malformed pickle stream fails in many ways
        raise DatasetError(
            f"{path} is not a CIFAR-10 batch file (unreadable pickle: {_brief(err)}); give the "
            "files of the standard cifar-10-batches-py folder"
        ) from None
    if not isinstance(batch, dict):
        raise DatasetError(
            f"{path} is not a CIFAR-10 batch: expected a dict with data and labels, got "
            f"{type(batch).__name__}"
        )
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError(
            f"{path} is not a CIFAR-10 batch: no data/labels entries (has "
            f"{sorted(str(k) for k in batch)[:10]})"
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: CIFAR-10 'data' must be a uint8 array, got {kind}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: CIFAR-10 'data' must be [N, 3072] (3 x 32 x 32 per row), got shape "
            f"{data.shape}"
        )
    try:
        label_array = np.asarray(labels)
    except (ValueError, TypeError) as err:
        raise DatasetError(
            f"{path}: CIFAR-10 'labels' is not a list of integers ({_brief(err)})"
        ) from None
    return data.reshape(-1, 3, 32, 32), label_array


def _cifar_folder(folder: Path, split: str, expect: _Expect) -> Dataset:
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"{folder} is not a cifar-10-batches-py folder: missing {missing}")
    parts = [_cifar_batch(folder / n) for n in names]
    for name, (images, labels) in zip(names, parts, strict=True):
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"{folder / name} labels: {images.shape[0]} images but labels of shape "
                f"{labels.shape}; the batch file is damaged"
            )
    x, y = _validated(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        str(folder),
        expect,
    )
    return Dataset(x, y, "cifar10", split, str(folder), tuple(_CLASSES["cifar10"]))


# ---------------------------------------------------------------------------------- generic


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x`` and ``y`` from an .npz archive without pickle, checking every header first
    (and what each member declares against what the file can hold, before it is inflated)."""
    with open_input(path, "dataset", DatasetError) as handle:
        magic = handle.read(6)
        if magic == b"\x93NUMPY":
            raise DatasetError(
                f"{path} is not an .npz archive but a single .npy array; save images and labels "
                "together with numpy.savez(path, x=images, y=labels)"
            )
        handle.seek(0)
        check_archive(handle, path, "dataset", DatasetError)
        try:
            archive = zipfile.ZipFile(handle)
        except Exception as err:  # zipfile raises several types on a damaged central directory
            raise DatasetError(
                f"{path} is not an .npz archive (not a readable zip file: {_brief(err)}); save "
                "it with numpy.savez(path, x=images, y=labels)"
            ) from None
        return _npz_members(path, archive)


def _npz_members(path: Path, archive: zipfile.ZipFile) -> tuple[np.ndarray, np.ndarray]:
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        keys = sorted(name[:-4] for name in members if name.endswith(".npy"))
        missing = [key for key in ("x", "y") if f"{key}.npy" not in members]
        if missing:
            raise DatasetError(
                f"{path}: an .npz dataset needs arrays 'x' (images) and 'y' (labels), "
                f"missing {missing}, has {keys}; save with numpy.savez(path, x=..., y=...)"
            )
        return (_npz_member(path, archive, "x"), _npz_member(path, archive, "y"))


def _npz_member(path: Path, archive: zipfile.ZipFile, key: str) -> np.ndarray:
    info = archive.getinfo(f"{key}.npy")
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject:
                raise DatasetError(
                    f"{path}: array '{key}' holds Python objects (dtype {dtype}), which would "
                    "need pickle; save numeric arrays (uint8/float images, integer labels)"
                )
            needed = int(np.prod(shape, dtype=object)) * dtype.itemsize + handle.tell()
            if needed != info.file_size:
                raise DatasetError(
                    f"{path}: array '{key}' declares shape {shape} of {dtype} ({needed} bytes "
                    f"with its header) but holds {info.file_size}; the file is damaged"
                )
        with archive.open(info) as handle:
            array = np.lib.format.read_array(handle, allow_pickle=False)
    except DatasetError:
        raise
    except Exception as err:  # numpy and zipfile raise many types on damaged members
        raise DatasetError(
            f"{path}: array '{key}' is not a readable .npy member ({_brief(err)}); save the "
            "file again with numpy.savez"
        ) from None
    return np.asarray(array)


def _tensor_array(obj: Any, path: Path, key: str) -> np.ndarray:
    if not isinstance(obj, Tensor):
        raise DatasetError(
            f"{path}: entry '{key}' is a {type(obj).__name__}, expected a torch.Tensor; save "
            f"torch.save({{'x': torch.as_tensor(images), 'y': torch.as_tensor(labels)}}, path)"
        )
    if obj.layout != torch.strided or obj.device.type != "cpu" or obj.is_quantized:
        raise DatasetError(
            f"{path}: tensor '{key}' is {obj.layout}/{obj.device.type}"
            f"{'/quantized' if obj.is_quantized else ''}, expected a dense CPU tensor; save "
            "tensor.to_dense().cpu()"
        )
    tensor = obj.detach()
    if tensor.is_floating_point() and tensor.dtype not in (
        torch.float16,
        torch.float32,
        torch.float64,
    ):
        tensor = tensor.float()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as err:
        raise DatasetError(
            f"{path}: tensor '{key}' has dtype {obj.dtype}, which has no numpy counterpart "
            f"({_brief(err)}); save uint8/float images and integer labels"
        ) from None


def _pt_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open_input(path, "dataset", DatasetError) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol notes; failures below
            check_archive(handle, path, "dataset", DatasetError)
            obj = torch.load(handle, map_location="cpu", weights_only=True)
    except DatasetError:
        raise
    except pickle.UnpicklingError as err:
        found = re.search(r"(?i)unsupported global:? (?:GLOBAL )?(\S+)", str(err))
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
        what = (
            f"it names {found.group(1)}"
            if found
            else (detail.group(1)[:_MAX_MESSAGE_PART] if detail else _brief(err))
        )
        raise DatasetError(
            f"{path}: refused by torch.load(weights_only=True), which loads tensors only "
            f"({what}); a .pt dataset holds only a dict of tensors 'x' and 'y'"
        ) from None
    except Exception as err:  # torch.load raises many types on truncated or foreign files
        raise DatasetError(
            f"{path} is not a readable .pt file ({_brief(err)}); save it with "
            "torch.save({'x': images, 'y': labels}, path)"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path}: a .pt dataset must be a dict with tensors 'x' and 'y', got a "
            f"{type(obj).__name__}; save torch.save({{'x': images, 'y': labels}}, path)"
        )
    missing = [key for key in ("x", "y") if key not in obj]
    if missing:
        keys = sorted(repr(k) for k in obj)[:10]
        raise DatasetError(
            f"{path}: a .pt dataset needs tensors 'x' (images) and 'y' (labels), missing "
            f"{missing}, has keys [{', '.join(keys)}]"
        )
    return _tensor_array(obj["x"], path, "x"), _tensor_array(obj["y"], path, "y")


def _tensor_file(path: Path, name: str, split: str, expect: _Expect) -> Dataset:
    if path.suffix not in (".npz", ".pt", ".pth"):
        raise DatasetError(
            f"{path}: expected a folder, an .npz or a .pt file, got suffix "
            f"{path.suffix or '(none)'!r}"
        )
    with open_input(path, "dataset", DatasetError) as handle:
        if not os.fstat(handle.fileno()).st_size:
            raise DatasetError(f"{path} is empty (0 bytes); give the dataset file itself")
    images, labels = _npz_arrays(path) if path.suffix == ".npz" else _pt_arrays(path)
    kind = "array" if path.suffix == ".npz" else "tensor"
    x = _images(images, f"{path} {kind} 'x' (images)", expect)
    y = _labels(labels, int(x.shape[0]), f"{path} {kind} 'y' (labels)", expect)
    return Dataset(x, y, name, split, str(path), tuple(_CLASSES.get(name, ())))


def _read(path: Path, name: str, split: str, expect: _Expect) -> Dataset:
    if path.is_file():
        return _tensor_file(path, name, "file" if name not in _CLASSES else split, expect)
    if not path.is_dir():
        open_input(path, "dataset", DatasetError).close()  # says what it is instead (a FIFO, ...)
        raise DatasetError(f"{path} is neither a file nor a folder; give a dataset file or folder")
    if name in ("mnist", "fashion-mnist"):
        return _idx_folder(path, name, split, expect)
    if name == "cifar10":
        for candidate in (path, path / "cifar-10-batches-py"):
            if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
                return _cifar_folder(path, split, expect)
        npz = sorted(p for p in path.glob("*.npz") if p.is_file())
        if len(npz) == 1:
            return _tensor_file(npz[0], name, split, expect)
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
    if num_classes is None and name in _CLASSES:
        num_classes = len(_CLASSES[name])
    expect = _make_expect(num_classes, input_shape, bounds)
    try:
        return _locate(name, split, path, expect)
    except OSError as err:
        raise DatasetError(
            f"{getattr(err, 'filename', None) or path or name}: cannot read the dataset "
            f"({_brief(err)}); check the path and its permissions"
        ) from None


def _locate(name: str, split: str, path: str | Path | None, expect: _Expect) -> Dataset:
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
    if name not in _CLASSES:
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
