"""The import contract: every package imports only the layers below it.

From the bottom: ``core`` (torch-free: the command boundary, atomic I/O, statistics, the result
document and the checks' declarations; the standard library only), the domain (``torchutil``,
then ``checkpoints``, ``attacks`` and ``flatness``, which never import one another but for
``torchutil``), ``analysis``, then ``reports`` (which needs only ``core``: a report is rebuilt
from the document without torch), then the command layer ``commands``, which may import
everything and which nothing imports. Every ``import`` statement counts, also inside functions
and under ``TYPE_CHECKING``: a lazy import is still a dependency. Two kinds of exception are
written down below, each one import edge wide: the ``python -m`` modules users type, which
hand over to their command, and ``audit_model``'s report.

No module imports another's private names (``_name``): a name one module lends its siblings is
public in the module that defines it, so that ``_name`` always means "used only here".
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = (
    "core",
    "torchutil",
    "checkpoints",
    "attacks",
    "flatness",
    "analysis",
    "reports",
    "commands",
)

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "torchutil": {"core"},
    "checkpoints": {"core", "torchutil"},
    "attacks": {"core", "torchutil"},
    "flatness": {"core", "torchutil"},
    "analysis": {"core", "torchutil", "checkpoints", "attacks", "flatness"},
    "reports": {"core"},
    "commands": set(PROJECT) - {"commands"},
}
"""The project's packages each package may import, besides itself."""

ENTRY_MODULES = {
    "analysis.audit": "commands.audit",
    "analysis.gate": "commands.gate",
    "checkpoints.inspect": "commands.inspect",
    "checkpoints.train": "commands.train",
    "reports.html": "commands.report",
    "reports.compare": "commands.compare",
}
"""The modules users run as ``python -m MODULE`` (README, console scripts aside), each with the
command it hands over to. Only under ``if __name__ == "__main__":`` may such a module import
upward, and only its own command: imported as a library, it imports nothing above its layer."""

EXCEPTIONS = {
    ("analysis.api", "reports"): "audit_model(out=...) writes report.html beside audit.json, "
    "as the audit command does; it is the toolkit's entry point from Python, "
    "`from analysis import audit_model`, which no module above analysis could keep",
}
"""(module, package) import edges allowed against the table, each with its reason."""

THIRD_PARTY_FORBIDDEN = {
    "core": None,  # None: nothing outside the standard library
    "reports": {"torch", "torchvision"},
    # The commands that render documents run where torch is not installed.
    "commands.report": {"torch", "torchvision"},
    "commands.compare": {"torch", "torchvision"},
}
"""What a package (or one module) must not import besides the project."""

PRIVATE_IMPORTS_ALLOWED = {
    # The names torch.load(weights_only=True) admits, which the pickle check must match;
    # torch offers no public way to read them.
    ("checkpoints.consent", "torch._weights_only_unpickler", "_get_allowed_globals"),
}
"""(module, imported module, name): the private names a module may import, each from outside the
project and with its reason; a private name of the project is never lent."""

NON_TEST = (*PROJECT, "benchmarks")
"""Every package of code that is not a test: the layers and the benchmarks."""


def _modules(packages: tuple[str, ...] = PROJECT) -> Iterator[tuple[str, Path]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":``"""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and len(node.test.ops) == 1
        and isinstance(node.test.ops[0], ast.Eq)
        and isinstance(node.test.comparators[0], ast.Constant)
        and node.test.comparators[0].value == "__main__"
    )


