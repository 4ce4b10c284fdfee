"""The command boundary (``core.boundary``).

The atomic writer's temporary files: one left by a writer killed before its rename is removed,
one still being written is not, and nothing else is.

Bounded input: every file is a regular file within the limit of its kind, JSON and TOML nest
no deeper than their kind allows (refused before the parser recurses), and archives declare no
more than they can hold. Checked output: an output path is tried before work, and an error
while writing it is one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import boundary, inputs, outputs
from core.boundary import (
    DEFLATE_MAX_RATIO,
    INPUT_LIMITS,
    TEMPORARY_NAME,
    InputError,
    InputLimit,
    atomic_write_bytes,
    check_archive,
    check_writable,
    load_json,
    load_toml,
    open_input,
    read_input,
    remove_stale_temporaries,
    writing,
)

ROOT = Path(__file__).resolve().parents[2]

# A writer that stops for good just before its rename, as a SIGKILL at that instant leaves it.
_STOPPED_WRITER = """
import sys, time
from pathlib import Path
from core import outputs

def stop(source, target):
    print("written", flush=True)
    time.sleep(300)

outputs.os.replace = stop
outputs.atomic_write_bytes(Path(sys.argv[1]), b"x" * 100_000)
"""


def test_a_writer_killed_before_its_rename_leaves_a_temporary_file_that_is_removed(tmp_path):
    target = tmp_path / "audit.json"
    alike = ["notes.tmp", ".audit.json.tmp", ".audit.json.ABCDEFGH.tmp", "audit.json.abcd1234.tmp"]
    for name in alike:
        (tmp_path / name).write_text("not ours")
    process = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_WRITER, str(target)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "written\n"
        (temporary,) = [p for p in tmp_path.iterdir() if p.name not in alike]
        assert TEMPORARY_NAME.fullmatch(temporary.name)
        assert temporary.stat().st_size == 100_000
        # Its writer is alive: it holds the file's lock, so the file is left alone.
        assert remove_stale_temporaries(tmp_path) == []
        assert temporary.exists()
    finally:
        process.kill()
        process.wait(timeout=60)
    assert remove_stale_temporaries(tmp_path) == [temporary]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(alike)
    assert not target.exists()


def test_a_temporary_file_removed_before_its_lock_is_written_again(tmp_path, monkeypatch):
    """The one instant a live writer's file can be taken for a stale one is between its
    creation and its lock; the writer then writes it again."""
    real_mkstemp = tempfile.mkstemp
    created: list[str] = []

    def mkstemp_then_removed(**kwargs):
        handle, name = real_mkstemp(**kwargs)
        created.append(name)
        if len(created) == 1:
            Path(name).unlink()  # as remove_stale_temporaries would, before the lock
        return handle, name

    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp_then_removed)
    atomic_write_bytes(tmp_path / "unit.pt", b"value")
    assert len(created) == 2
    assert (tmp_path / "unit.pt").read_bytes() == b"value"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit.pt"]


TINY = InputLimit(
    "test file",
    "a small test file",
    100,
    "a test file is small",
    max_depth=3,
    depth_reason="tests nest 3 deep",
)


def _depth(value: object) -> int:
    """How deep lists and dicts nest (the top counts 1): the oracle for the scan."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# ------------------------------------------------------------------------------- the limits


def test_every_kind_states_its_limits_and_why():
    for key, limit in INPUT_LIMITS.items():
        assert limit.max_bytes > 0 and len(limit.reason) > 20, key
        if key in ("suite", "description", "result", "manifest"):
            assert limit.max_depth is not None and limit.depth_reason, key


def test_real_files_are_far_below_their_limits():
    """The zoo's manifest and its result documents are read, and nest as deep as said."""
    from checkpoints.train import MANIFEST, ZOO_DIR

    manifest = load_json(ZOO_DIR / MANIFEST, "manifest")
    assert _depth(manifest) == 4 < INPUT_LIMITS["manifest"].max_depth  # type: ignore[operator]
    for checkpoint in ZOO_DIR.glob("*.pt"):
        assert checkpoint.stat().st_size < INPUT_LIMITS["checkpoint"].max_bytes / 1000


# ---------------------------------------------------------------------------- regular files


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: os.mkfifo(p), r"not a regular file but a FIFO \(named pipe\)"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: None, "does not exist"),
    ],
    ids=["fifo", "folder", "missing"],
)
def test_only_regular_files_are_opened(tmp_path, make, words):
    path = tmp_path / "input"
    make(path)
    with pytest.raises(InputError, match=words) as info:
        open_input(path, TINY)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_character_device_is_never_read():
    with pytest.raises(InputError, match="not a regular file but a character device"):
        read_input("/dev/zero", TINY)


