"""The toolkit's command-line boundary (``checkpoints/boundary.py``) for the report commands,
without torch.

``checkpoints.boundary`` is pure standard library, but ``import checkpoints.boundary`` first
runs ``checkpoints/__init__.py``, which loads the model code and torch. The report commands
must run where torch is not installed, so this module loads that one file on its own (when
``checkpoints`` has not been imported already) and re-exports what the commands use: the same
one-line errors and exit statuses as every other command of the toolkit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = [
    "EXIT_INPUT",
    "EXIT_OK",
    "InputError",
    "OneLineParser",
    "check_writable",
    "one_line",
    "run_command",
]


def _load() -> ModuleType:
    if "checkpoints.boundary" in sys.modules:
        return sys.modules["checkpoints.boundary"]
    package = importlib.util.find_spec("checkpoints")  # finds the package, runs nothing
    if package is None or not package.submodule_search_locations:
        raise ImportError("the checkpoints package of this toolkit is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "boundary.py"
    spec = importlib.util.spec_from_file_location("reports._checkpoints_boundary", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_boundary = _load()
EXIT_OK: int = _boundary.EXIT_OK
EXIT_INPUT: int = _boundary.EXIT_INPUT
InputError: type[ValueError] = _boundary.InputError
OneLineParser = _boundary.OneLineParser
check_writable = _boundary.check_writable
one_line = _boundary.one_line
run_command = _boundary.run_command
