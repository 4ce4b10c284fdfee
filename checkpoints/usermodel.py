"""A model built from the user's own code: ``--model FILE.py:NAME`` or ``--model pkg.mod:NAME``.

NAME is a class or a factory function; calling it with the keyword arguments (``--model-kwargs``
or the sidecar's ``model_kwargs`` table) must return the network, an ``nn.Module`` that maps
(normalised) images to logits. The weights then load into it from a state_dict, a Lightning
``.ckpt`` or a file of ours, strictly, as for a registered architecture (``checkpoints.format``).

The code runs because the user named it: ``FILE.py`` is imported by path, with its folder put
first on ``sys.path`` so that its own sibling imports work, as when it is run as a script (its
``if __name__ == "__main__":`` block does not run); ``pkg.mod`` is imported from ``sys.path``
(``PYTHONPATH``), then from the current folder. :func:`check_source` describes a reference
without running anything (for ``checkpoints.inspect``). Every failure is one
:class:`UserModelError` line.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import math
import os
import re
import sys
import traceback
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from checkpoints.checkfile import error_summary
from core.document import ModelSource, as_read

__all__ = [
    "ModelReference",
    "UserModelError",
    "build_user_model",
    "check_source",
    "parse_model_kwargs",
    "parse_model_reference",
]

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_FORMS = "FILE.py:NAME or package.module:NAME (NAME a class or a function that returns the model)"


class UserModelError(ValueError):
    """The user's model code cannot be found, imported, called or used; one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class ModelReference:
    """Where the user's model comes from.

    Attributes:
        text: the reference as written (``mynet.py:MyNet``).
        kind: ``file`` (imported by path) or ``module`` (imported by name).
        target: the file's path (relative ones against the sidecar's folder when a sidecar
            wrote it) or the dotted module name.
        name: the class or function in it (dotted for a nested one).
    """

    text: str
    kind: Literal["file", "module"]
    target: str
    name: str

    def __str__(self) -> str:
        return self.text


def parse_model_reference(
    value: Any, origin: str = "--model", base: Path | None = None
) -> ModelReference:
    """Parse ``FILE.py:NAME`` or ``package.module:NAME`` without importing anything.

    Args:
        value: the reference.
        origin: where it was written, for messages.
        base: folder that a relative ``FILE.py`` is relative to (a sidecar's); None: the
            current folder.
    """
    if not isinstance(value, str):
        raise UserModelError(
            f"{origin} must be {_FORMS}, got {value!r} ({type(value).__name__}); write it in quotes"
        )
    text = value.strip()
    where, colon, name = text.rpartition(":")
    if not colon or not where.strip():
        raise UserModelError(
            f"{origin} must be {_FORMS}, got {value!r}; name the class after a colon, e.g. "
            "mynet.py:MyNet"
        )
    where, name = where.strip(), name.strip()
    if not _DOTTED.fullmatch(name):
        raise UserModelError(
            f"{origin}: {name!r} after the colon in {value!r} is not a Python name; expected "
            f"{_FORMS}"
        )
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return ModelReference(text, "file", str(path), name)
    if not _DOTTED.fullmatch(where):
        raise UserModelError(
            f"{origin}: {where!r} in {value!r} is neither a .py file nor a dotted module name; "
            f"expected {_FORMS}"
        )
    return ModelReference(text, "module", where, name)


# ------------------------------------------------------------------------------- arguments


def _check_json(value: Any, where: str, origin: str) -> Any:
    """``value`` if it is JSON data (so that it can be recorded in the result), else an error."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserModelError(f"{origin}: {where} must be a finite number, got {value}")
        return value
    if isinstance(value, list | tuple):
        return [_check_json(v, f"{where}[{i}]", origin) for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _check_json(v, f"{where}.{k}", origin) for k, v in value.items()}
    raise UserModelError(
        f"{origin}: {where} must be a number, a string, true/false, null, a list or a table, got "
        f"{type(value).__name__}"
    )


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets and quotes."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


_WORDS = {"true": True, "false": False, "null": None, "none": None}


def _value(text: str) -> Any:
    """A ``key=value`` value: JSON (numbers, true/false/null, lists, "strings"), else the bare
    word as a string."""
    text = text.strip()
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1]
        return text


def parse_model_kwargs(value: Any, origin: str = "--model-kwargs") -> dict[str, Any] | None:
    """Keyword arguments for the model: a JSON object (``{"width": 64}``), ``key=value,...``
    (``width=64,act=relu``) or a table (a sidecar's); None when not given."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                raise UserModelError(
                    f"{origin}: {value!r} is not valid JSON ({err.msg} at character {err.pos}); "
                    'write e.g. {"width": 64} or width=64,act=relu'
                ) from None
            if not isinstance(value, dict):
                raise UserModelError(f"{origin} must be a JSON object, got {value!r}")
        else:
            pairs: dict[str, Any] = {}
            for item in _split_top(text):
                key, equals, raw = item.partition("=")
                key = key.strip()
                if not equals or not key.isidentifier():
                    raise UserModelError(
                        f"{origin}: expected key=value pairs separated by commas (or a JSON "
                        f"object), got {item.strip()!r} in {value!r}; write e.g. width=64 or "
                        '{"width": 64}'
                    )
                if key in pairs:
                    raise UserModelError(f"{origin}: {key!r} is given twice in {value!r}")
                pairs[key] = _value(raw)
            value = pairs
    if not isinstance(value, Mapping):
        raise UserModelError(
            f"{origin} must be a table of named values, got {type(value).__name__}; write "
            "model_kwargs as a [model_kwargs] table with key = value lines"
        )
    for key in value:
        if not isinstance(key, str) or not key.isidentifier():
            raise UserModelError(
                f"{origin}: {key!r} is not a keyword argument name (a Python identifier)"
            )
    return {k: _check_json(v, k, origin) for k, v in value.items()}


