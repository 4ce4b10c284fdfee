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
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DATA_ENV", "Dataset", "DatasetError", "dataset_names", "load_dataset"]

DATA_ENV = "ROBAUDIT_DATA"
_DIGITS_TRAIN = 1347
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
    """A dataset that cannot be found or read; the message says where it looked."""


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


def dataset_names() -> list[str]:
    """Names of the built-in datasets."""
    return sorted(_CLASSES)


def _to_images(array: np.ndarray, origin: str) -> Tensor:
    """uint8 or float images of any common layout -> float32 NCHW in [0, 1]."""
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise DatasetError(f"{origin}: images must be [N, H, W] or 4-D, got shape {array.shape}")
    if array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.dtype == np.uint8:
        images = torch.from_numpy(np.array(array, copy=True)).float().div_(255.0)
    else:
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise DatasetError(
                f"{origin}: float images must lie in [0, 1], got range "
                f"[{images.min().item():.3g}, {images.max().item():.3g}]; store uint8 or rescale"
            )
    return images.contiguous()


def _to_labels(array: np.ndarray, count: int, origin: str) -> Tensor:
    labels = torch.from_numpy(np.asarray(array).astype(np.int64).reshape(-1))
    if labels.shape[0] != count:
        raise DatasetError(f"{origin}: {count} images but {labels.shape[0]} labels")
    return labels


# ------------------------------------------------------------------------------------- digits


def _digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    part = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    return Dataset(
        images[part].contiguous(),
        labels[part].contiguous(),
        "digits",
        split,
        "sklearn.datasets.load_digits",
        tuple(_CLASSES["digits"]),
    )


# ---------------------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).copy()
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {body.size} bytes")
    return body.reshape(dims)


def _idx_folder(folder: Path, name: str, split: str) -> Dataset:
    stem = "train" if split == "train" else "t10k"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [folder / f"{stem}-{kind}{ext}" for ext in (".gz", "")]
        hit = next((f for f in found if f.is_file()), None)
        if hit is None:
            raise DatasetError(f"{folder} has no {found[0].name} (or unzipped {found[1].name})")
        files.append(hit)
    images = read_idx(files[0])
    return Dataset(
        _to_images(images, str(files[0])),
        _to_labels(read_idx(files[1]), len(images), str(files[1])),
        name,
        split,
        str(folder),
        tuple(_CLASSES[name]),
    )


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

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        try:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise DatasetError(f"{path} is not a CIFAR-10 batch file: {err}") from None
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DatasetError(f"{path} is not a CIFAR-10 batch (no data/labels entries)")
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels)


def _cifar_folder(folder: Path, split: str) -> Dataset:
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"{folder} is not a cifar-10-batches-py folder: missing {missing}")
    parts = [_cifar_batch(folder / n) for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Dataset(
        _to_images(images, str(folder)),
        _to_labels(labels, len(images), str(folder)),
        "cifar10",
        split,
        str(folder),
        tuple(_CLASSES["cifar10"]),
    )


# ---------------------------------------------------------------------------------- generic


def _tensor_file(path: Path, name: str, split: str) -> Dataset:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(
                    f"{path}: an .npz dataset needs arrays 'x' and 'y', has {archive.files}"
                )
            images, labels = archive["x"], archive["y"]
    elif path.suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or "x" not in obj or "y" not in obj:
            raise DatasetError(f"{path}: a .pt dataset must be a dict with tensors 'x' and 'y'")
        images, labels = obj["x"].numpy(), obj["y"].numpy()
    else:
        raise DatasetError(f"{path}: expected a folder, an .npz or a .pt file")
    return Dataset(
        _to_images(images, str(path)),
        _to_labels(labels, len(images), str(path)),
        name,
        split,
        str(path),
        tuple(_CLASSES.get(name, ())),
    )


def _read(path: Path, name: str, split: str) -> Dataset:
    if path.is_file():
        return _tensor_file(path, name, "file" if name not in _CLASSES else split)
    if name in ("mnist", "fashion-mnist"):
        return _idx_folder(path, name, split)
    if name == "cifar10":
        for candidate in (path, path / "cifar-10-batches-py"):
            if (candidate / "test_batch").is_file() or (candidate / "data_batch_1").is_file():
                return _cifar_folder(path, split)
        npz = sorted(path.glob("*.npz"))
        if len(npz) == 1:
            return _tensor_file(npz[0], name, split)
        raise DatasetError(
            f"{path} holds neither cifar-10-batches-py nor exactly one .npz with x and y"
        )
    raise DatasetError(f"{path}: do not know how to read dataset {name!r} from a folder")


def load_dataset(name: str, split: str = "test", path: str | Path | None = None) -> Dataset:
    """Load a dataset by name (or a generic ``.npz``/``.pt`` file by path).

    Args:
        name: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, or None-like ``file`` with
            ``path`` pointing at a tensor file.
        split: ``train`` or ``test``.
        path: explicit location (``--data``); a folder or a file.

    Returns:
        The images and labels.

    Raises:
        DatasetError: not found or unreadable; the message lists where it looked and how to
            supply the data.
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    if path is not None:
        location = Path(path).expanduser()
        if not location.exists():
            raise DatasetError(
                f"--data {location} does not exist; give the folder or file holding {name}"
            )
        return _read(location, name, split)
    if name == "digits":
        return _digits(split)
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
            return _read(candidate, name, split)
    where = ", ".join(tried) if tried else f"nowhere (${DATA_ENV} is not set)"
    raise DatasetError(
        f"dataset {name!r} not found; looked in {where}. Nothing is downloaded: pass --data PATH "
        f"or set {DATA_ENV} to a folder that holds {name}/"
    )
