"""Dataset loaders on generic .npz and .pt files of images and labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checkpoints.datasets import DatasetError, load_dataset


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


def test_input_shape_settles_an_ambiguous_layout(tmp_path):
    """[N, 3, 4, 3] reads as NCHW by default; a model that takes (3, 3, 4) gets it as NHWC."""
    x = np.random.default_rng(2).random((2, 3, 4, 3), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    default = load_dataset("file", "test", tmp_path / "d.npz")
    assert torch.equal(default.x, torch.from_numpy(x))
    nhwc = load_dataset("file", "test", tmp_path / "d.npz", input_shape=(3, 3, 4))
    assert torch.equal(nhwc.x, torch.from_numpy(x).permute(0, 3, 1, 2))