def test_the_size_limit_is_exact(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_input(path, TINY) == b"x" * 100
    path.write_bytes(b"x" * 101)
    with pytest.raises(InputError, match=r"holds 101 bytes, more than a test file can: at most"):
        read_input(path, TINY)


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path):
    """A result file one byte over its 512 MiB limit (sparse: nothing is on disk) is refused
    from its size alone, in a subprocess whose peak memory stays far below the file."""
    path = tmp_path / "audit.json"
    with open(path, "wb") as handle:
        handle.truncate(INPUT_LIMITS["result"].max_bytes + 1)
    script = (
        "import resource, sys\n"
        "from core.boundary import load_json\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    load_json(sys.argv[1], 'result')\n"
        "except ValueError as err:\n"
        "    print(err)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    message, grown_kib = done.stdout.strip().splitlines()
    assert "more than a result file can: at most 512 MiB" in message, done.stderr
    assert int(grown_kib) < 16 * 1024  # KiB: nothing like the file's 512 MiB was read


# ----------------------------------------------------------------------------- JSON nesting


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(alphabet='[]{}"\\ab,:\n', max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_VALUES)
def test_the_json_scan_counts_what_the_parser_would_nest(value):
    """Brackets inside strings (escaped quotes and backslashes too) are not nesting: the scan
    agrees with the depth of the parsed value."""
    text = json.dumps(value).encode()
    assert inputs._bracket_depth(text, inputs._JSON_STRINGS) == _depth(value)


def test_deep_json_is_refused_before_the_parser_runs(tmp_path, monkeypatch):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)

    def parse(*args, **kwargs):
        raise AssertionError("the parser saw a text nested too deeply")

    monkeypatch.setattr(inputs.json, "loads", parse)
    with pytest.raises(InputError, match="nests arrays and tables 100000 deep, too deeply"):
        load_json(path, "result")


def test_json_at_the_depth_limit_is_read_and_past_it_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('[[{"a": "[[[[[["}]]')
    assert load_json(path, TINY) == [[{"a": "[[[[[["}]]
    path.write_text('[[[{"a": 1}]]]')
    with pytest.raises(InputError, match="4 deep, too deeply for a test file: at most 3"):
        load_json(path, TINY)


def test_json_syntax_and_encoding_errors_are_one_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": \n')
    with pytest.raises(InputError, match="is not valid JSON: Expecting value: line 2"):
        load_json(path, TINY)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InputError, match="is not UTF-8 text"):
        load_json(path, TINY)


# ----------------------------------------------------------------------------- TOML nesting


@pytest.mark.parametrize(
    ("text", "depth", "brackets"),
    [
        ("a = 1\n", 1, 0),
        ("a = [1, [2]]\n", 3, 2),
        ("[t]\nb = {c = [1]}\n", 4, 2),
        ("[[t]]\nb = 1\n[[t]]\nb = 2\n", 3, 2),
        ('s = "[[[[[[[[ \\" [[[["\n', 1, 0),
        ("s = '[[[[[[[['\n", 1, 0),
        ('s = """\n[[[[[[\n""""\n', 1, 0),
        ('s = """a\\"""[[[[[["""\n', 1, 0),
        ("s = '''[[[[[\n[[[['''''\n", 1, 0),
        ("# [[[[[[[[[[\na = 1 # {{{{{{{{\n", 1, 0),
        ('"[[[[" = [1]\n', 2, 1),
    ],
)
def test_the_toml_scan_skips_strings_and_comments(tmp_path, text, depth, brackets):
    """Brackets in every kind of TOML string and in comments are not nesting (the parsed
    value, the oracle, says how deep the text nests; the top table has no bracket)."""
    assert _depth(tomllib.loads(text)) == depth
    assert inputs._bracket_depth(text.encode(), inputs._TOML_SKIPPED) == brackets
    path = tmp_path / "x.toml"
    path.write_text(text)
    assert load_toml(path, INPUT_LIMITS["suite"]) == tomllib.loads(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "nests arrays and tables 100000 deep"),
        ("a = " + "{b = " * 50_000 + "1" + "}" * 50_000 + "\n", "arrays and tables 50000 deep"),
        ("a" + ".a" * 100_000 + " = 1\n", "a dotted key of 100001 parts"),
        ('"a"' + '."a"' * 100_000 + " = 1\n", "a dotted key of 100001 parts"),
        ("[" + ".".join(["t"] * 50) + "]\nx = 1\n", "a dotted key of 50 parts"),
        ("[" + ".".join(["t"] * 9) + "]\n" + ".".join(["k"] * 9) + " = 1\n", "18 deep"),
    ],
    ids=["arrays", "inline-tables", "dotted-key", "quoted-dotted-key", "header", "header-and-key"],
)
def test_deep_toml_is_refused_before_the_parser_runs(tmp_path, monkeypatch, text, words):
    """Nested arrays and inline tables would make tomllib recurse, and a dotted key of many
    parts costs it time and memory growing with the square of the parts (100,000 parts
    exhaust gigabytes); only a header and a key that together nest deeply are parsed first."""
    path = tmp_path / "deep.toml"
    path.write_text(text)
    if "18 deep" not in words:

        def parse(*args, **kwargs):
            raise AssertionError("tomllib saw a text nested too deeply")

        monkeypatch.setattr(inputs.tomllib, "loads", parse)
    with pytest.raises(InputError, match=rf"{words}.*too deeply for a suite file: at most 16"):
        load_toml(path, "suite")


