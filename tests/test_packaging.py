"""The commands' console scripts run from any folder.

A user's project folder commonly holds folders named like the toolkit's packages
(``checkpoints/`` of model files, ``reports/``, a package ``analysis`` of their own). A console
script never looks in the current folder, so it runs the toolkit's code, never the folder's, in
the editable install ``make install`` makes and in a wheel installed into a fresh environment.
Each command runs in a subprocess from such a folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("analysis", "attacks", "benchmarks", "checkpoints", "flatness", "reports", "torchutil")
# Written down from the README, not read from pyproject.toml: console script -> module.
COMMANDS = {
    "robaudit": "analysis.audit",
    "robaudit-gate": "analysis.gate",
    "robaudit-inspect": "checkpoints.inspect",
    "robaudit-report": "reports.html",
    "robaudit-compare": "reports.compare",
    "robaudit-train": "checkpoints.train",
}
TIMEOUT = 300  # seconds for one command; a --help takes a few


@dataclass(frozen=True)
class Install:
    """An environment with the toolkit installed: its interpreter and its scripts folder."""

    python: Path
    scripts: Path
    packages: Path  # the folder that holds the toolkit's packages in this installation


def _run(command: Sequence[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _hostile_folder(folder: Path, *, plain: Sequence[str] = ()) -> Path:
    """A folder holding a package of its own under every toolkit package name, except the
    ``plain`` names, which are plain folders (no ``__init__.py``, as a folder of data is).
    Importing one of its packages stops the process with a message naming it."""
    folder.mkdir()
    for name in PACKAGES:
        (folder / name).mkdir()
        if name not in plain:
            (folder / name / "__init__.py").write_text(
                f'raise SystemExit("the current folder\'s own {name!r} package was imported")\n'
            )
    return folder


def _editable() -> Install:
    # The environment running the tests: `make install` made it, with the sources as they are.
    return Install(Path(sys.executable), Path(sysconfig.get_path("scripts")), ROOT)


def _wheel(work: Path) -> Install:
    """Build a wheel from a copy of the sources, install it into a fresh environment and let
    that environment see the dependencies of this one (torch is far too big to install)."""
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(ROOT / name, source / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    built = _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", source]
        + ["-w", work / "wheel"],
        work,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "wheel").glob("robaudit-*.whl")
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    target = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work)
    assert target.returncode == 0, target.stderr
    site = Path(target.stdout.strip())
    dependencies = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    installed = _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], work)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return Install(python, venv / "bin", site)


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    return _wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(params=["editable", "wheel"])
def install(request: pytest.FixtureRequest) -> Install:
    if request.param == "editable":
        return _editable()
    return request.getfixturevalue("wheel_install")


def test_console_scripts_are_declared_and_installed() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared == {name: f"{module}:script" for name, module in COMMANDS.items()}
    installed = {
        entry.name: entry.value
        for entry in metadata.distribution("robaudit").entry_points
        if entry.group == "console_scripts"
    }
    assert installed == declared, "the installed scripts are stale: rerun make install"


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_console_script_help_from_a_folder_of_lookalikes(
    install: Install, script: str, tmp_path: Path
) -> None:
    folder = _hostile_folder(tmp_path / "project")
    path = install.scripts / script
    assert path.is_file(), f"{path} is missing: rerun make install"
    done = _run([path, "--help"], folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script} "), done.stdout[:200]
    assert "Traceback" not in done.stderr
