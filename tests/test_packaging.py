"""The commands run from any folder, as console scripts and as ``python -m``.

A user's project folder commonly holds folders named like the toolkit's packages
(``checkpoints/`` of model files, ``reports/``, a package ``analysis`` of their own); the
current folder comes first on sys.path under ``python -m``. Every command must still run the
toolkit's code, never the folder's, in the editable install ``make install`` makes and in a
wheel installed into a fresh environment. Each command runs in a subprocess from such a folder.
"""

from __future__ import annotations

import inspect
import json
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
from typing import Any

import pytest

import analysis
import checkpoints
import reports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "analysis",
    "attacks",
    "benchmarks",
    "checkpoints",
    "commands",
    "core",
    "flatness",
    "reports",
    "torchutil",
)
# Written down from the README, not read from pyproject.toml: console script -> the module
# users run with `python -m`.
COMMANDS = {
    "robaudit": "analysis.audit",
    "robaudit-gate": "analysis.gate",
    "robaudit-inspect": "checkpoints.inspect",
    "robaudit-report": "reports.html",
    "robaudit-compare": "reports.compare",
    "robaudit-train": "checkpoints.train",
}
# Console script -> the command layer's module that holds it (commands/).
SCRIPTS = {
    "robaudit": "commands.audit",
    "robaudit-gate": "commands.gate",
    "robaudit-inspect": "commands.inspect",
    "robaudit-report": "commands.report",
    "robaudit-compare": "commands.compare",
    "robaudit-train": "commands.train",
}
ZOO_CHECKPOINT = ROOT / "checkpoints" / "zoo" / "digits-mlp-dropout.pt"
QUICK = ["--preset", "quick", "--no-flatness", "--num-samples", "20", "--no-report"]
TIMEOUT = 300  # seconds for one command; a --help takes a few, the quick audit under a minute


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


def _project_folder(folder: Path) -> Path:
    """A user's project folder: plain folders named like every toolkit package, and
    ``checkpoints/mynet.pt`` (a copy of a zoo checkpoint)."""
    _hostile_folder(folder, plain=PACKAGES)
    shutil.copyfile(ZOO_CHECKPOINT, folder / "checkpoints" / "mynet.pt")
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


def _without_timings(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _without_timings(v) for k, v in document.items() if k != "wall_time"}
    if isinstance(document, list):
        return [_without_timings(v) for v in document]
    return document


def test_console_scripts_are_declared_and_installed() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared == {name: f"{module}:script" for name, module in SCRIPTS.items()}
    installed = {
        entry.name: entry.value
        for entry in metadata.distribution("robaudit").entry_points
        if entry.group == "console_scripts"
    }
    assert installed == declared, "the installed scripts are stale: rerun make install"


def test_the_command_packages_drop_the_current_folder_alike() -> None:
    # The function cannot be shared (nothing of the toolkit is safe to import before it ran),
    # so its copies in the three packages whose modules are commands must not drift apart.
    ours = inspect.getsource(analysis._drop_current_folder)
    assert ours == inspect.getsource(reports._drop_current_folder)
    assert ours == inspect.getsource(checkpoints._drop_current_folder)


def test_packages_come_from_the_installation(install: Install, tmp_path: Path) -> None:
    # Folders without __init__.py in the current folder (first on sys.path) lose to the
    # installed packages; in the wheel's environment those are the wheel's, not the sources.
    folder = _project_folder(tmp_path / "project")
    names = ("analysis", "checkpoints", "core", "reports")  # the ones that import without torch
    code = f"import {', '.join(names)}; " + "; ".join(f"print({name}.__file__)" for name in names)
    located = _run([install.python, "-c", code], folder)
    assert located.returncode == 0, located.stderr
    expected = [install.packages.resolve() / name / "__init__.py" for name in names]
    found = [Path(line).resolve() for line in located.stdout.split()]
    # (in the editable install through robaudit-root.pth, which `make install` writes)
    assert found == expected, "not the installed packages (is robaudit-root.pth missing?)"


@pytest.mark.parametrize("module", sorted(set(COMMANDS.values())))
def test_module_help_from_a_folder_of_lookalikes(
    install: Install, module: str, tmp_path: Path
) -> None:
    # The command's own package is a plain folder there (a package of that name would be run
    # by Python itself before any code of the toolkit); every other name is a package.
    folder = _hostile_folder(tmp_path / "project", plain=[module.partition(".")[0]])
    done = _run([install.python, "-m", module, "--help"], folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} "), done.stdout[:200]
    assert "Traceback" not in done.stderr


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


def test_a_quick_audit_from_a_project_folder(install: Install, tmp_path: Path) -> None:
    folder = _project_folder(tmp_path / "project")
    module = _run(
        [install.python, "-m", "analysis.audit", "checkpoints/mynet.pt", *QUICK, "--out", "a"],
        folder,
    )
    assert module.returncode == 0, module.stderr
    script = _run(
        [install.scripts / "robaudit", "checkpoints/mynet.pt", *QUICK, "--out", "b"], folder
    )
    assert script.returncode == 0, script.stderr
    first = json.loads((folder / "a" / "mynet" / "audit.json").read_text())
    second = json.loads((folder / "b" / "mynet" / "audit.json").read_text())
    manifest = json.loads((ZOO_CHECKPOINT.parent / "manifest.json").read_text())
    assert (
        first["provenance"]["checkpoint_sha256"]
        == (manifest["checkpoints"][ZOO_CHECKPOINT.stem]["sha256"])
    )
    assert first["evaluation"]["num_samples"] == 20
    assert first["provenance"]["command_line"][:4] == [
        "python",
        "-m",
        "analysis.audit",
        "checkpoints/mynet.pt",
    ]
    assert second["provenance"]["command_line"][:2] == ["robaudit", "checkpoints/mynet.pt"]
    # Both ways run the same code on the same samples with the same seed.
    first.pop("provenance")
    second.pop("provenance")
    assert _without_timings(first) == _without_timings(second)


def test_python_P_runs_a_command_whose_package_the_folder_shadows(tmp_path: Path) -> None:
    # The one case no code of the toolkit can fix, since Python finds the folder's
    # `checkpoints` package before any: README names `python -P` and the console scripts.
    folder = _hostile_folder(tmp_path / "project")
    shadowed = _run([sys.executable, "-m", "checkpoints.inspect", "--help"], folder)
    assert shadowed.returncode != 0 and "'checkpoints' package was imported" in shadowed.stderr
    done = _run([sys.executable, "-P", "-m", "checkpoints.inspect", "--help"], folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m checkpoints.inspect ")
