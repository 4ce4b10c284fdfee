"""The result document's reader, the HTML report, its tables and plots (no torch)."""

import os
import sys


def _drop_current_folder() -> None:
    """Take the current folder off sys.path while `python -m` locates a command of this package.

    `python -m PACKAGE.COMMAND` puts the current folder first on sys.path, where a folder
    named like one of the toolkit's packages (a `checkpoints/` of model files, a user's own
    `reports` package) would be imported instead of it. The commands import nothing from the
    current folder (their console scripts never have it on sys.path), so it goes, as with
    `python -P`; sys.argv[0] is "-m" until the module is found. analysis/__init__.py,
    checkpoints/__init__.py and reports/__init__.py hold this same function: nothing of the
    toolkit can be imported safely before it has run.
    """
    if sys.argv[:1] != ["-m"] or not any(arg.startswith(f"{__name__}.") for arg in sys.orig_argv):
        return
    here = os.getcwd()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if sys.path[:1] == [here] and os.path.realpath(here) != os.path.realpath(root):
        del sys.path[0]


_drop_current_folder()
