"""Dataset loaders on CIFAR-10: the standard batch folder, the reference subset file, and a
batch that carries code."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch

from checkpoints.datasets import DatasetError, load_dataset


def _cifar_folder(tmp_path, x_hwc: np.ndarray, y: np.ndarray):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = x_hwc.transpose(0, 3, 1, 2).reshape(len(x_hwc), -1)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(
            {b"batch_label": b"testing batch 1 of 1", b"labels": y.tolist(), b"data": data}, handle
        )
    return folder


@pytest.mark.data
def test_cifar10_standard_folder_matches_npz(data_dir, tmp_path):
    npz = load_dataset("cifar10", "test", data_dir / "cifar10")
    with np.load(data_dir / "cifar10" / "cifar10_test_first1017_exact.npz") as archive:
        x_hwc, y = archive["x"][:50], archive["y"][:50]
    _cifar_folder(tmp_path, x_hwc, y)
    folder = load_dataset("cifar10", "test", tmp_path)
    assert torch.equal(folder.x, npz.x[:50]) and torch.equal(folder.y, npz.y[:50])
    assert folder.x.shape == (50, 3, 32, 32)
    labels = np.load(data_dir / "cifar10" / "cifar10_test_labels.npy")
    assert np.array_equal(npz.y.numpy(), labels[: len(npz)])
    assert hashlib.md5(labels.tobytes()).hexdigest()  # the file is readable


def test_cifar_batch_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": [0]}, handle)
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset("cifar10", "test", tmp_path)


@pytest.mark.data
def test_cifar10_subset_file_loads_validated(data_dir):
    path = data_dir / "cifar10" / "cifar10_test_first1017_exact.npz"
    data = load_dataset("cifar10", "test", path, input_shape=(3, 32, 32))
    with np.load(path) as archive:
        x_hwc, y = archive["x"], archive["y"]
    assert data.x.shape == (1017, 3, 32, 32) and len(data) == 1017
    assert torch.equal(data.x, torch.from_numpy(x_hwc).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(data.y, torch.from_numpy(y.astype(np.int64)))
    generic = load_dataset("file", "test", path, num_classes=10)
    assert torch.equal(generic.x, data.x) and generic.classes == ()
