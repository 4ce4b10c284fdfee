"""Dataset loaders, on files the tests write and on the reference data."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from checkpoints.datasets import DATA_ENV, DatasetError, load_dataset, read_idx


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def test_digits_split_is_fixed_and_in_range():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.x.shape == (1347, 1, 8, 8) and test.x.shape == (450, 1, 8, 8)
    assert train.x.dtype == torch.float32 and test.y.dtype == torch.int64
    assert float(test.x.min()) == 0.0 and float(test.x.max()) == 1.0
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert np.array_equal(test.y.numpy(), bunch.target[1347:])
    assert np.allclose(test.x.numpy()[:, 0], bunch.images[1347:] / 16)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_written_by_test(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    data = load_dataset("mnist", "test", tmp_path)
    assert data.x.shape == (7, 1, 28, 28)
    assert np.array_equal((data.x[:, 0] * 255).round().numpy().astype(np.uint8), images)
    assert np.array_equal(data.y.numpy(), labels)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", "train", tmp_path)


def test_idx_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0c\x01\x00\x00\x00\x01\x00\x00\x00\x00")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(tmp_path / "bad")


@pytest.mark.data
def test_mnist_reference_files(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(data_dir))
    test = load_dataset("mnist", "test")
    train = load_dataset("mnist", "train")
    assert test.x.shape == (10000, 1, 28, 28) and train.x.shape == (60000, 1, 28, 28)
    assert torch.bincount(test.y).tolist()[:3] == [980, 1135, 1032]  # the official counts
    raw = (test.x * 255).round().to(torch.uint8).numpy().tobytes()
    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", "rb") as handle:
        assert handle.read()[16:] == raw


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


def test_generic_npz_and_pt_files(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    y = np.arange(5)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    data = load_dataset("file", "test", tmp_path / "set.npz")
    assert data.x.shape == (5, 3, 32, 32)
    assert torch.equal(data.x, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    images = torch.rand(4, 1, 8, 8)
    torch.save({"x": images, "y": torch.tensor([0, 1, 2, 3])}, tmp_path / "set.pt")
    data = load_dataset("file", "test", tmp_path / "set.pt")
    assert torch.equal(data.x, images)
    torch.save({"x": images * 255, "y": torch.tensor([0, 1, 2, 3])}, tmp_path / "bad.pt")
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        load_dataset("file", "test", tmp_path / "bad.pt")


def test_missing_dataset_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DatasetError, match=f"looked in {tmp_path}/cifar10.*--data PATH"):
        load_dataset("cifar10")
    monkeypatch.delenv(DATA_ENV)
    with pytest.raises(DatasetError, match="not set"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="known: cifar10, digits"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", path=tmp_path / "nowhere")


def test_fashion_mnist_default_location(monkeypatch):
    from pathlib import Path

    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.delenv(DATA_ENV, raising=False)
    data = load_dataset("fashion-mnist", "test")
    assert data.x.shape == (10000, 1, 28, 28) and data.source == str(folder)
    assert torch.bincount(data.y).tolist() == [1000] * 10
    assert data.classes[9] == "Ankle boot"
