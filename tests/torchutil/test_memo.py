"""The resume memo's protocol and its two helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchutil import Memo, computed, rekeyed


def test_the_memo_that_keeps_nothing_computes_every_time() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return 7

    memo: Memo[str] = computed
    assert memo("probes", compute) == (7, False)
    assert memo("probes", compute) == (7, False)
    assert calls == [1, 1]


def test_a_rekeyed_memo_keeps_each_unit_under_its_new_key() -> None:
    kept: dict[str, Any] = {}

    def stored(key: str, compute: Callable[[], Any], /) -> tuple[Any, bool]:
        if key in kept:
            return kept[key], True
        kept[key] = compute()
        return kept[key], False

    by_number: Memo[int] = rekeyed(stored, lambda number: f"unit-{number}")
    assert by_number(1, lambda: "a") == ("a", False)
    assert by_number(1, lambda: "b") == ("a", True)
    assert by_number(2, lambda: "c") == ("c", False)
    assert kept == {"unit-1": "a", "unit-2": "c"}
