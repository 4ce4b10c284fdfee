"""Builders of the bad inputs the commands must refuse: each writes what it needs under the
test's folder and returns the command's arguments."""

from __future__ import annotations

import copy
import gzip
import json
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from checkpoints.train import ZOO_DIR
from core.boundary import EXIT_INPUT

ZOO = ZOO_DIR / "digits-mlp-none.pt"
LENET = ZOO_DIR / "mnist-lenet5-dropout.pt"
FAST = ["--preset", "quick", "--no-flatness", "--quiet", "--num-samples", "20"]


@dataclass(frozen=True)
class Case:
    """One bad input: ``build(tmp)`` writes what it needs under ``tmp`` and returns argv."""

    name: str
    command: str
    build: Callable[[Path], list[str]]
    culprit: str
    status: int = EXIT_INPUT


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)  # type: ignore[operator]
    return path


def _audit(*extra: str, checkpoint: Path | str = ZOO) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(checkpoint), *FAST, "--out", str(tmp / "out"), *extra]


def _with_file(
    name: str, data: bytes | str, make_argv: Callable[[Path, Path], list[str]]
) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return make_argv(tmp, _write(tmp / name, data))

    return build


def _suite(text: str) -> Callable[[Path], list[str]]:
    return _with_file("suite.toml", text, lambda tmp, f: _audit("--suite", str(f))(tmp))


_DOCUMENT: dict = {}


def _baseline(edit: Callable[[dict], object]) -> Callable[[Path], list[str]]:
    """``--baseline`` with a copy of the real result, edited."""

    def build(tmp: Path) -> list[str]:
        document = copy.deepcopy(_DOCUMENT["result"])
        edit(document)
        path = _write(tmp / "baseline.json", json.dumps(document))
        return _audit("--baseline", str(path))(tmp)

    return build


def _gate(edit: Callable[[dict], object], *extra: str) -> Callable[[Path], list[str]]:
    """``analysis.gate`` of the real result against an edited copy of it."""

    def build(tmp: Path) -> list[str]:
        result = _write(tmp / "result.json", json.dumps(_DOCUMENT["result"]))
        document = copy.deepcopy(_DOCUMENT["result"])
        edit(document)
        baseline = _write(tmp / "baseline.json", json.dumps(document))
        return [str(result), str(baseline), *extra]

    return build


def _another_checkpoint(document: dict) -> None:
    """A baseline from another checkpoint: another file and other weights (the same weights
    under another file hash are the same model, which the gate accepts)."""
    document["provenance"]["checkpoint_sha256"] = "0" * 64
    document["provenance"]["weights_sha256"] = "1" * 64


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()


# ----------------------------------------------------------------- models that misbehave


class _FiveOutputs(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :5]


class _Raises(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("this model refuses every input")
        return x


class _Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = x.flatten(1)[:, :10]
        return logits, logits


def _scripted(module: nn.Module) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / "model.ts.pt"
        torch.jit.save(torch.jit.script(module), str(path))
        return _audit("--trust-checkpoint", "--dataset", "digits", checkpoint=path)(tmp)

    return build


def _untrusted_script(tmp: Path) -> list[str]:
    path = tmp / "model.ts.pt"
    torch.jit.save(torch.jit.script(_Pair()), str(path))
    return _audit("--dataset", "digits", checkpoint=path)(tmp)


def _without_hash(tmp: Path) -> list[str]:
    raw = torch.load(ZOO, weights_only=True)
    del raw["weights_sha256"]
    torch.save(raw, tmp / "nohash.pt")
    return _audit(checkpoint=tmp / "nohash.pt")(tmp)


def _data(images: np.ndarray, labels: np.ndarray) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        np.savez(tmp / "data.npz", x=images, y=labels)
        return _audit("--data", str(tmp / "data.npz"))(tmp)

    return build


_RNG = np.random.default_rng(0)
_PIXELS = _RNG.random((30, 1, 8, 8)).astype(np.float32)
_LABELS = _RNG.integers(0, 10, 30)
_NAN_PIXELS = _PIXELS.copy()
_NAN_PIXELS[3, 0, 2, 2] = np.nan


_DEEP_JSON = "[" * 100_000 + "]" * 100_000


def _sparse(name: str, size: int, make_argv: Callable[[Path, Path], list[str]]):
    """A file of ``size`` bytes that takes no room on disk (a sparse file of zeros)."""

    def build(tmp: Path) -> list[str]:
        path = tmp / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return make_argv(tmp, path)

    return build


def _idx_bomb(tmp: Path) -> list[str]:
    """An MNIST folder whose gzipped images header says 10,000 images of 28x28 (7.8 MB) while
    the file holds a few bytes: refused from the header and the file's size, before inflating."""
    folder = tmp / "mnist"
    folder.mkdir()
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10_000, 28, 28)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(100)))
    labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 10_000) + bytes(10_000)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return _audit("--data", str(folder), checkpoint=LENET)(tmp)


class _Payload:
    """Runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _raw_pickle(tmp: Path) -> list[str]:
    """A plain protocol-4 pickle with a payload, saved as a .pt file."""
    (tmp / "model.pt").write_bytes(pickle.dumps(_Payload(tmp / "ran"), protocol=4))
    return _audit("--arch", "mlp", "--dataset", "digits", checkpoint=tmp / "model.pt")(tmp)


def _same_stem(tmp: Path) -> list[str]:
    for folder in ("a", "b"):
        _write(tmp / folder / "model.pt", ZOO.read_bytes())
    return [
        str(tmp / "a" / "model.pt"),
        str(tmp / "b" / "model.pt"),
        *FAST,
        "--out",
        str(tmp / "o"),
    ]


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))
