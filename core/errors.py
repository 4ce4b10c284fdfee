"""Errors as the toolkit reports them: bad input, and any error's message on one line."""

from __future__ import annotations

__all__ = ["InputError", "error_line", "one_line"]


class InputError(ValueError):
    """Bad input from the user (a file, a flag, a value): exit status 2, one line."""


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (newlines and runs of blanks collapsed)."""
    text = (
        str(error) if not isinstance(error, KeyError) else str(error.args[0] if error.args else "")
    )
    text = " ".join(text.split())
    if isinstance(error, BaseException) and not text:
        text = type(error).__name__
    return text


_TORCHSCRIPT_PREAMBLE = "The following operation failed in the TorchScript interpreter."


def error_line(message: BaseException | str) -> str:
    """The one line of an error's message that says what failed, for a warning or a finding.

    That is its first non-empty line (a library's message goes on with details, hints or a
    traceback), with one exception: an error raised inside TorchScript's interpreter begins
    with a line saying only that, then its own traceback, and ends with the original error
    (``builtins.RuntimeError: ...``), which is taken instead. A ``Type: `` prefix before the
    preamble (as ``attacks.shards`` records errors) is dropped with it. Blanks collapse as in
    :func:`one_line`.
    """
    text = str(message) if not isinstance(message, KeyError) else one_line(message)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return one_line(message)
    line = lines[0]
    if _TORCHSCRIPT_PREAMBLE in line and len(lines) > 1:
        line = lines[-1].strip().removeprefix("builtins.")
    return one_line(line)
