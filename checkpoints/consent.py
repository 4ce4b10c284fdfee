"""Files that are code: TorchScript and other program archives, and pickles of Python objects.

Nothing from a file runs without consent: every ``torch.load`` uses ``weights_only=True``. A
file that holds pickled Python objects (a whole ``nn.Module``, a payload) or a TorchScript
archive is refused with the remedy named, and loads only with ``trust=True``
(``--trust-checkpoint``); torch.export and torch.package archives, programs too, are refused
even then. What a pickle would build is found by reading its opcodes, never by running it.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from checkpoints.checkfile import CheckpointError, error_summary, open_checkpoint
from core.boundary import check_archive

# ------------------------------------------------------------------------ files that are code

# Archives that are programs rather than weights, by the records that mark them (paths inside
# the archive after its top folder, as torch's own reader names them).
_PROGRAMS = {
    "torchscript": "a TorchScript archive",
    "torch.export": "a torch.export archive (.pt2)",
    "torch.package": "a torch.package archive",
}


def _archive_records(path: Path) -> list[str] | None:
    """The archive's entry names without their top folder, or None for a non-zip file.

    Raises:
        CheckpointError: an entry declares more than the file can hold (see
            ``core.boundary.check_archive``).
    """
    with open_checkpoint(path) as handle:
        # Unreadable for zipfile (None): torch.load (weights only) judges it and refuses it.
        members = check_archive(handle, path, "checkpoint", CheckpointError)
    if members is None:
        return None
    names = [member.filename for member in members]
    return [name.split("/", 1)[1] if "/" in name else name for name in names]


def code_archive_kind(path: str | Path) -> str | None:
    """``torchscript``, ``torch.export`` or ``torch.package`` when the file is such an archive
    (code, not just weights), else None. Reads the zip listing only."""
    records = _archive_records(Path(path))
    if records is None:
        return None
    if "constants.pkl" in records or any(r.startswith("code/") for r in records):
        return "torchscript"
    if (
        "archive_format" in records
        or "serialized_exported_program.json" in records
        or any(r.startswith("models/") and r.endswith(".json") for r in records)
    ):
        return "torch.export"
    if ".data/extern_modules" in records or any(r.endswith(".py") for r in records):
        return "torch.package"
    return None


# The route for a class of the user's own, named wherever a file cannot load as it is.
_OWN_CLASS = (
    "save model.state_dict() (torch.save(model.state_dict(), FILE)) and pass --model "
    "yourfile.py:YourClass (or --arch for a registered architecture) with --dataset"
)


def torchscript_refused(path: Path) -> str:
    return (
        f"{path} is a TorchScript archive, which is code: it runs when the file is loaded and on "
        "every forward pass of the audit, and it can read and write files. Pass "
        f"--trust-checkpoint if you trust its source, or {_OWN_CLASS}"
    )


def program_unsupported(path: Path, kind: str) -> str:
    return (
        f"{path} is {_PROGRAMS[kind]}, a program rather than weights, and this toolkit does not "
        f"load programs of that kind (not even with --trust-checkpoint); {_OWN_CLASS}"
    )


class PickledObjectsError(CheckpointError):
    """The file unpickles Python objects (code); ``detail`` names the first one refused."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def _not_readable(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({error_summary(err)}); expected a file "
        "written by torch.save (a state_dict, a Lightning .ckpt or a file of ours): re-save it, "
        "or check that the file is complete"
    )


# Pickle opcodes that push a string, which STACK_GLOBAL then takes as a module and a name.
_STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH = frozenset({"PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK"})
# At most this many opcodes are read when looking for the objects a pickle would build.
_SCAN_OPCODES = 1_000_000


