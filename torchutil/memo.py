"""The resume memo: how the attacks, flatness and the audit keep a finished unit of work.

A memo is a callable ``memo(key, compute) -> (value, loaded)``: the value kept under ``key``
(``loaded`` True), else ``compute()``, kept for a later run (``loaded`` False). Each caller
keys its units its own way: the attack suite by a stage's name (``Memo[str]``), `flatness`'s
``measure`` by its ``flatness.Unit`` (``Memo[Unit]``); `rekeyed` turns one into the other.
What the units of an audit are, their names and where they are kept is said in
``analysis.resume``, whose ``UnitCache.memo`` is the audit's memo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["Memo", "computed", "rekeyed"]

K = TypeVar("K", contravariant=True)
J = TypeVar("J")
L = TypeVar("L")
T = TypeVar("T")


class Memo(Protocol[K]):
    """``memo(key, compute) -> (value, loaded)``: the value kept under ``key``, else
    ``compute()``, kept for a later run; and whether it was loaded."""

    def __call__(self, key: K, compute: Callable[[], T], /) -> tuple[T, bool]: ...


def computed(key: object, compute: Callable[[], T], /) -> tuple[T, bool]:
    """The memo that keeps nothing: ``compute()``, never loaded."""
    return compute(), False


def rekeyed(memo: Memo[J], key: Callable[[L], J]) -> Memo[L]:
    """``memo`` under other keys: a unit ``unit`` is kept under ``key(unit)``."""

    def kept(unit: L, compute: Callable[[], T], /) -> tuple[T, bool]:
        return memo(key(unit), compute)

    return kept