# ----------------------------------------------------------------------------- static check


def _top_level_names(tree: ast.Module) -> tuple[dict[str, str], bool]:
    """Names bound at a module's top level (with what binds them), and whether a ``*`` import
    could bind more; ``if``/``try``/``with`` blocks at the top level count."""
    names: dict[str, str] = {}
    star = False
    statements: list[ast.stmt] = list(tree.body)
    while statements:
        node = statements.pop(0)
        if isinstance(node, ast.ClassDef):
            names[node.name] = "class"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = "function"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    star = True
                else:
                    names[alias.asname or alias.name.split(".")[0]] = "import"
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = "assignment"
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for block in ("body", "orelse", "finalbody", "handlers"):
                statements.extend(getattr(node, block, []) or [])
        elif isinstance(node, ast.ExceptHandler):
            statements.extend(node.body)
    return names, star


def _read_source(path: Path, origin: str) -> str:
    if not path.is_file():
        raise UserModelError(
            f"{origin}: {path} does not exist or is not a file; give the path of the .py file "
            "that defines the model"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserModelError(
            f"{origin}: {path} cannot be read as UTF-8 Python source ({err}); check the file"
        ) from None


def check_source(reference: ModelReference, origin: str = "--model") -> str:
    """What ``reference`` names, found by reading the source without running it.

    A file must exist, parse, and bind the name at its top level (a ``*`` import may bind it
    unseen); a module is not looked up, since finding a submodule imports its package.

    Returns:
        One line for display.

    Raises:
        UserModelError: the file is missing, does not parse, or does not bind the name.
    """
    if reference.kind == "module":
        path = _locate_module(reference.target)
        if path is None:
            return (
                f"{reference.name} from module {reference.target} (not found on the path "
                "without importing; the audit imports it)"
            )
    else:
        path = Path(reference.target)
    source = _read_source(path, origin)
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as err:
        raise UserModelError(
            f"{origin}: {path} line {err.lineno}: syntax error ({err.msg}); fix the file"
        ) from None
    names, star = _top_level_names(tree)
    head = reference.name.split(".")[0]
    if head in names:
        what = {"class": "class", "function": "function"}.get(names[head], names[head])
        return f"{path} defines {reference.name} ({what}; read, not run)"
    if star:
        return f"{path} may define {reference.name} through a * import (read, not run)"
    raise UserModelError(
        f"{origin}: {path} defines no {head!r} at its top level (read, not run); "
        f"{_known(n for n, kind in names.items() if kind in ('class', 'function'))}"
    )


def _locate_module(name: str) -> Path | None:
    """The source file of module ``name``, found through the path finders alone: no package's
    ``__init__`` runs (as ``importlib.util.find_spec`` would run it for a submodule). None when
    it is not a plain source file on the path (a compiled or zipped module, or one installed
    through an import hook)."""
    search: list[str] | None = [*sys.path, os.getcwd()]
    spec = None
    parts = name.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), search)
        if spec is None:
            return None
        locations = spec.submodule_search_locations
        search = None if locations is None else list(locations)
        if search is None and i < len(parts) - 1:
            return None
    origin = None if spec is None else spec.origin
    if origin is None or not origin.endswith(".py"):
        return None
    return Path(origin)


def _known(names: Any) -> str:
    public = sorted(n for n in names if not n.startswith("_"))
    if not public:
        return "it defines no class or function"
    shown = ", ".join(public[:8]) + (f", ... ({len(public)} in all)" if len(public) > 8 else "")
    return f"it defines {shown}"


# ---------------------------------------------------------------------------------- import


# sha256 of each file when this process first imported it: what ran, even if it changed since.
_IMPORTED_SHA256: dict[Path, str] = {}


def _sha256(path: Path) -> str:
    if path not in _IMPORTED_SHA256:
        _IMPORTED_SHA256[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _IMPORTED_SHA256[path]


def _where(err: BaseException, path: Path | None) -> str:
    """`` (at FILE line N)``: the deepest frame in the user's file, else the deepest outside
    this module and the import machinery; empty when there is none."""
    here = Path(__file__).resolve()
    frames = [
        f
        for f in traceback.extract_tb(err.__traceback__)
        if not f.filename.startswith("<") and Path(f.filename).resolve() != here
    ]
    if path is not None:
        own = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
        frames = own or frames
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {frame.filename} line {frame.lineno})"


