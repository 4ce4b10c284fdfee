"""Dataset loaders on bad files the tests write: one line naming the file, and never running
its code."""

from __future__ import annotations

import re

import pytest
from bad_datasets import BAD_DATASETS

from checkpoints.datasets import DatasetError, load_dataset


@pytest.mark.parametrize(
    ("name", "build", "kwargs", "pattern"),
    [case[1:] for case in BAD_DATASETS],
    ids=[case[0] for case in BAD_DATASETS],
)
def test_bad_dataset_is_one_line_naming_the_file(tmp_path, name, build, kwargs, pattern):
    path = build(tmp_path)
    with pytest.raises(DatasetError) as caught:
        load_dataset(name, "test", path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and type(caught.value) is DatasetError
    assert str(tmp_path) in message, message
    assert re.search(pattern, message), message
    assert not (tmp_path / "ran").exists()


def test_case_ids_are_unique():
    ids = [case[0] for case in BAD_DATASETS]
    assert len(ids) == len(set(ids))