def _tensor_globals() -> frozenset[str]:
    """The globals torch.load(weights_only=True) builds: tensors, storages and plain
    containers, none of which runs code of the file's choosing."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return frozenset(_get_allowed_globals())
    except (ImportError, AttributeError):  # a private helper; without it, every global counts
        return frozenset()


def _globals_of(stream: IO[bytes]) -> Iterator[tuple[str, int]]:
    """The globals (``module.name``) one pickle names and the protocol of each opcode, read
    with ``pickletools`` (opcodes only: nothing is built, imported or run).

    ``STACK_GLOBAL`` takes its module and name from the stack: the last two values pushed are
    followed (strings, and strings fetched from the memo; anything else pushed counts as not a
    string)."""
    recent: list[str | None] = []  # the values last pushed, where they are strings
    memo: dict[int, str | None] = {}
    for count, (opcode, argument, _) in enumerate(pickletools.genops(stream)):
        if count >= _SCAN_OPCODES:
            return
        name = opcode.name
        found = ""
        if name in _STRING_OPCODES:
            recent.append(str(argument))
        elif name in _MEMO_GETS:
            recent.append(memo.get(int(str(argument))))
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in _MEMO_PUTS:
            memo[int(str(argument))] = recent[-1] if recent else None
        elif name not in _NO_PUSH:
            if name in ("GLOBAL", "INST"):
                found = str(argument).replace(" ", ".", 1)
            elif name == "STACK_GLOBAL":
                module, member = ([None, None] + recent)[-2:]
                found = f"{module or '?'}.{member or '?'}"
            recent.append(None)
        yield found, opcode.proto
        del recent[:-2]


def _pickle_contents(path: Path) -> tuple[str | None, int]:
    """The first global a pickled checkpoint names that torch.load(weights_only=True) would
    not build (None if there is none), and the highest pickle protocol of its opcodes.

    The pickle is the archive's ``data.pkl`` for a zip checkpoint, else the pickles at the
    start of the file (torch's legacy format writes a few small ones before its data; a plain
    ``pickle.dump`` writes one).
    """
    allowed = _tensor_globals()
    first: str | None = None
    protocol = 0

    def scan(stream: IO[bytes]) -> bool:
        """Scan one pickle; False once nothing more can be read."""
        nonlocal first, protocol
        try:
            for name, proto in _globals_of(stream):
                protocol = max(protocol, proto)
                if name and first is None and name not in allowed:
                    first = name
                    return False
        except Exception:  # noqa: BLE001 - the end of the pickles, or damage: what was read stands
            return False
        return True

    with open_checkpoint(path) as handle:
        try:
            archive = zipfile.ZipFile(handle)
        except Exception:  # noqa: BLE001 - not a readable zip: the file itself holds the pickles
            archive = None
        if archive is None:
            handle.seek(0)  # zipfile looked for a directory at the end
            for _ in range(5):  # torch's legacy format: 4 small pickles, then the data's
                if not scan(handle):
                    break
            return first, protocol
        with archive:
            data = [n for n in archive.namelist() if n.split("/")[-1] == "data.pkl"]
            if data:
                try:
                    with archive.open(data[0]) as stream:
                        scan(stream)
                except Exception:  # noqa: BLE001 - a damaged member: nothing found in it
                    pass
    return first, protocol


def _pickled_objects(path: Path, name: str) -> PickledObjectsError:
    detail = f"it would build {name}"
    advice = _resave_advice(name)
    return PickledObjectsError(
        f"{path} holds pickled Python objects, not just tensors ({detail}); nothing from it "
        f"ran, since unpickling it could run arbitrary code. {advice[0].upper()}{advice[1:]}, "
        "or pass --trust-checkpoint if you trust its source",
        detail,
    )


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    """torch.load of the checked file on the CPU, without torch's warnings about the pickle
    protocol (the failure, if any, is reported in one line instead)."""
    with open_checkpoint(path) as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(handle, map_location="cpu", weights_only=weights_only)


def read_raw(path: Path, trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` on the CPU; refuse pickled code unless trusted.

    Raises:
        CheckpointError: for anything but a readable weights-only file (or, with ``trust``, a
            readable pickle); :class:`PickledObjectsError` when it holds Python objects.
    """
    path = Path(path)
    try:
        return _torch_load(path, weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        name, protocol = (found.group(1), 0) if found else _pickle_contents(path)
        # torch's weights-only reader stops at the opcodes of pickle protocols above 2.
        newer_protocol = protocol > 2 and "Unsupported operand" in str(err)
        if name is None and not newer_protocol:
            raise _not_readable(path, err) from None
        if trust:
            return _read_unrestricted(path, name)
        if name is None:
            raise CheckpointError(
                f"{path} is a pickle of protocol {protocol}, which torch.load(weights_only=True) "
                "cannot read (it reads protocol 2, torch.save's default); nothing from it ran. "
                "Re-save it with torch.save(model.state_dict(), FILE), or pass "
                "--trust-checkpoint if you trust its source"
            ) from None
        raise _pickled_objects(path, name) from None
    except Exception as err:
        # torch.load on damaged bytes raises whatever its parsers meet (RuntimeError, EOFError,
        # IndexError, UnicodeDecodeError, ...); each means the same thing to the user.
        if code_archive_kind(path) == "torchscript":  # told by its zip listing, not the error
            raise CheckpointError(torchscript_refused(path)) from None
        raise _not_readable(path, err) from None


def _resave_advice(global_name: str | None) -> str:
    """How to re-save a file of pickled objects: for a whole model of the user's own class,
    its state_dict and ``--model`` with that class."""
    module, _, name = (global_name or "").rpartition(".")
    # Not a model class: torch's and the standard library's (a payload calls os.system).
    ordinary = ("torch", "collections", "builtins", "numpy", "os", "posix", "nt", "subprocess")
    if not name or module.split(".")[0] in ordinary:
        return (
            "re-save it as a state_dict (torch.save(model.state_dict(), FILE)); for a class of "
            "your own, pass --model yourfile.py:YourClass"
        )
    file = "yourfile.py" if module == "__main__" else f"{module.replace('.', '/')}.py"
    return (
        f"for a model of your own class {name}, save model.state_dict() "
        f"(torch.save(model.state_dict(), FILE)) and pass --model {file}:{name} (the file that "
        f"defines {name})"
    )


def _read_unrestricted(path: Path, global_name: str | None) -> Any:
    try:
        return _torch_load(path, weights_only=False)
    except CheckpointError:
        raise
    except Exception as err:
        # A trusted pickle runs its own code while loading; whatever it raises is its failure.
        hint = (
            f"the class {global_name} it was saved with cannot be found here; "
            if global_name is not None and isinstance(err, ModuleNotFoundError | AttributeError)
            else "expected a file written by torch.save; "
        )
        raise CheckpointError(
            f"{path}: unpickling the trusted file failed ({error_summary(err)}); {hint}"
            f"{_resave_advice(global_name)}"
        ) from None