def _module_name(path: Path) -> str:
    """The module name for a file: its stem, as when imported from its folder, unless that
    name is taken by another module (then a private one, so nothing imported is replaced)."""
    stem = path.stem
    taken = sys.modules.get(stem)
    if stem.isidentifier() and taken is None:
        return stem
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    safe = re.sub(r"\W", "_", stem)
    return f"_robaudit_model_{safe}_{digest}"


def _import_file(reference: ModelReference, origin: str) -> tuple[types.ModuleType, Path]:
    path = Path(reference.target)
    _read_source(path, origin)
    resolved = path.resolve()
    for module in list(sys.modules.values()):
        # Imported before (an earlier checkpoint of the same run, or a sibling import).
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == resolved:
            _sha256(resolved)
            return module, resolved
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = _module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UserModelError(f"{origin}: {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        del sys.modules[name]
        raise UserModelError(
            f"{origin}: {err.filename or path} line {err.lineno}: syntax error ({err.msg}); fix "
            "the file"
        ) from None
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code may raise anything
        del sys.modules[name]
        raise UserModelError(
            f"{origin}: importing {path} raised {error_summary(err)}{_where(err, resolved)}; "
            "fix the file (code that trains or exits belongs under if __name__ == '__main__':)"
        ) from None
    _IMPORTED_SHA256[resolved] = digest
    return module, resolved


def _import_module(reference: ModelReference, origin: str) -> tuple[types.ModuleType, Path | None]:
    # The commands take the current folder off sys.path (a folder there must not hide an
    # installed package); a module the user names is looked for there last.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(reference.target)
    except ModuleNotFoundError as err:
        parts = reference.target.split(".")
        own = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if err.name in own:
            raise UserModelError(
                f"{origin}: no module named {err.name!r} (looked in the current folder "
                f"{os.getcwd()} and on sys.path); run from the folder that holds it, set "
                "PYTHONPATH, or give the file as FILE.py:NAME"
            ) from None
        raise UserModelError(
            f"{origin}: importing {reference.target} raised "
            f"{error_summary(err)}{_where(err, None)}; "
            "install what it needs or fix the import"
        ) from None
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code may raise anything
        raise UserModelError(
            f"{origin}: importing {reference.target} raised "
            f"{error_summary(err)}{_where(err, None)}; "
            "fix the module"
        ) from None
    file = getattr(module, "__file__", None)
    return module, (Path(file).resolve() if file else None)


def build_user_model(
    reference: ModelReference, kwargs: Mapping[str, Any] | None = None, origin: str = "--model"
) -> tuple[nn.Module, ModelSource]:
    """Import the code, call NAME with ``kwargs`` and return the network and its source.

    Returns:
        ``(network, source)``: the module as built (fresh weights), and the document's record
        of where it came from (``core.document.ModelSource``): the reference, its kind, the
        file (or the module's file), the module's name, NAME, ``kwargs`` and the file's sha256
        (None for a module without one).

    Raises:
        UserModelError: missing file or module, a syntax error, an exception while importing,
            no such name, a name that is not callable, a call that raises or that returns
            something other than an ``nn.Module``.
    """
    kwargs = dict(kwargs or {})
    file: Path | None
    if reference.kind == "file":
        module, file = _import_file(reference, origin)
    else:
        module, file = _import_module(reference, origin)
    where = file if reference.kind == "file" else reference.target
    target: Any = module
    for i, part in enumerate(reference.name.split(".")):
        if not hasattr(target, part):
            inside = ".".join(reference.name.split(".")[:i]) or str(where)
            defined = (
                _known(
                    n
                    for n, v in vars(target).items()
                    if isinstance(v, type | types.FunctionType)
                    and getattr(v, "__module__", None) == module.__name__
                )
                if i == 0
                else ""
            )
            raise UserModelError(
                f"{origin}: {inside} has no {part!r}{'; ' + defined if defined else ''}; check the "
                "name after the colon"
            )
        target = getattr(target, part)
    if not callable(target):
        raise UserModelError(
            f"{origin}: {reference.name} in {where} is a value of type {type(target).__name__}, "
            "not a class or function; name the model's class or a function that returns the model"
        )
    call = f"{reference.name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        network = target(**kwargs)
    except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code may raise anything
        raise UserModelError(
            f"{origin}: {call} raised {error_summary(err)}{_where(err, file)}; fix the code or the "
            "keyword arguments (--model-kwargs, or model_kwargs in the sidecar)"
        ) from None
    if not isinstance(network, nn.Module):
        raise UserModelError(
            f"{origin}: {call} returned {type(network).__name__}, expected a torch.nn.Module "
            "(the network); name the model's class or a function that returns it"
        )
    source = ModelSource(
        reference=reference.text,
        kind=reference.kind,
        path=None if file is None else str(file),
        module=module.__name__ if reference.kind == "module" else None,
        name=reference.name,
        kwargs=as_read(kwargs),
        sha256=None if file is None or not file.is_file() else _sha256(file),
    )
    return network, source
