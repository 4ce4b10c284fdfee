"""Fuzzing the dataset loaders: arrays and byte strings written to files by hypothesis.

Nothing may escape but a one-line DatasetError, and a valid file must load exactly. Which files
are valid is decided here from the documented rules (dtype, layout, finiteness, range, the uint8
peak rule, label dtype, shape and range), not by the loader under test.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from checkpoints.datasets import (
    UINT8_LARGE_PEAK,
    UINT8_LARGE_SET,
    UINT8_MIN_PEAK,
    DatasetError,
    load_dataset,
)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_IMAGE_DTYPES = [np.uint8, np.float16, np.float32, np.float64, np.int8, np.int64, np.bool_]
_LABEL_DTYPES = [np.int64, np.int32, np.uint8, np.int8, np.float32, np.float64, np.bool_]
_NUM_CLASSES = 5


@st.composite
def image_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(_IMAGE_DTYPES)))
    ndim = draw(st.sampled_from([1, 2, 3, 4, 4, 4, 5]))
    shape = tuple(draw(st.integers(0 if i else 0, 4)) for i in range(ndim))
    if draw(st.booleans()):  # mostly non-empty
        shape = tuple(max(1, s) for s in shape)
    if dtype.kind == "f":
        elements = st.one_of(
            st.floats(0, 1, width=min(64, dtype.itemsize * 8)),
            st.floats(allow_nan=True, allow_infinity=True, width=min(64, dtype.itemsize * 8)),
        )
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def label_arrays(draw, count):
    dtype = np.dtype(draw(st.sampled_from(_LABEL_DTYPES)))
    length = draw(st.sampled_from([count, count, count, max(count - 1, 0), count + 1]))
    shape = (length, 1) if draw(st.integers(0, 9)) == 0 else (length,)
    if dtype.kind == "f":
        elements = st.one_of(st.integers(-1, _NUM_CLASSES).map(float), st.floats(-2, 7))
    elif dtype.kind in "iu":
        low = 0 if dtype.kind == "u" else -1
        elements = st.integers(low, _NUM_CLASSES + 1)
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def near_valid_pairs(draw):
    """A valid pair, then at most one change to it (so the valid and the barely invalid mix)."""
    count = draw(st.integers(1, 4))
    layout = draw(st.sampled_from(["nchw", "nhwc", "nhw"]))
    channels = draw(st.sampled_from([1, 3]))
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    shape = {
        "nchw": (count, channels, *size),
        "nhwc": (count, *size, channels),
        "nhw": (count, *size),
    }[layout]
    dtype = np.dtype(draw(st.sampled_from([np.uint8, np.float16, np.float32, np.float64])))
    if dtype == np.uint8:
        x = draw(hnp.arrays(dtype, shape))
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.integers(UINT8_MIN_PEAK, 255))
    else:
        x = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=dtype.itemsize * 8)))
    y = draw(hnp.arrays(np.int64, (count,), elements=st.integers(0, _NUM_CLASSES - 1)))
    change = draw(
        st.sampled_from(
            [
                "none",
                "none",
                "none",
                "nan",
                "inf",
                "range",
                "dark",
                "int-images",
                "float-labels",
                "label-range",
                "label-length",
                "label-2d",
                "flat",
            ]
        )
    )
    if change in ("nan", "inf", "range") and dtype != np.uint8:
        x.flat[draw(st.integers(0, x.size - 1))] = {"nan": np.nan, "inf": -np.inf, "range": 1.5}[
            change
        ]
    elif change == "dark":
        x = (x.astype(np.float64) * 16).astype(np.uint8) if dtype != np.uint8 else x // 16
    elif change == "int-images":
        x = x.astype(np.int32)
    elif change == "float-labels":
        y = y.astype(np.float32)
    elif change == "label-range":
        y[draw(st.integers(0, count - 1))] = draw(st.sampled_from([-1, _NUM_CLASSES, 255]))
    elif change == "label-length":
        y = y[:-1]
    elif change == "label-2d":
        y = y[:, None]
    elif change == "flat":
        x = x.reshape(count, -1)
    return x, y


def _expected(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The loaded images and labels if the documented rules accept the pair, else None."""
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        return None
    if x.ndim not in (3, 4) or 0 in x.shape:
        return None
    if x.dtype == np.uint8:
        peak = int(x.max())
        if peak < UINT8_MIN_PEAK or (len(x) >= UINT8_LARGE_SET and peak < UINT8_LARGE_PEAK):
            return None
        images = torch.tensor(x.astype(np.float32) / np.float32(255.0))
    else:
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            return None
        images = torch.tensor(x.astype(np.float32))
    if images.dim() == 3:
        images = images[:, None]
    elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)
    if y.dtype.kind not in "iu" or y.ndim != 1 or len(y) != len(x):
        return None
    if y.min() < 0 or y.max() >= _NUM_CLASSES:
        return None
    return images.contiguous(), torch.tensor(y.astype(np.int64))


def _check(path: Path, name: str = "file", **kwargs):
    try:
        return load_dataset(name, "test", path, **kwargs)
    except DatasetError as err:
        message = str(err)
        assert message and "\n" not in message, message
        assert str(path.parent) in message or name in message, message
        return None


