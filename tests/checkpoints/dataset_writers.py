"""Writers of the dataset files the dataset tests read: IDX files, CIFAR batches, .npz and .pt
files, good and bad."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import torch


def _write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


# ------------------------------------------------------------------------- bad dataset files


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