# ---------------------------------------------------------------------------------- archives


def _lying_zip(path: Path, claimed: int) -> None:
    """A zip whose one deflated member says (in both headers) it inflates to ``claimed``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", b"\0" * 1000)
    data = bytearray(path.read_bytes())
    real = (1000).to_bytes(4, "little")
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    assert data[local + 22 : local + 26] == real and data[central + 24 : central + 28] == real
    data[local + 22 : local + 26] = claimed.to_bytes(4, "little")
    data[central + 24 : central + 28] = claimed.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_a_member_that_claims_more_than_deflate_can_hold_is_refused(tmp_path):
    path = tmp_path / "bomb.npz"
    _lying_zip(path, 4_000_000_000)
    compressed = zipfile.ZipFile(path).getinfo("x.npy").compress_size
    most = boundary.size_text(compressed * DEFLATE_MAX_RATIO)
    with open(path, "rb") as handle, pytest.raises(InputError) as info:
        check_archive(handle, path, "dataset")
    assert f"member 'x.npy' declares 3.73 GiB but holds {compressed} bytes compressed" in str(
        info.value
    )
    assert f"which cannot inflate to more than {most}; the file is damaged or crafted" in str(
        info.value
    )
    # An honest archive passes, and a file that is no zip is left to its reader.
    fine = tmp_path / "fine.npz"
    _lying_zip(fine, 1000)
    with open(fine, "rb") as handle:
        assert [m.filename for m in check_archive(handle, fine, "dataset") or []] == ["x.npy"]
    (tmp_path / "plain").write_bytes(b"not a zip")
    with open(tmp_path / "plain", "rb") as handle:
        assert check_archive(handle, tmp_path / "plain", "dataset") is None


# ------------------------------------------------------------------------------ output paths


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("target", "folder", "words"),
    [
        (Path("/proc/robaudit-test/out"), True, "cannot be written in /proc"),
        (Path("/proc/robaudit-test.xml"), False, "cannot be written in /proc"),
        (Path("/sys/robaudit-test/out"), True, "cannot be written in /sys"),
        (Path("/dev/full"), False, "exists and is a character device, not a regular file"),
    ],
)
def test_places_root_cannot_write_are_refused_before_work(target, folder, words):
    """Permissions say yes to root here (tests run as root); trying says no."""
    if not Path("/", target.parts[1]).exists():
        pytest.skip(f"no /{target.parts[1]} on this machine")
    with pytest.raises(InputError, match=words) as info:
        check_writable(target, "--flag", folder=folder)
    assert "--flag" in str(info.value) and "\n" not in str(info.value)


def test_a_fifo_is_no_output_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.xml")
    with pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a regular file"):
        check_writable(tmp_path / "pipe.xml", "--junit")


def test_the_probe_leaves_nothing_and_creates_no_folder(tmp_path):
    check_writable(tmp_path / "a" / "b" / "out", "--out", folder=True)
    check_writable(tmp_path / "c" / "gate.xml", "--junit")
    (tmp_path / "old.json").write_text("{}")
    check_writable(tmp_path / "old.json", "--baseline")
    assert _leftovers(tmp_path) == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "{}"


def test_an_immutable_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
        pytest.skip("this file system has no immutable attribute (chattr +i)")
    try:
        with pytest.raises(InputError, match="Operation not permitted; the file or folder is"):
            check_writable(folder / "out", "--out", folder=True)
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)
    assert _leftovers(folder) == []


def test_an_error_while_writing_names_the_path_the_flag_and_the_fix(tmp_path, monkeypatch):
    """A full disk fails at the write with no path in the error; the line adds it."""

    def full(handle: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", full)
    target = tmp_path / "gate.xml"
    with pytest.raises(InputError) as info, writing(target, "--junit"):
        boundary.atomic_write_text(target, "<testsuite/>")
    assert str(info.value) == (
        f"--junit {target} cannot be written: No space left on device; free space on that "
        "disk, or choose a folder on another disk"
    )
    assert _leftovers(tmp_path) == []  # neither the file nor its temporary


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("RuntimeError: shape mismatch\n  at layer 3\n  hint: ...", "RuntimeError: shape mismatch"),
        (
            "\n\n  CUDA out of memory.   Tried to allocate 2 GiB\n",
            "CUDA out of memory. Tried to allocate 2 GiB",
        ),
        (
            "Error: The following operation failed in the TorchScript interpreter.\n"
            "Traceback of TorchScript (most recent call last):\n"
            '  File "m.py", line 6, in forward\n'
            "            raise RuntimeError('input out of range')\n"
            "            ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~ <--- HERE\n"
            "builtins.RuntimeError: input out of range\n",
            "RuntimeError: input out of range",
        ),
        ("", ""),
    ],
)
def test_an_error_is_named_by_the_line_that_says_what_failed(message, line):
    assert boundary.error_line(message) == line
