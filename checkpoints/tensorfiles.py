"""Datasets in one file of tensors: an ``.npz`` (``x``, ``y``), read without pickle with every
member's header checked before it is inflated, or a ``.pt`` dict of tensors ``x`` and ``y``,
read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from checkpoints.checkfile import error_summary
from checkpoints.datacheck import (
    CLASS_NAMES,
    MAX_MESSAGE_PART,
    Dataset,
    DatasetError,
    Expect,
    checked_images,
    checked_labels,
)
from core.boundary import check_archive, open_input


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
                f"{path} is not an .npz archive (not a readable zip file: {error_summary(err)}); "
                "save it with numpy.savez(path, x=images, y=labels)"
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
            f"{path}: array '{key}' is not a readable .npy member ({error_summary(err)}); save the "
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
            f"({error_summary(err)}); save uint8/float images and integer labels"
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
            else (detail.group(1)[:MAX_MESSAGE_PART] if detail else error_summary(err))
        )
        raise DatasetError(
            f"{path}: refused by torch.load(weights_only=True), which loads tensors only "
            f"({what}); a .pt dataset holds only a dict of tensors 'x' and 'y'"
        ) from None
    except Exception as err:  # torch.load raises many types on truncated or foreign files
        raise DatasetError(
            f"{path} is not a readable .pt file ({error_summary(err)}); save it with "
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


def tensor_file(path: Path, name: str, split: str, expect: Expect) -> Dataset:
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
    x = checked_images(images, f"{path} {kind} 'x' (images)", expect)
    y = checked_labels(labels, int(x.shape[0]), f"{path} {kind} 'y' (labels)", expect)
    return Dataset(x, y, name, split, str(path), tuple(CLASS_NAMES.get(name, ())))
