"""Splitting wide tables for the page: what cannot wrap, and how columns are shared out."""

from __future__ import annotations

import pytest

from reports.layout import captions, parts, split_value, unbreakable


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.281 [0.240, 0.325]", ("0.281", "[0.240, 0.325]")),
        ("0.500 [0.393, 0.607] ⇑", ("0.500", "[0.393, 0.607] ⇑")),
        ("110.5 ± 6.4", ("110.5", "± 6.4")),
        ("1751 ± 1.7e+03", ("1751", "± 1.7e+03")),
        ("n/a", ("n/a", "")),
        (
            "suspected gradient masking (4 red flags)",
            ("suspected gradient masking (4 red flags)", ""),
        ),
        ("12 of 61 attacked", ("12 of 61 attacked", "")),
    ],
)
def test_a_value_and_its_interval_are_told_apart(text, expected) -> None:
    assert split_value(text) == expected


@pytest.mark.parametrize(
    "text, width",
    [
        ("digits-mlp-normout-spatiotemporal-ce", len("spatiotemporal-")),
        ("0.281 [0.240, 0.325]", len("[0.240, 0.325]")),
        ("110.5 ± 6.4", len("110.5")),
        ("1e-05", 5),  # a hyphen before a digit is a minus sign, not a break
        ("suspected gradient masking (4 red flags)", len("suspected")),
        ("", 0),
    ],
)
def test_the_widest_piece_that_cannot_wrap(text, width) -> None:
    assert unbreakable(text) == width


def test_a_table_that_fits_is_one_part() -> None:
    assert parts([10, 20, 30], budget=60) == [[0, 1, 2]]
    assert parts([], budget=60) == [[]]


def test_groups_stay_together_where_they_fit() -> None:
    widths = [10, 10, 10, 10, 10]
    assert parts(widths, ["a", "b", "b", "c", "c"], budget=30) == [[0, 1, 2], [3, 4]]
    assert parts(widths, ["a", "a", "b", "b", "b"], budget=30) == [[0, 1], [2, 3, 4]]


def test_a_group_too_wide_is_split_into_even_parts() -> None:
    assert parts([10] * 5, ["a"] * 5, budget=25) == [[0, 1], [2, 3], [4]]
    assert parts([9] * 10, ["a"] * 10, budget=45) == [list(range(5)), list(range(5, 10))]
    # 7 columns of 9 in parts of 30: 3 + 2 + 2, where filling greedily gives 3 + 3 + 1
    assert parts([9] * 7, ["a"] * 7, budget=30) == [[0, 1, 2], [3, 4], [5, 6]]


def test_columns_without_a_group_fill_parts_in_order() -> None:
    assert parts([10, 10, 10], ["", "", ""], budget=25) == [[0, 1], [2]]
    assert parts([40, 10], budget=25) == [[0], [1]]  # wider than the page: a part of its own


def test_every_part_fits_and_every_column_is_placed_once() -> None:
    widths = [16, 5, 16, 16, 16, 7, 10, 8, 9, 7, 5, 16, 16, 16]
    groups = ["s", "L∞", "L∞", "L∞", "L∞", "s", "s", "s", "s", "s", "L2", "L2", "L2", "L2"]
    split = parts(widths, groups, budget=60)
    assert sorted(i for part in split for i in part) == list(range(len(widths)))
    assert all(sum(widths[i] for i in part) <= 60 for part in split)
    assert all(part == sorted(part) for part in split)


def test_parts_are_named_by_their_group() -> None:
    assert captions("Robust accuracy", [[0, 1]], ["L∞", "L2"]) == ["Robust accuracy"]
    assert captions("Robust accuracy", [[0, 1], [2, 3], [4]], ["L∞"] * 4 + ["L2"]) == [
        "Robust accuracy: L∞",
        "Robust accuracy: L∞ (continued)",
        "Robust accuracy: L2",
    ]
    assert captions("Verdicts", [[0, 1], [2]], ["", "L∞", "L∞"]) == [
        "Verdicts",
        "Verdicts: L∞",
    ]
    assert captions("Attacks", [[0, 1], [2, 3]], ["", "", "", ""]) == [
        "Attacks",
        "Attacks, continued",
    ]
