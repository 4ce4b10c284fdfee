"""Dataset loaders: the built-in digits split, where a dataset is looked for, and the checks of
a dataset against a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checkpoints.datasets import DATA_ENV, DatasetError, check_dataset, load_dataset


def test_digits_split_is_fixed_and_in_range():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.x.shape == (1347, 1, 8, 8) and test.x.shape == (450, 1, 8, 8)
    assert train.x.dtype == torch.float32 and test.y.dtype == torch.int64
    assert float(test.x.min()) == 0.0 and float(test.x.max()) == 1.0
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert np.array_equal(test.y.numpy(), bunch.target[1347:])
    assert np.allclose(test.x.numpy()[:, 0], bunch.images[1347:] / 16)


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
