"""Shared test configuration: the reference data folder comes from $ROBAUDIT_DATA, and the
device of the tests marked ``device`` from ``--device`` (cpu by default).

    pytest -m device --device cuda      # on a GPU machine: the device tests on the GPU
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The reference data folder; tests that need it skip with a reason when it is absent."""
    value = os.environ.get("ROBAUDIT_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("reference data not available: set ROBAUDIT_DATA to the shared data folder")
    return Path(value)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="where the tests marked 'device' put the model and data (default cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Asking for CUDA where there is none is an error, not a skip: a GPU run that silently
    # ran on the CPU must not pass.
    if config.getoption("--device") == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: no CUDA device is available; use --device cpu")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device given by ``--device``."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(autouse=True)
def _seeded_torch() -> Iterator[None]:
    """Each test starts from the same state of torch's global generator, whatever ran before
    it: a model that draws from it (dropout at test time) then gives the same outcomes in any
    order and selection of tests, so a statistical check with a 1 % false-alarm rate cannot
    fail one run in a hundred. The caller's state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    """Each test starts from the same ``sys.path``: importing a user's model file puts its
    folder first there (as running it as a script would), and a folder left behind would
    shadow other modules for every later test and for the processes they spawn (a test's
    ``json.py`` broke ``import torch`` in spawned workers)."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved
