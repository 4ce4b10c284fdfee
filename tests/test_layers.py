"""The import contract: every package imports only the layers below it.

From the bottom: ``core`` (torch-free: the command boundary, atomic I/O, statistics, the result
document and the checks' declarations; the standard library only), the domain (``torchutil``,
then ``checkpoints``, ``attacks`` and ``flatness``, which never import one another but for
``torchutil``), ``analysis``, then ``reports`` (which needs only ``core``: a report is rebuilt
from the document without torch), then the command layer, which may import everything. Every
``import`` statement counts, also inside functions and under ``TYPE_CHECKING``: a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("core", "torchutil", "checkpoints", "attacks", "flatness", "analysis", "reports")

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "torchutil": {"core"},
    "checkpoints": {"core", "torchutil"},
    "attacks": {"core", "torchutil"},
    "flatness": {"core", "torchutil"},
    "analysis": {"core", "torchutil", "checkpoints", "attacks", "flatness"},
    "reports": {"core"},
}
"""The project's packages each package may import, besides itself."""

COMMAND_MODULES = {"analysis.audit", "analysis.api"}
"""Modules of the command layer that still live inside a package: the audit command (its
argument parsing, and the report, tables and comparison it writes) and ``audit_model``, which
writes the report too. They may import everything."""

THIRD_PARTY_FORBIDDEN = {
    "core": None,  # None: nothing outside the standard library
    "reports": {"torch", "torchvision"},
}


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level name) of every import in the file, wherever it stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            yield node.lineno, (node.module or "").partition(".")[0]


MODULES = list(_modules())


def test_every_package_is_covered() -> None:
    assert set(ALLOWED) == set(PROJECT)
    assert {name.partition(".")[0] for name, _ in MODULES} == set(PROJECT)
    assert all(name in dict(MODULES) for name in COMMAND_MODULES)


@pytest.mark.parametrize("module", [name for name, _ in MODULES])
def test_a_module_imports_only_downward(module: str) -> None:
    path = dict(MODULES)[module]
    package = module.partition(".")[0]
    allowed = set(PROJECT) if module in COMMAND_MODULES else ALLOWED[package] | {package}
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name in _imports(path)
        if name in PROJECT and name not in allowed
    ]
    assert not upward, "; ".join(upward)


@pytest.mark.parametrize("package", sorted(THIRD_PARTY_FORBIDDEN))
def test_the_torch_free_layers_import_no_torch(package: str) -> None:
    forbidden = THIRD_PARTY_FORBIDDEN[package]
    found = []
    for module, path in MODULES:
        if module.partition(".")[0] != package:
            continue
        for line, name in _imports(path):
            if name in PROJECT or name == "__future__":
                continue
            outside = name not in sys.stdlib_module_names
            if (forbidden is None and outside) or (forbidden is not None and name in forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not found, "; ".join(found)


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    # The walk sees an import inside a function, which a lazy dependency hides behind.
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from analysis import audit\n    import torch.nn\n")
    assert list(_imports(source)) == [(2, "analysis"), (3, "torch")]