def _full_imports(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line, module, under ``if __name__ == "__main__":``) of every import in the file,
    wherever it stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    guarded = {
        id(inner)
        for node in ast.walk(tree)
        if _is_main_guard(node)
        for statement in node.body  # type: ignore[attr-defined]
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, id(node) in guarded
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            yield node.lineno, node.module or "", id(node) in guarded


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level name) of every import in the file, wherever it stands."""
    for line, module, _ in _full_imports(path):
        yield line, module.partition(".")[0]


def _private_names(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) of every ``from module import _name`` in the file, wherever it
    stands (dunder names such as ``__version__`` are not private)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.lineno, node.module or "", alias.name


MODULES = list(_modules())


def test_every_package_is_covered() -> None:
    assert set(ALLOWED) == set(PROJECT)
    assert {name.partition(".")[0] for name, _ in MODULES} == set(PROJECT)
    assert all(name in dict(MODULES) for name in ENTRY_MODULES)
    assert all(name in dict(MODULES) for name in ENTRY_MODULES.values())
    assert all(name in dict(MODULES) for name, _ in EXCEPTIONS)
    assert all(key in PROJECT or key in dict(MODULES) for key in THIRD_PARTY_FORBIDDEN)


@pytest.mark.parametrize("module", [name for name, _ in MODULES])
def test_a_module_imports_only_downward(module: str) -> None:
    path = dict(MODULES)[module]
    package = module.partition(".")[0]
    allowed = ALLOWED[package] | {package} | {p for m, p in EXCEPTIONS if m == module}
    command = ENTRY_MODULES.get(module)
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for line, name, guarded in _full_imports(path)
        if name.partition(".")[0] in PROJECT
        and name.partition(".")[0] not in allowed
        and not (guarded and name == command)
    ]
    assert not upward, "; ".join(upward)


@pytest.mark.parametrize("module", sorted(ENTRY_MODULES))
def test_a_python_m_module_hands_over_to_its_command(module: str) -> None:
    # The exception is one import wide and must be used: a module that no longer hands over
    # (or hands over to another command) leaves the list.
    path = dict(MODULES)[module]
    guarded = [name for _, name, under in _full_imports(path) if under]
    assert ENTRY_MODULES[module] in guarded, f"{module} does not run {ENTRY_MODULES[module]}"


@pytest.mark.parametrize("package", sorted(THIRD_PARTY_FORBIDDEN))
def test_the_torch_free_layers_import_no_torch(package: str) -> None:
    forbidden = THIRD_PARTY_FORBIDDEN[package]
    found = []
    for module, path in MODULES:
        if module != package and not module.startswith(f"{package}."):
            continue
        for line, name in _imports(path):
            if name in PROJECT or name == "__future__":
                continue
            outside = name not in sys.stdlib_module_names
            if (forbidden is None and outside) or (forbidden is not None and name in forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not found, "; ".join(found)


def test_no_module_imports_another_modules_private_names() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name} from {source}"
        for module, path in _modules(NON_TEST)
        for line, source, name in _private_names(path)
        if (module, source, name) not in PRIVATE_IMPORTS_ALLOWED
    ]
    assert not found, "; ".join(found)


def test_private_imports_are_allowed_only_from_outside_and_where_made() -> None:
    modules = dict(_modules(NON_TEST))
    for module, source, name in PRIVATE_IMPORTS_ALLOWED:
        assert source.partition(".")[0] not in NON_TEST, f"{source} is the project's own"
        assert (source, name) in {(s, n) for _, s, n in _private_names(modules[module])}, (
            f"{module} no longer imports {name} from {source}"
        )


def test_the_contract_catches_a_private_import(tmp_path: Path) -> None:
    source = tmp_path / "borrow.py"
    source.write_text(
        "from __future__ import annotations\n"
        "def f():\n"
        "    from reports.evidenceblocks import MAX_ROWS, _helper\n"
        "    from core import __version__\n"
    )
    assert list(_private_names(source)) == [(3, "reports.evidenceblocks", "_helper")]


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    # The walk sees an import inside a function, which a lazy dependency hides behind.
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from analysis import audit\n    import torch.nn\n")
    assert list(_imports(source)) == [(2, "analysis"), (3, "torch")]


def test_the_contract_tells_a_main_block_from_the_module(tmp_path: Path) -> None:
    source = tmp_path / "shim.py"
    source.write_text(
        "import sys\n"
        "if __name__ == '__main__':\n"
        "    from commands.audit import main\n"
        "    sys.exit(main())\n"
        "if __name__ != '__main__':\n"
        "    import commands.gate\n"
    )
    assert list(_full_imports(source)) == [
        (1, "sys", False),
        (3, "commands.audit", True),
        (6, "commands.gate", False),
    ]
