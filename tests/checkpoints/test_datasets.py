"""Dataset loaders, on files the tests write and on the reference data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoints.datasets import DATA_ENV, DatasetError, check_dataset, load_dataset, read_idx


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


# ------------------------------------------------------------------------- bad dataset files
#
# Each case writes one bad file (or folder) and names a pattern its one-line DatasetError must
# match: the culprit, what was expected and what arrived.


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _pt(path, obj):
    torch.save(obj, path)
    return path


def _good_x(n=4):
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


def _good_y(n=4):
    return np.arange(n) % 10


def _case_truncated_pt(tmp):
    _pt(tmp / "d.pt", {"x": torch.from_numpy(_good_x()), "y": torch.from_numpy(_good_y())})
    data = (tmp / "d.pt").read_bytes()
    (tmp / "d.pt").write_bytes(data[: len(data) // 2])
    return tmp / "d.pt"


def _case_truncated_npz(tmp):
    _npz(tmp / "d.npz", x=_good_x(), y=_good_y())
    data = (tmp / "d.npz").read_bytes()
    (tmp / "d.npz").write_bytes(data[: len(data) // 2])
    return tmp / "d.npz"


def _case_object_npz(tmp):
    np.savez(tmp / "d.npz", x=np.array([_good_x(), "a"], dtype=object), y=_good_y())
    return tmp / "d.npz"


def _case_npy_named_npz(tmp):
    np.save(tmp / "d.npy", _good_x())
    (tmp / "d.npy").rename(tmp / "d.npz")
    return tmp / "d.npz"


def _case_pickle_pt(tmp):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp / "ran"),))

    with open(tmp / "d.pt", "wb") as handle:
        pickle.dump({"x": Evil(), "y": 1}, handle, protocol=2)
    return tmp / "d.pt"


def _case_directory_as_file(tmp):
    (tmp / "d.npz").mkdir()
    return tmp / "d.npz"


def _case_dark_uint8(tmp):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _npz(tmp / "d.npz", x=bunch.images.astype(np.uint8), y=bunch.target)


def _case_dim_uint8_large(tmp):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 128, size=(1000, 1, 4, 4), dtype=np.uint8)
    return _npz(tmp / "d.npz", x=x, y=_good_y(1000))


def _case_future_zip_version(tmp):
    """A valid .npz whose central directory asks for zip version 6.4 (unsupported)."""
    _npz(tmp / "d.npz", x=_good_x(), y=_good_y())
    data = bytearray((tmp / "d.npz").read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + 6 : entry + 8] = struct.pack("<H", 64)
    (tmp / "d.npz").write_bytes(bytes(data))
    return tmp / "d.npz"


def _nan_x():
    x = _good_x()
    x[1, 0, 2, 3] = np.nan
    x[2, 0, 0, 0] = np.nan
    return x


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist_folder(tmp, images: bytes, labels: bytes):
    (tmp / "t10k-images-idx3-ubyte").write_bytes(images)
    (tmp / "t10k-labels-idx1-ubyte").write_bytes(labels)
    return tmp


_IDX_IMAGES = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
_IDX_LABELS = np.array([1, 2, 3], dtype=np.uint8)
_IDX_10000_HEADER = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10_000, 28, 28)


def _npz_claiming(tmp, claimed: int):
    """A compressed .npz whose 'x' member says, in both zip headers, it inflates to
    ``claimed`` bytes."""
    path = tmp / "d.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in (("x", np.zeros((4, 8, 8), np.uint8)), ("y", np.zeros(4, np.int64))):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    data = bytearray(path.read_bytes())
    size = zipfile.ZipFile(path).getinfo("x.npy").file_size.to_bytes(4, "little")
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature) + offset  # the first member, x.npy, in both headers
        assert data[at : at + 4] == size
        data[at : at + 4] = claimed.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _cifar_batch_file(tmp, batch):
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(batch, handle)
    return tmp


_CIFAR_DATA = np.random.default_rng(0).integers(0, 256, size=(2, 3072)).astype(np.uint8)

# (case id, dataset name, builder(tmp_path) -> path, extra keyword arguments, message pattern)
BAD_DATASETS = [
    ("empty-npz", "file", lambda t: _write(t / "d.npz", b""), {}, r"d\.npz is empty \(0 bytes\)"),
    ("empty-pt", "file", lambda t: _write(t / "d.pt", b""), {}, r"d\.pt is empty"),
    (
        "random-bytes-npz",
        "file",
        lambda t: _write(t / "d.npz", bytes(range(256)) * 4),
        {},
        r"d\.npz is not an \.npz archive \(not a readable zip file",
    ),
    ("npy-named-npz", "file", _case_npy_named_npz, {}, r"not an \.npz archive but a single \.npy"),
    ("truncated-npz", "file", _case_truncated_npz, {}, r"d\.npz is not an \.npz archive"),
    (
        "npz-zip-version-6.4",
        "file",
        _case_future_zip_version,
        {},
        r"d\.npz is not an \.npz archive \(not a readable zip file: NotImplementedError",
    ),
    ("random-bytes-pt", "file", lambda t: _write(t / "d.pt", b"\x80\x04junk" * 50), {}, r"d\.pt"),
    ("truncated-pt", "file", _case_truncated_pt, {}, r"d\.pt is not a readable \.pt file"),
    (
        "pickle-code-pt",
        "file",
        _case_pickle_pt,
        {},
        r"d\.pt: refused by torch\.load\(weights_only=True\).*names posix\.system",
    ),
    ("object-array-npz", "file", _case_object_npz, {}, r"array 'x' holds Python objects"),
    (
        "npz-missing-x-y",
        "file",
        lambda t: _npz(t / "d.npz", images=_good_x(), y_=_good_y()),
        {},
        r"missing \['x', 'y'\], has \['images', 'y_'\]",
    ),
    (
        "npz-missing-y",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), labels=_good_y()),
        {},
        r"missing \['y'\], has \['labels', 'x'\]",
    ),
    (
        "pt-sparse-images",
        "file",
        lambda t: _pt(
            t / "d.pt", {"x": torch.eye(4).to_sparse(), "y": torch.zeros(4, dtype=torch.long)}
        ),
        {},
        r"tensor 'x' is torch\.sparse_coo/cpu, expected a dense CPU tensor",
    ),
    (
        "pt-float-labels",
        "file",
        lambda t: _pt(t / "d.pt", {"x": torch.rand(2, 1, 4, 4), "y": torch.tensor([0.0, 1.0])}),
        {},
        r"tensor 'y' \(labels\): expected an integer dtype, got float32; all are whole numbers",
    ),
    (
        "pt-list",
        "file",
        lambda t: _pt(t / "d.pt", [torch.zeros(1)]),
        {},
        r"must be a dict with tensors 'x' and 'y', got a list",
    ),
    (
        "pt-dict-missing-keys",
        "file",
        lambda t: _pt(t / "d.pt", {"images": torch.zeros(1)}),
        {},
        r"missing \['x', 'y'\], has keys \['images'\]",
    ),
    (
        "pt-non-tensor",
        "file",
        lambda t: _pt(t / "d.pt", {"x": [[0.5]], "y": torch.zeros(1, dtype=torch.long)}),
        {},
        r"entry 'x' is a list, expected a torch\.Tensor",
    ),
    (
        "pt-bool-images",
        "file",
        lambda t: _pt(
            t / "d.pt",
            {"x": torch.ones(2, 1, 4, 4, dtype=torch.bool), "y": torch.zeros(2, dtype=torch.long)},
        ),
        {},
        r"tensor 'x' \(images\): expected uint8 \(0\.\.255\) or float in \[0, 1\], got dtype bool",
    ),
    (
        "folder-as-file",
        "file",
        _case_directory_as_file,
        {},
        r"d\.npz is a folder, but dataset 'file'",
    ),
    ("wrong-suffix", "file", lambda t: _write(t / "d.csv", b"1,2"), {}, r"got suffix '\.csv'"),
    (
        "int64-images",
        "file",
        lambda t: _npz(t / "d.npz", x=np.full((2, 1, 4, 4), 200, dtype=np.int64), y=_good_y(2)),
        {},
        r"array 'x' \(images\): expected uint8 .* got dtype int64",
    ),
    (
        "nan-pixels",
        "file",
        lambda t: _npz(t / "d.npz", x=_nan_x(), y=_good_y()),
        {},
        r"2 pixels are NaN, the first at index \[1, 0, 2, 3\]",
    ),
    (
        "inf-pixels",
        "file",
        lambda t: _npz(t / "d.npz", x=np.where(_good_x() > 0.9, np.inf, _good_x()), y=_good_y()),
        {},
        r"pixels are Inf, the first at index",
    ),
    (
        "float-0-255",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x() * 255, y=_good_y()),
        {},
        r"must lie in the bounds \[0, 1\], got range \[\d",
    ),
    (
        "float-negative",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x() - 0.5, y=_good_y()),
        {},
        r"got range \[-0\.",
    ),
    (
        "uint8-digits-0-16",
        "file",
        _case_dark_uint8,
        {},
        r"uint8 values lie in \[0, 16\] over 1797 images; .* save x / 16 as float32",
    ),
    (
        "uint8-1000-images-below-200",
        "file",
        _case_dim_uint8_large,
        {},
        r"uint8 values lie in \[0, 127\] over 1000 images; .* must reach 200",
    ),
    (
        "float-labels-whole",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=_good_y().astype(np.float32)),
        {},
        r"array 'y' \(labels\): expected an integer dtype, got float32; all are whole numbers: "
        r"convert with y\.astype\(np\.int64\)",
    ),
    (
        "float-labels-fractional",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=_good_y() + 0.5),
        {},
        r"got float64; they are not all whole numbers",
    ),
    (
        "bool-labels",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=np.ones(4, dtype=bool)),
        {},
        r"expected an integer dtype, got bool",
    ),
    (
        "labels-2d",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=_good_y().reshape(4, 1)),
        {},
        r"shape \[N\], got shape \(4, 1\); save y\.reshape\(-1\)",
    ),
    (
        "label-count",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=_good_y(3)),
        {},
        r"4 images but 3 labels",
    ),
    (
        "negative-labels",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=np.array([0, -1, 2, 3])),
        {},
        r"expected class indices >= 0, got range \[-1, 3\]",
    ),
    (
        "labels-beyond-classes",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=np.array([0, 1, 2, 7])),
        {"num_classes": 5},
        r"expected class indices \[0, 4\] \(5 classes\), got range \[0, 7\]",
    ),
    (
        "images-1d",
        "file",
        lambda t: _npz(t / "d.npz", x=np.zeros(4, np.float32), y=_good_y()),
        {},
        r"expected \[N, H, W\], \[N, C, H, W\] or \[N, H, W, C\], got shape \(4,\)",
    ),
    (
        "no-images",
        "file",
        lambda t: _npz(t / "d.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=_good_y(0)),
        {},
        r"the set is empty \(shape \(0, 1, 8, 8\)\)",
    ),
    (
        "empty-image-axis",
        "file",
        lambda t: _npz(t / "d.npz", x=np.zeros((2, 1, 0, 8), np.float32), y=_good_y(2)),
        {},
        r"an image axis is empty",
    ),
    (
        "wrong-input-shape",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=_good_y()),
        {"input_shape": (3, 32, 32)},
        r"expects images of shape \(3, 32, 32\) \(C, H, W\), got shape \(4, 1, 8, 8\)",
    ),
    (
        "outside-model-bounds",
        "file",
        lambda t: _npz(t / "d.npz", x=_good_x(), y=_good_y()),
        {"bounds": (0.0, 0.5)},
        r"must lie in the bounds \[0, 0\.5\]",
    ),
    (
        "idx-bad-magic",
        "mnist",
        lambda t: _mnist_folder(t, b"\x00\x00\x0d\x03" + bytes(12), _idx_bytes(_IDX_LABELS)),
        {},
        r"t10k-images-idx3-ubyte is not an unsigned-byte IDX file \(bad magic number",
    ),
    (
        "idx-empty",
        "mnist",
        lambda t: _mnist_folder(t, b"", _idx_bytes(_IDX_LABELS)),
        {},
        r"first bytes none: the file is empty",
    ),
    (
        "idx-truncated-header",
        "mnist",
        lambda t: _mnist_folder(t, b"\x00\x00\x08\x03\x00\x00", _idx_bytes(_IDX_LABELS)),
        {},
        r"declares 3 dimensions but the file ends after 6 bytes",
    ),
    (
        "idx-truncated-body",
        "mnist",
        lambda t: _mnist_folder(t, _idx_bytes(_IDX_IMAGES)[:-10], _idx_bytes(_IDX_LABELS)),
        {},
        r"header says shape \(3, 28, 28\) but the file holds 2342 bytes",
    ),
    (
        "idx-zero-size",
        "mnist",
        lambda t: _mnist_folder(
            t, bytes([0, 0, 8, 5]) + struct.pack(">5I", 0, 0, 3, 7, 9), _idx_bytes(_IDX_LABELS)
        ),
        {},
        r"the IDX header says shape \(0, 0, 3, 7, 9\), which holds nothing",
    ),
    (
        "idx-swapped",
        "mnist",
        lambda t: _mnist_folder(t, _idx_bytes(_IDX_LABELS), _idx_bytes(_IDX_IMAGES)),
        {},
        r"an IDX image file holds \[N, H, W\], got shape \(3,\)",
    ),
    (
        "idx-label-count",
        "mnist",
        lambda t: _mnist_folder(t, _idx_bytes(_IDX_IMAGES), _idx_bytes(_IDX_LABELS[:2])),
        {},
        r"t10k-labels-idx1-ubyte \(labels\): 3 images but 2 labels",
    ),
    (
        "idx-label-11",
        "mnist",
        lambda t: _mnist_folder(t, _idx_bytes(_IDX_IMAGES), _idx_bytes(np.array([0, 1, 11]))),
        {},
        r"expected class indices \[0, 9\] \(10 classes\), got range \[0, 11\]",
    ),
    (
        "idx-gzip-corrupt",
        "mnist",
        lambda t: _mnist_gz(t, b"\x1f\x8b\x08\x00garbage"),
        {},
        r"t10k-images-idx3-ubyte\.gz: cannot read the IDX file",
    ),
    (
        "idx-gz-header-claims-10000-images",
        "mnist",
        lambda t: _mnist_gz(t, gzip.compress(_IDX_10000_HEADER + bytes(100))),
        {},
        r"t10k-images-idx3-ubyte\.gz: the IDX header says shape \(10000, 28, 28\), 7840000 "
        r"bytes of data, but the file is \d+ bytes compressed, which inflate to at most \d+",
    ),
    (
        "idx-gz-stream-short-of-its-header",
        "mnist",
        lambda t: _mnist_gz(t, gzip.compress(_idx_bytes(_IDX_IMAGES)[:-784])),
        {},
        r"header says shape \(3, 28, 28\) but the stream inflates to 1568 bytes of data, not "
        r"the 2352 that shape needs; the file is truncated",
    ),
    (
        "idx-gz-stream-beyond-its-header",
        "mnist",
        lambda t: _mnist_gz(t, gzip.compress(_idx_bytes(_IDX_IMAGES) + bytes(5000))),
        {},
        r"header says shape \(3, 28, 28\), 2352 bytes of data, but the stream inflates to more",
    ),
    (
        "npz-member-claims-more-than-it-holds",
        "file",
        lambda t: _npz_claiming(t, 3_000_000_000),
        {},
        r"member 'x\.npy' declares 2\.79 GiB but holds \d+ bytes compressed, which cannot "
        r"inflate to more than .*; the file is damaged or crafted",
    ),
    (
        "dataset-a-fifo",
        "file",
        lambda t: (os.mkfifo(t / "d.npz"), t / "d.npz")[1],
        {},
        r"d\.npz is not a regular file but a FIFO",
    ),
    (
        "cifar-random-bytes",
        "cifar10",
        lambda t: _write_cifar_raw(t, b"\x80\x04\x95garbage"),
        {},
        r"test_batch is not a CIFAR-10 batch file",
    ),
    (
        "cifar-not-a-dict",
        "cifar10",
        lambda t: _cifar_batch_file(t, [1, 2, 3]),
        {},
        r"expected a dict with data and labels, got list",
    ),
    (
        "cifar-float-data",
        "cifar10",
        lambda t: _cifar_batch_file(t, {b"data": _CIFAR_DATA / 255.0, b"labels": [0, 1]}),
        {},
        r"CIFAR-10 'data' must be a uint8 array, got float64",
    ),
    (
        "cifar-wrong-width",
        "cifar10",
        lambda t: _cifar_batch_file(t, {b"data": _CIFAR_DATA[:, :100], b"labels": [0, 1]}),
        {},
        r"must be \[N, 3072\] .* got shape \(2, 100\)",
    ),
    (
        "cifar-label-count",
        "cifar10",
        lambda t: _cifar_batch_file(t, {b"data": _CIFAR_DATA, b"labels": [0]}),
        {},
        r"2 images but labels of shape \(1,\)",
    ),
    (
        "cifar-label-10",
        "cifar10",
        lambda t: _cifar_batch_file(t, {b"data": _CIFAR_DATA, b"labels": [0, 10]}),
        {},
        r"\(labels\): expected class indices \[0, 9\] \(10 classes\), got range \[0, 10\]",
    ),
]


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _mnist_gz(tmp, images: bytes):
    (tmp / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    _write_idx(tmp / "t10k-labels-idx1-ubyte.gz", _IDX_LABELS)
    return tmp


def _write_cifar_raw(tmp, data: bytes):
    folder = tmp / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(data)
    return tmp


@pytest.mark.parametrize(
    ("name", "build", "kwargs", "pattern"),
    [case[1:] for case in BAD_DATASETS],
    ids=[case[0] for case in BAD_DATASETS],
)
def test_bad_dataset_is_one_line_naming_the_file(tmp_path, name, build, kwargs, pattern):
    path = build(tmp_path)
    with pytest.raises(DatasetError) as caught:
        load_dataset(name, "test", path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and type(caught.value) is DatasetError
    assert str(tmp_path) in message, message
    assert re.search(pattern, message), message
    assert not (tmp_path / "ran").exists()


def test_case_ids_are_unique():
    ids = [case[0] for case in BAD_DATASETS]
    assert len(ids) == len(set(ids))


def test_input_shape_settles_an_ambiguous_layout(tmp_path):
    """[N, 3, 4, 3] reads as NCHW by default; a model that takes (3, 3, 4) gets it as NHWC."""
    x = np.random.default_rng(2).random((2, 3, 4, 3), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    default = load_dataset("file", "test", tmp_path / "d.npz")
    assert torch.equal(default.x, torch.from_numpy(x))
    nhwc = load_dataset("file", "test", tmp_path / "d.npz", input_shape=(3, 3, 4))
    assert torch.equal(nhwc.x, torch.from_numpy(x).permute(0, 3, 1, 2))


def test_check_dataset_against_a_model_known_later():
    data = load_dataset("digits", "test")
    assert check_dataset(data, num_classes=10, input_shape=(1, 8, 8), bounds=(0, 1)) is data
    with pytest.raises(DatasetError, match=r"\[0, 4\] \(5 classes\), got range \[0, 9\]"):
        check_dataset(data, num_classes=5)
    with pytest.raises(DatasetError, match=r"expects images of shape \(1, 28, 28\)"):
        check_dataset(data, input_shape=(1, 28, 28))
    with pytest.raises(DatasetError, match=r"outside the model's bounds \[0, 0\.5\]"):
        check_dataset(data, bounds=(0.0, 0.5))
    with pytest.raises(DatasetError, match="num_classes must be a positive integer"):
        load_dataset("digits", num_classes=0)
    with pytest.raises(DatasetError, match="num_classes must be a positive integer, got '10'"):
        load_dataset("digits", num_classes="10")
    with pytest.raises(DatasetError, match="input_shape must be three positive integers"):
        load_dataset("digits", input_shape=("1", 8, 8))
    with pytest.raises(DatasetError, match=r"bounds must satisfy LOW < HIGH, got \(1, 0\)"):
        load_dataset("digits", bounds=(1, 0))
    with pytest.raises(DatasetError, match="--data must be a path, got int"):
        load_dataset("file", path=3)
    with pytest.raises(DatasetError, match="NUL byte"):
        load_dataset("file", path="a\x00b.npz")


def test_digits_labels_beyond_the_model(monkeypatch):
    with pytest.raises(DatasetError, match=r"load_digits \(labels\): .*\(3 classes\)"):
        load_dataset("digits", "test", num_classes=3)


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


def _gz_of_zeros(path, header: bytes, zeros: int) -> None:
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header)
        for _ in range(zeros >> 20):
            handle.write(bytes(1 << 20))


def _peak_growth_while_reading(path) -> tuple[str, int]:
    """In a fresh process: read_idx(path)'s error and how much its peak memory grew (KiB)."""
    script = (
        "import resource, sys\n"
        "from checkpoints.datasets import DatasetError, read_idx\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_idx(sys.argv[1])\n"
        "    print('read')\n"
        "except DatasetError as err:\n"
        "    print(err)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    message, grown = done.stdout.strip().splitlines()
    return message, int(grown)


def test_a_gzip_bomb_is_inflated_no_further_than_its_header_says(tmp_path):
    """A gzipped IDX file whose header says 10,000 images (7.8 MB) while its stream inflates
    to 256 MiB: read up to one byte past what the header says, then refused; peak memory grows
    by about the header's 7.8 MB, not the stream's 256 MiB."""
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    _gz_of_zeros(path, _IDX_10000_HEADER, 256 << 20)
    message, grown_kib = _peak_growth_while_reading(path)
    assert message == (
        f"{path}: the IDX header says shape (10000, 28, 28), 7840000 bytes of data, but the "
        "stream inflates to more; the file is not what its header says (stopped reading there)"
    )
    assert grown_kib < 64 * 1024, grown_kib  # KiB


def test_a_header_the_file_cannot_hold_is_refused_before_inflating(tmp_path):
    """A few hundred bytes of gzip cannot inflate to the 7.8 MB its header claims: refused
    from the header and the file size alone, so the images are never allocated."""
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_IDX_10000_HEADER + bytes(100)))
    message, grown_kib = _peak_growth_while_reading(path)
    size = path.stat().st_size
    assert message == (
        f"{path}: the IDX header says shape (10000, 28, 28), 7840000 bytes of data, but the "
        f"file is {size} bytes compressed, which inflate to at most {size * 1032}; the file is "
        "truncated or its header is wrong"
    )
    assert grown_kib < 4 * 1024, grown_kib  # KiB: not the 7.8 MB of images
