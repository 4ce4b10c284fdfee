"""Every bad checkpoint ends in one CheckpointError: one line naming the file, what was
expected, what arrived and the fix; no other exception escapes the loader."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from checkpoints import CheckpointError, CheckpointSpec, Description, save_checkpoint
from checkpoints.architectures import build_network
from checkpoints.format import build_model, load_checkpoint, read_raw

DIGITS_MLP = Description(arch="mlp", dataset="digits")
_DROP = object()


def _ours(tmp_path: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    spec = CheckpointSpec("mlp", 10, (1, 8, 8), dataset="digits")
    network, _ = build_model(spec)
    return torch.load(save_checkpoint(tmp_path / "good.pt", network, spec), weights_only=True)


def _edited(**changes: Any) -> Callable[[Path], tuple[Path, Description | None]]:
    """A file of ours with fields removed (``_DROP``) or replaced."""

    def make(tmp_path: Path) -> tuple[Path, Description | None]:
        doc = copy.deepcopy(_ours(tmp_path))
        for key, value in changes.items():
            if value is _DROP:
                doc.pop(key)
            else:
                doc[key] = value(doc) if callable(value) else value
        torch.save(doc, tmp_path / "bad.pt")
        return tmp_path / "bad.pt", None

    return make


def _raw_bytes(data: Callable[[Path], bytes]) -> Callable[[Path], tuple[Path, None]]:
    def make(tmp_path: Path) -> tuple[Path, None]:
        (tmp_path / "bad.pt").write_bytes(data(tmp_path))
        return tmp_path / "bad.pt", None

    return make


def _saved(obj: Callable[[Path], Any], description: Description | None = DIGITS_MLP):
    def make(tmp_path: Path) -> tuple[Path, Description | None]:
        torch.save(obj(tmp_path), tmp_path / "bad.pt")
        return tmp_path / "bad.pt", description

    return make


def _lenet_state(tmp_path: Path) -> dict[str, torch.Tensor]:
    return build_network("lenet5", (1, 28, 28), 10).state_dict()


def _mlp_state(tmp_path: Path) -> dict[str, torch.Tensor]:
    return dict(_ours(tmp_path)["state_dict"])


def _sidecar(suffix: str, text: str | bytes, description: Description | None = None):
    """LeNet-5 weights with a sidecar description ``bad.<suffix>``."""

    def make(tmp_path: Path) -> tuple[Path, Description | None]:
        torch.save(_lenet_state(tmp_path), tmp_path / "bad.pt")
        side = tmp_path / f"bad.{suffix}"
        side.write_bytes(text if isinstance(text, bytes) else text.encode())
        return tmp_path / "bad.pt", description

    return make


def _good_bytes(tmp_path: Path) -> bytes:
    torch.save(_mlp_state(tmp_path), tmp_path / "whole.pt")
    return (tmp_path / "whole.pt").read_bytes()


# (case, builder, fragments the message must hold); documented in the test's ids.
CASES: list[tuple[str, Callable[[Path], tuple[Path, Description | None]], list[str]]] = [
    ("empty file", _raw_bytes(lambda p: b""), ["not a readable PyTorch checkpoint", "EOFError"]),
    ("random bytes", _raw_bytes(lambda p: bytes(range(256)) * 4), ["not a readable", "re-save"]),
    ("text file", _raw_bytes(lambda p: b"hello\n"), ["not a readable"]),
    (
        "truncated zip",
        _raw_bytes(lambda p: _good_bytes(p)[: len(_good_bytes(p)) // 2]),
        ["not a readable", "complete"],
    ),
    ("zip without its tail", _raw_bytes(lambda p: _good_bytes(p)[:-10]), ["not a readable"]),
    ("ours without arch", _edited(arch=_DROP), ["field 'arch'", "missing", "re-save"]),
    ("ours with arch an int", _edited(arch=3), ["field 'arch'", "got 3 (int)"]),
    ("ours with unknown arch", _edited(arch="vgg99"), ["field 'arch'", "'vgg99'", "lenet5"]),
    ("ours without input_shape", _edited(input_shape=_DROP), ["field 'input_shape'", "missing"]),
    ("ours with two-entry input_shape", _edited(input_shape=[1, 8]), ["field 'input_shape'"]),
    ("ours with input_shape a string", _edited(input_shape="1,8,8"), ["'1,8,8' (str)"]),
    ("ours with negative input_shape", _edited(input_shape=[1, -8, 8]), ["field 'input_shape'"]),
    ("ours without num_classes", _edited(num_classes=_DROP), ["field 'num_classes'", "missing"]),
    ("ours with num_classes a string", _edited(num_classes="ten"), ["'ten' (str)"]),
    ("ours with fractional num_classes", _edited(num_classes=10.5), ["10.5 (float)"]),
    ("ours with one class", _edited(num_classes=1), ["at least 2"]),
    (
        "ours with state_dict a list",
        _edited(state_dict=lambda d: list(d["state_dict"].values())),
        ["field 'state_dict'", "a list of 8 items (Tensor)"],
    ),
    (
        "ours with non-tensor state_dict",
        _edited(state_dict=lambda d: dict.fromkeys(d["state_dict"], 1.0)),
        ["field 'state_dict'", "names to tensors"],
    ),
    ("ours without state_dict", _edited(state_dict=_DROP), ["field 'state_dict'", "missing"]),
    ("ours with empty state_dict", _edited(state_dict={}), ["field 'state_dict'"]),
    (
        "ours with a sparse weight",
        _edited(state_dict=lambda d: {k: v.to_sparse() for k, v in d["state_dict"].items()}),
        ["dense real tensor", "sparse_coo"],
    ),
    ("ours without weights_sha256", _edited(weights_sha256=_DROP), ["weights_sha256", "got none"]),
    ("ours with weights_sha256 an int", _edited(weights_sha256=5), ["field 'weights_sha256'"]),
    (
        "ours with edited weights",
        _edited(state_dict=lambda d: {k: v + 1 for k, v in d["state_dict"].items()}),
        ["recorded sha256"],
    ),
    ("ours with layer a string", _edited(layer="qsd"), ["field 'layer'", "'qsd' (str)"]),
    ("ours with unknown layer kind", _edited(layer={"kind": "zzz"}), ["field 'layer.kind'"]),
    (
        "ours with unknown layer parameter",
        _edited(layer={"kind": "qsd", "params": {"zz": 1}}),
        ["field 'layer'", "unknown parameter"],
    ),
    ("ours with layer positions a string", _edited(layer={"positions": "1"}), ["positions"]),
    (
        "ours with non-numeric normalisation",
        _edited(normalization={"mean": ["a"], "std": [1]}),
        ["field 'normalization'", "numbers"],
    ),
    (
        "ours with normalisation of two channels",
        _edited(normalization={"mean": [0.1, 0.2], "std": [1, 1]}),
        ["field 'normalization'", "per input channel (1)"],
    ),
    (
        "ours with NaN std",
        _edited(normalization={"mean": [0.1], "std": [float("nan")]}),
        ["field 'normalization'", "finite"],
    ),
    ("ours with reversed bounds", _edited(bounds=[1, 0]), ["field 'bounds'", "LOW < HIGH"]),
    ("ours with version a string", _edited(format_version="1"), ["format version '1'"]),
    ("ours from the future", _edited(format_version=99), ["format version 99", "upgrade"]),
    ("ours with arch_kwargs a list", _edited(arch_kwargs=[1, 2]), ["field 'arch_kwargs'"]),
    (
        "ours with a bad arch argument",
        _edited(arch_kwargs={"hidden": "x"}),
        ["cannot build architecture 'mlp'", "hidden"],
    ),
    ("ours with accuracy a string", _edited(clean_accuracy="high"), ["field 'clean_accuracy'"]),
    ("ours with dataset an int", _edited(dataset=7), ["field 'dataset'"]),
    ("ours with training a list", _edited(training=[1]), ["field 'training'"]),
    ("foreign list of tensors", _saved(lambda p: list(_mlp_state(p).values())), ["got a list"]),
    (
        "Lightning file whose state_dict is a list",
        _saved(lambda p: {"state_dict": list(_mlp_state(p).values())}),
        ["whose 'state_dict' is a list of 8 items"],
    ),
    ("empty mapping", _saved(lambda p: {}), ["that is empty"]),
    ("a single tensor", _saved(lambda p: torch.zeros(3)), ["got a Tensor"]),
    ("a number", _saved(lambda p: 3), ["got a int"]),
    (
        "integer weights",
        _saved(lambda p: {k: v.long() for k, v in _mlp_state(p).items()}),
        ["dtype mismatches", "torch.int64 vs model torch.float32"],
    ),
    (
        "complex weights",
        _saved(lambda p: {k: v.to(torch.complex64) for k, v in _mlp_state(p).items()}),
        ["dense real tensor", "complex64"],
    ),
    (
        "one weight with an odd shape",
        _saved(lambda p: {**_mlp_state(p), "1.weight": torch.zeros(3, 3, 3)}),
        ["shape mismatches", "1.weight"],
    ),
    (
        "an extra key",
        _saved(lambda p: {**_mlp_state(p), "extra.weight": torch.zeros(2)}),
        ["unexpected keys: extra.weight"],
    ),
    (
        "LeNet-5 weights given --arch mlp",
        _saved(_lenet_state, Description(arch="mlp", dataset="mnist")),
        ["architecture does not match the weights", "--arch lenet5 --dataset mnist"],
    ),
    (
        "LeNet-5 weights without a description",
        _saved(_lenet_state, None),
        [
            "is a plain state_dict: it holds weights but does not name the architecture",
            "--arch lenet5 --dataset mnist",
        ],
    ),
    (
        "digits MLP weights given --dataset mnist",
        _saved(_mlp_state, Description(arch="mlp", dataset="mnist")),
        ["the input shape differs", "--dataset digits"],
    ),
    (
        "unknown --arch",
        _saved(_lenet_state, Description(arch="nope", dataset="mnist")),
        ["unknown architecture 'nope'"],
    ),
    (
        "no data described",
        _saved(_lenet_state, Description(arch="lenet5")),
        ["cannot tell the input shape", "--dataset"],
    ),
    (
        "huge --num-classes",
        _saved(_lenet_state, Description(arch="lenet5", dataset="mnist", num_classes=10**30)),
        ["below 2**63"],
    ),
    (
        "large --num-classes",
        _saved(_lenet_state, Description(arch="lenet5", dataset="mnist", num_classes=10**12)),
        ["number of classes differs", "--num-classes 10"],
    ),
    (
        "input too small for the architecture",
        _saved(_lenet_state, Description(arch="lenet5", dataset="digits")),
        ["cannot build architecture 'lenet5'", "too small", "--dataset"],
    ),
    (
        "sidecar TOML with num_classes a word",
        _sidecar("toml", 'arch = "lenet5"\nnum_classes = "ten"\n'),
        ["bad.toml", "num_classes must be a whole number", "'ten'"],
    ),
    (
        "sidecar JSON with a 24-digit num_classes",
        _sidecar(
            "json", '{"arch": "lenet5", "dataset": "mnist", "num_classes": 1' + "0" * 23 + "}"
        ),
        ["below 2**63"],
    ),
    (
        "sidecar JSON with a 24-digit input size",
        _sidecar(
            "json",
            '{"arch": "lenet5", "num_classes": 10, "input_shape": [1, 1' + "0" * 23 + ", 28]}",
        ),
        ["below 2**63"],
    ),
    ("sidecar TOML syntax error", _sidecar("toml", "arch = lenet5\n"), ["bad.toml", "not valid"]),
    ("sidecar JSON list", _sidecar("json", "[1, 2]"), ["bad.json", "table of keys", "list"]),
    ("sidecar JSON arch an int", _sidecar("json", '{"arch": 5}'), ["bad.json", "'arch'"]),
    ("sidecar JSON nested deeply", _sidecar("json", "[" * 100000 + "]" * 100000), ["deeply"]),
    ("sidecar TOML layers an int", _sidecar("toml", "layers = 5\n"), ["bad.toml", "'layers'"]),
    (
        "sidecar TOML with an unknown layer",
        _sidecar("toml", 'layers = "sideways"\n'),
        ["bad.toml", "'layers'", "unknown layer kind"],
    ),
    ("sidecar TOML arch_kwargs a string", _sidecar("toml", 'arch_kwargs = "x"\n'), ["bad.toml"]),
    ("sidecar TOML unknown key", _sidecar("toml", 'colour = "red"\n'), ["bad.toml", "colour"]),
    ("sidecar JSON fractional classes", _sidecar("json", '{"num_classes": 10.5}'), ["10.5"]),
    ("sidecar JSON boolean classes", _sidecar("json", '{"num_classes": true}'), ["True"]),
    ("sidecar JSON shape of words", _sidecar("json", '{"input_shape": "a,b,c"}'), ["bad.json"]),
    ("sidecar JSON bounds of NaN", _sidecar("json", '{"bounds": [NaN, 1]}'), ["bounds"]),
    ("sidecar TOML not UTF-8", _sidecar("toml", b'arch = "\xff\xfe"\n'), ["bad.toml", "UTF-8"]),
]


@pytest.mark.parametrize(
    ("builder", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_checkpoint_is_one_line_naming_the_file(tmp_path, builder, fragments):
    path, description = builder(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, description)
    message = str(info.value)
    assert type(info.value) is CheckpointError or issubclass(type(info.value), CheckpointError)
    assert "\n" not in message and len(message) < 600
    assert str(tmp_path) in message  # the checkpoint or its sidecar, by path
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "data", [b"", b"\x80", bytes(range(256)), b"PK\x03\x04" + bytes(64)], ids=repr
)
def test_read_raw_raises_only_checkpoint_errors(tmp_path, data):
    (tmp_path / "x.pt").write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        read_raw(tmp_path / "x.pt")
    assert "\n" not in str(info.value) and str(tmp_path / "x.pt") in str(info.value)


def test_the_cases_cover_more_than_sixty_inputs():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
