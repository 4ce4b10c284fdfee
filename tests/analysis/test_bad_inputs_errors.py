"""Internal errors and interrupts: status 3 or 130 and one line, the traceback only with
``--verbose``, and no result written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bad_input_builders import ZOO, _audit

from analysis import pipeline
from commands import audit
from core.boundary import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    atomic_write_text,
    run_command,
)
from core.document import DocumentError


def test_an_internal_error_is_status_3_and_one_line(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("an unexpected failure")

    monkeypatch.setattr(audit, "run_audit", broken)
    assert audit.main(_audit()(tmp_path)) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error: RuntimeError")
    assert not (tmp_path / "out" / ZOO.stem).exists()


def test_a_result_that_does_not_read_back_is_an_internal_error(monkeypatch, tmp_path, capsys):
    """The audit's own document refused by the reader is a bug here, not bad input."""

    def refuse(result, source):
        raise DocumentError(f"{source}: clean_correct should be 20 bits, got 19")

    monkeypatch.setattr(pipeline.AuditResult, "checked", refuse)
    assert audit.main(_audit()(tmp_path)) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error: RuntimeError")
    assert "does not read back" in err


def test_verbose_adds_the_traceback(capsys, tmp_path):
    assert audit.main(_audit("--num-samples", "0", "--verbose")(tmp_path)) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: --num-samples")


def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    """A real SIGINT during an audit: one line, status 130, no result file."""
    process = subprocess.Popen(
        [sys.executable, "-m", "analysis.audit", str(ZOO), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(audit.__file__).resolve().parents[1],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A test run started in the background inherits SIGINT ignored, and so would the
        # audit: give it the default disposition, as a terminal does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    started = time.time()
    # Wait for the attacks' progress bar: the audit is working. The bar redraws with carriage
    # returns and ends its line only when the stage is over, so read characters, not lines.
    line = ""
    while "attacks" not in line:
        char = process.stderr.read(1)
        assert char, f"the audit printed no progress: {line!r}"
        line += char
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert time.time() - started < 120
    assert process.returncode == EXIT_INTERRUPTED, (line, rest)
    # A message may follow the bar on its line: the bar's redraws end with a carriage return.
    shown = rest.replace("\r", "\n").splitlines()
    lines = [x for x in shown if x.startswith(("interrupted", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), (line, rest)
    assert not (tmp_path / "out" / ZOO.stem / "audit.json").exists()


def test_a_swallowed_interrupt_still_stops_the_command(tmp_path):
    """A KeyboardInterrupt that a library or a finaliser swallows still ends the command with
    status 130, and the result it was about to write is not written."""
    target = tmp_path / "audit.json"
    # As in a terminal, whatever the test run inherited (a background job ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here
        except KeyboardInterrupt:
            pass  # swallowed, as some libraries do
        atomic_write_text(target, "{}")
        return 0

    try:
        assert run_command(body, verbose=False) == EXIT_INTERRUPTED
        assert not target.exists() and not list(tmp_path.iterdir())
        # The handler is the previous one again afterwards.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