def _save(folder: Path, kind: str, x: np.ndarray, y: np.ndarray) -> Path:
    if kind == "npz":
        np.savez(folder / "set.npz", x=x, y=y)
        return folder / "set.npz"
    torch.save(
        {"x": torch.from_numpy(x.copy()), "y": torch.from_numpy(y.copy())}, folder / "set.pt"
    )
    return folder / "set.pt"


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["npz", "pt"]))
def test_arrays_load_exactly_or_fail_in_one_line(data, kind):
    if data.draw(st.booleans(), label="near valid"):
        x, y = data.draw(near_valid_pairs(), label="pair")
    else:
        x = data.draw(image_arrays(), label="x")
        y = data.draw(label_arrays(x.shape[0] if x.ndim else 1), label="y")
    with tempfile.TemporaryDirectory() as folder:
        path = _save(Path(folder), kind, x, y)
        loaded = _check(path, num_classes=_NUM_CLASSES)
        expected = _expected(x, y)
        event("valid" if expected is not None else "invalid")
        if expected is None:
            assert loaded is None, (
                f"accepted an invalid pair: x {x.dtype}{x.shape}, y {y.dtype}{y.shape}"
            )
        else:
            assert loaded is not None, (
                f"refused a valid pair: x {x.dtype}{x.shape}, y {y.dtype}{y.shape}"
            )
            assert torch.equal(loaded.x, expected[0]) and torch.equal(loaded.y, expected[1])
            assert loaded.x.dtype == torch.float32 and loaded.y.dtype == torch.int64


def _valid_file_bytes(kind: str) -> bytes:
    x = np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32)
    y = np.array([0, 1, 2])
    buffer = io.BytesIO()
    if kind == "npz":
        np.savez(buffer, x=x, y=y)
    else:
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, buffer)
    return buffer.getvalue()


_VALID = {kind: _valid_file_bytes(kind) for kind in ("npz", "pt")}


@FUZZ
@given(
    kind=st.sampled_from(["npz", "pt"]),
    start=st.integers(0, 4000),
    patch=st.binary(min_size=0, max_size=16),
    cut=st.one_of(st.none(), st.integers(0, 4000)),
)
def test_damaged_files_fail_in_one_line(kind, start, patch, cut):
    data = bytearray(_VALID[kind])
    start = min(start, len(data))
    data[start : start + len(patch)] = patch
    if cut is not None:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"set.{kind}"
        path.write_bytes(bytes(data))
        loaded = _check(path)
        if loaded is not None:  # the damage missed everything that matters
            assert loaded.x.shape == (3, 1, 4, 4) and loaded.x.dtype == torch.float32


@FUZZ
@given(blob=st.binary(max_size=600), where=st.sampled_from(["npz", "pt", "idx", "idx.gz", "cifar"]))
def test_random_bytes_fail_in_one_line(blob, where):
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if where in ("npz", "pt"):
            path = folder / f"set.{where}"
            path.write_bytes(blob)
            assert _check(path) is None, "random bytes loaded as a dataset"
            return
        if where == "cifar":
            (folder / "cifar-10-batches-py").mkdir()
            (folder / "cifar-10-batches-py" / "test_batch").write_bytes(blob)
            _check(folder, "cifar10")
            return
        labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes([1, 2])
        if where == "idx.gz":
            (folder / "t10k-images-idx3-ubyte.gz").write_bytes(blob)
            with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
                handle.write(labels)
        else:
            (folder / "t10k-images-idx3-ubyte").write_bytes(blob)
            (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
        _check(folder, "mnist")


@FUZZ
@given(
    count=st.integers(1, 3),
    dims=st.lists(st.integers(0, 9), min_size=0, max_size=5),
    ndim=st.integers(0, 6),
    body=st.binary(max_size=300),
)
def test_idx_headers_fail_in_one_line_or_match(count, dims, ndim, body):
    header = bytes([0, 0, 8, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "t10k-images-idx3-ubyte").write_bytes(header + body)
        labels = bytes([0, 0, 8, 1]) + struct.pack(">I", count) + bytes(range(count))
        (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
        loaded = _check(folder, "mnist")
        # The IDX format read independently: ndim big-endian sizes after the magic, then data.
        content = header + body
        valid = ndim == 3 and len(content) >= 16
        if valid:
            shape = struct.unpack(">3I", content[4:16])
            pixels = content[16:]
            valid = (
                len(pixels) == int(np.prod(shape))
                and shape[0] == count
                and 0 not in shape
                and max(pixels) >= UINT8_MIN_PEAK
            )
        assert (loaded is not None) == valid
        if loaded is not None:
            expected = torch.tensor(list(pixels), dtype=torch.float32) / 255
            assert torch.equal(loaded.x.flatten(), expected)
            assert loaded.x.shape == (count, 1, shape[1], shape[2])


@pytest.mark.parametrize("kind", ["npz", "pt"])
def test_fuzz_oracle_accepts_a_plain_valid_file(tmp_path, kind):
    """The oracle above is not vacuous: a plain valid file is judged valid and loads equal."""
    x = np.linspace(0, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 3)
    y = np.array([4, 0])
    expected = _expected(x, y)
    assert expected is not None and expected[0].shape == (2, 3, 4, 4)
    loaded = load_dataset("file", "test", _save(tmp_path, kind, x, y), num_classes=_NUM_CLASSES)
    assert torch.equal(loaded.x, expected[0]) and torch.equal(loaded.y, expected[1])
