"""MNIST and Fashion-MNIST: a folder of the four IDX files, gzipped or not, read with every
header checked against what the file can hold before the images are."""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import IO

import numpy as np

from checkpoints.checkfile import error_summary
from checkpoints.datacheck import (
    CLASS_NAMES,
    Dataset,
    DatasetError,
    Expect,
    checked_images,
    checked_labels,
)
from core.boundary import DEFLATE_MAX_RATIO, INPUT_LIMITS, open_input, size_text

_IDX_CHUNK = 1 << 20  # a gzipped IDX file is inflated this many bytes at a time


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
                f"{path}: cannot read the IDX file ({error_summary(err)}); give an intact "
                "(optionally gzipped) IDX file"
            ) from None
        except Exception as err:  # zlib and gzip raise several types on corrupt streams
            raise DatasetError(
                f"{path}: the gzip stream is corrupt ({error_summary(err)}); "
                "download the file again"
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


def idx_folder(folder: Path, name: str, split: str, expect: Expect) -> Dataset:
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
    x = checked_images(images, f"{files[0]} (images)", expect)
    y = checked_labels(labels, int(x.shape[0]), f"{files[1]} (labels)", expect)
    return Dataset(x, y, name, split, str(folder), tuple(CLASS_NAMES[name]))
