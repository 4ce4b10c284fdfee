"""Dataset loaders on MNIST's IDX files: written by the tests, the reference files, and gzip
streams that inflate beyond their header."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_writers import _IDX_10000_HEADER, _write_idx

from checkpoints.datasets import DATA_ENV, DatasetError, load_dataset, read_idx


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
