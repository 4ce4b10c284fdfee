"""The toolkit's command-line boundary (``checkpoints/boundary.py``) for the report commands:
the same one-line errors and exit statuses as every other command. It is pure standard
library, and ``checkpoints`` loads torch only when its model names are first used, so the
report commands run where torch is not installed."""

from __future__ import annotations

from checkpoints.boundary import (
    EXIT_INPUT,
    EXIT_OK,
    InputError,
    OneLineParser,
    check_writable,
    one_line,
    run_command,
)

__all__ = [
    "EXIT_INPUT",
    "EXIT_OK",
    "InputError",
    "OneLineParser",
    "check_writable",
    "one_line",
    "run_command",
]
