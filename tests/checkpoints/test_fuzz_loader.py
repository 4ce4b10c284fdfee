"""Fuzzing the checkpoint loader: whatever the bytes or the dictionary, only a one-line
CheckpointError (or a loaded model) comes out. Deterministic (``derandomize``) for CI."""

from __future__ import annotations

import copy
import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoints import CheckpointError, CheckpointSpec, Description, save_checkpoint
from checkpoints.format import FORMAT_NAME, build_model, load_checkpoint, read_raw

# Damaged bytes make torch warn about the pickle protocol it reads; the outcome is what counts.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

torch.manual_seed(0)
_SPEC = CheckpointSpec("mlp", 10, (1, 8, 8), dataset="digits")
_NETWORK, _ = build_model(_SPEC)
with tempfile.TemporaryDirectory() as _folder:
    _GOOD = torch.load(
        save_checkpoint(Path(_folder) / "good.pt", _NETWORK, _SPEC), weights_only=True
    )
_BUFFER = io.BytesIO()
torch.save(dict(_GOOD["state_dict"]), _BUFFER)
_GOOD_BYTES = _BUFFER.getvalue()


def _outcome(path: Path, description: Description | None = None) -> None:
    """Load ``path``: a model, or a one-line CheckpointError naming the file."""
    try:
        loaded = load_checkpoint(path, description)
    except CheckpointError as err:
        message = str(err)
        assert "\n" not in message, message
        assert str(path.parent) in message, message
    else:
        assert not loaded.model.training


def _write(data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp())
    (folder / "fuzz.pt").write_bytes(data)
    return folder / "fuzz.pt"


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data):
    path = _write(data)
    _outcome(path, Description(arch="mlp", dataset="digits"))
    try:
        read_raw(path)
    except CheckpointError as err:
        assert "\n" not in str(err)


@FUZZ
@given(
    st.integers(0, len(_GOOD_BYTES) - 1),
    st.integers(0, 255),
    st.integers(1, len(_GOOD_BYTES)),
)
def test_damaged_real_file(position, value, keep):
    """A real state_dict file with one byte changed and the tail cut off."""
    data = bytearray(_GOOD_BYTES)
    data[position] = value
    _outcome(_write(bytes(data[:keep])), Description(arch="mlp", dataset="digits"))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_dtypes = st.sampled_from(
    [
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.uint8,
        torch.bool,
        torch.complex64,
    ]
)


@st.composite
def _tensors(draw: Any) -> torch.Tensor:
    shape = draw(st.lists(st.integers(0, 5), max_size=3))
    dtype = draw(_dtypes)
    tensor = torch.zeros(shape, dtype=torch.float64)
    if draw(st.booleans()) and dtype.is_floating_point:
        tensor.fill_(draw(st.floats(allow_nan=True, allow_infinity=True)))
    return tensor.to(dtype)


_values = st.recursive(
    st.one_of(_scalars, _tensors()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = sorted(_GOOD)


@FUZZ
@given(
    st.lists(st.sampled_from(_FIELDS), unique=True, max_size=4),
    st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=3),
)
def test_our_format_with_fields_removed_or_retyped(removed, retyped):
    doc = copy.deepcopy(_GOOD)
    for key in removed:
        doc.pop(key)
    doc.update(retyped)
    doc["format"] = FORMAT_NAME
    path = _write(b"")
    torch.save(doc, path)
    _outcome(path)


_names = st.one_of(
    st.sampled_from(sorted(_GOOD["state_dict"])),
    st.sampled_from(["module.1.weight", "model.4.bias", "features.0.weight", "", "."]),
    st.text(max_size=10),
)


@FUZZ
@given(
    st.dictionaries(_names, _tensors(), max_size=6),
    st.booleans(),
    st.sampled_from(
        [
            Description(arch="mlp", dataset="digits"),
            Description(arch="lenet5", dataset="mnist"),
            Description(arch="mlp", dataset="digits", num_classes=3),
            None,
        ]
    ),
)
def test_foreign_state_dicts_with_odd_keys_shapes_and_dtypes(weights, keep_real, description):
    state = dict(_GOOD["state_dict"]) if keep_real else {}
    state.update(weights)
    path = _write(b"")
    torch.save(state, path)
    _outcome(path, description)


@FUZZ
@given(_values)
def test_any_saved_object(obj):
    path = _write(b"")
    torch.save(obj, path)
    _outcome(path, Description(arch="mlp", dataset="digits"))
