"""The ``--tables`` flag of the commands that write an audit's report (``audit``, ``report``)."""

from __future__ import annotations

import argparse

__all__ = ["add_tables_argument"]


def add_tables_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--tables FORMATS`` (read with ``reports.tables.parse_formats``)."""
    parser.add_argument(
        "--tables", help="also write every table of the report beside it: csv, md or csv,md"
    )
