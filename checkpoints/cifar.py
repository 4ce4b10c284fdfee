"""CIFAR-10: the standard ``cifar-10-batches-py`` folder, whose batch pickles are read with an
unpickler that admits numpy arrays only (no code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from checkpoints.checkfile import error_summary
from checkpoints.datacheck import (
    CLASS_NAMES,
    Dataset,
    DatasetError,
    Expect,
    checked_pair,
)
from core.boundary import open_input


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
            f"{path} is not a CIFAR-10 batch file: {error_summary(err)}; give the files of the "
            "standard cifar-10-batches-py folder"
        ) from None
    except Exception as err:  # a malformed pickle stream fails in many ways
        raise DatasetError(
            f"{path} is not a CIFAR-10 batch file (unreadable pickle: {error_summary(err)}); "
            "give the files of the standard cifar-10-batches-py folder"
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
            f"{path}: CIFAR-10 'labels' is not a list of integers ({error_summary(err)})"
        ) from None
    return data.reshape(-1, 3, 32, 32), label_array


def cifar_folder(folder: Path, split: str, expect: Expect) -> Dataset:
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
    x, y = checked_pair(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        str(folder),
        expect,
    )
    return Dataset(x, y, "cifar10", split, str(folder), tuple(CLASS_NAMES["cifar10"]))
