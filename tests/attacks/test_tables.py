"""The per-sample tables of a result: each declared once, and the operations over them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from attacks import AttackSpec, Norm, pgd, pgd_targeted
from attacks.outcomes import outcome_of
from attacks.result import PER_SAMPLE_TABLES, AttackResult
from attacks.shards import concatenate
from attacks.suite import AttackOutcome
from attacks.tables import (
    CLEAN_INPUT,
    Field,
    at,
    cat,
    empty,
    inherit,
    masked,
    scatter,
    tables_of,
    take,
)

K, N = 2, 5
FIELDS = (
    Field("flag", fill=False, kind="bool", inherited=True, unattacked="outcome"),
    Field("count", fill=0, kind="int64"),
    Field("value", fill=float("nan"), kind="float", inherited=True, unattacked="merged"),
    Field("trace", fill=float("nan"), kind="float", shape=("K", "T", "N")),
    Field("example", fill=CLEAN_INPUT, kind="float", shape=("K", "N", "..."), inherited=True),
    Field("target", fill=-1, kind="int64", optional=True),
)


def _x(n: int = N) -> torch.Tensor:
    return torch.arange(n * 3, dtype=torch.float64).reshape(n, 3)


def _part(n: int, length: int, seed: int) -> dict[str, torch.Tensor | None]:
    """Hand-built tables of ``n`` samples over ``K`` epsilons, traces of ``length``."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "flag": torch.rand(K, n, generator=generator) > 0.5,
        "count": torch.randint(0, 9, (K, n), generator=generator),
        "value": torch.rand(K, n, generator=generator, dtype=torch.float64),
        "trace": torch.rand(K, length, n, generator=generator, dtype=torch.float64),
        "example": torch.rand(K, n, 3, generator=generator, dtype=torch.float64),
        "target": None,
    }


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.isnan(), b.isnan())
        and (
            torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
            if a.is_floating_point()
            else torch.equal(a, b)
        )
    )


def _tensor_attributes(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if "Tensor" in str(f.type)}


def test_every_tensor_of_a_result_is_a_declared_table() -> None:
    # A tensor attribute of a result is one value per sample (and epsilon): one left out of
    # the declaration would be dropped or misplaced wherever results are assembled.
    names = {f.name for f in PER_SAMPLE_TABLES}
    assert _tensor_attributes(AttackResult) == names
    for field in PER_SAMPLE_TABLES:
        assert field.shape[0] == "K" and "N" in field.shape, field
    assert {f.name for f in PER_SAMPLE_TABLES if f.optional} == {
        "first_grad_norm",
        "targets",
        "target_success",
    }


def test_every_per_sample_tensor_of_an_outcome_is_a_declared_table() -> None:
    # The outcome's only tensor field is where its samples are; its tables are the declared
    # ones, and each table it names as an attribute reads one of them.
    names = {f.name for f in PER_SAMPLE_TABLES}
    assert _tensor_attributes(AttackOutcome) == {"sample_index"}
    attributes = {n for n, v in vars(AttackOutcome).items() if type(v).__name__ == "_Table"}
    assert attributes and attributes <= names, attributes - names


def test_an_outcome_holds_every_declared_table_and_none_the_attack_does_not_give(
    model, data
) -> None:
    # A table declared on AttackResult is held by the outcome without a line of its own; the
    # optional tables an untargeted attack does not give are None, as in its result.
    x, y = data
    index = torch.arange(x.shape[0])
    spec = AttackSpec("pgd", "pgd-ce", {"num_steps": 2})
    result = pgd(model, x, y, [0.1], norm="linf", bounds=(0.0, 1.0), num_steps=2, generator=1)
    outcome = outcome_of(spec, Norm.LINF, result, index, x)
    assert list(outcome.tables) == [f.name for f in PER_SAMPLE_TABLES]
    for name, value in tables_of(result).items():
        assert (outcome.tables[name] is None) == (value is None), name
    assert outcome.tables["targets"] is None and outcome.tables["first_grad_norm"] is not None
    assert outcome.success is outcome.tables["success"]


def test_empty_holds_the_fills_in_the_declared_dtypes_and_shapes() -> None:
    x = _x()
    tables = empty(FIELDS, K, x, length=4)
    assert _same(tables["flag"], torch.zeros(K, N, dtype=torch.bool))
    assert _same(tables["count"], torch.zeros(K, N, dtype=torch.int64))
    assert _same(tables["value"], torch.full((K, N), math.nan, dtype=torch.float64))
    assert _same(tables["trace"], torch.full((K, 4, N), math.nan, dtype=torch.float64))
    assert _same(tables["example"], torch.stack([x, x]))
    assert _same(tables["target"], torch.full((K, N), -1, dtype=torch.int64))


def test_scatter_then_take_returns_the_part_and_leaves_the_fills_elsewhere() -> None:
    x = _x()
    index = torch.tensor([3, 0, 4])
    part = _part(3, length=2, seed=0)
    tables = empty(FIELDS, K, x, length=4)
    scatter(tables, part, index, FIELDS)
    back = take(tables, index, FIELDS)
    for name in ("flag", "count", "value", "example"):
        assert _same(back[name], part[name]), name
    # The shorter trace fills the first steps; the rest stays NaN.
    assert _same(back["trace"][:, :2], part["trace"])  # type: ignore[index]
    assert back["trace"][:, 2:].isnan().all()  # type: ignore[index]
    # The part has no targets: the table keeps its fill.
    assert _same(tables["target"], torch.full((K, N), -1, dtype=torch.int64))
    others = torch.tensor([1, 2])
    untouched = take(tables, others, FIELDS)
    fresh = take(empty(FIELDS, K, x, length=4), others, FIELDS)
    for name in untouched:
        assert _same(untouched[name], fresh[name]), name


def test_scatter_into_one_row_places_a_row_of_another_result() -> None:
    x = _x()
    index = torch.tensor([1, 2, 4])
    part = _part(3, length=4, seed=1)
    tables = empty(FIELDS, K, x, length=4)
    scatter(tables, at(part, 1, FIELDS), index, FIELDS, row=0)
    row = at(take(tables, index, FIELDS), 0, FIELDS)
    for name, value in at(part, 1, FIELDS).items():
        if value is not None:
            assert _same(row[name], value), name
    second = at(tables, 1, FIELDS)
    for name, value in at(empty(FIELDS, K, x, length=4), 1, FIELDS).items():
        assert _same(second[name], value), name


def test_cat_puts_results_side_by_side_and_pads_shorter_traces() -> None:
    first, second = _part(2, length=3, seed=2), _part(3, length=1, seed=3)
    joined = cat([first, second], FIELDS)
    assert joined["target"] is None
    left, right = take(joined, torch.arange(2), FIELDS), take(joined, torch.arange(2, 5), FIELDS)
    for name in ("flag", "count", "value", "example"):
        assert _same(left[name], first[name]) and _same(right[name], second[name]), name
    assert _same(left["trace"], first["trace"])
    assert _same(right["trace"][:, :1], second["trace"])  # type: ignore[index]
    assert right["trace"][:, 1:].isnan().all()  # type: ignore[index]
    # Scattering the two parts at their positions gives what cat gives.
    tables = empty(FIELDS, K, _x(), length=3)
    scatter(tables, first, torch.arange(2), FIELDS)
    scatter(tables, second, torch.arange(2, 5), FIELDS)
    for name in ("flag", "count", "value", "trace", "example"):
        assert _same(tables[name], joined[name]), name


def test_masked_puts_the_fill_where_not_attacked_at_the_level_asked() -> None:
    part = _part(4, length=1, seed=4)
    attacked = torch.tensor([[True, False, True, False], [False, False, True, True]])
    merged = masked(part, FIELDS, "merged", attacked)
    outcome = masked(part, FIELDS, "outcome", attacked)
    assert _same(merged["flag"], part["flag"])
    expected = torch.where(attacked, part["value"], math.nan)  # type: ignore[arg-type]
    assert _same(merged["value"], expected) and _same(outcome["value"], expected)
    assert _same(outcome["flag"], part["flag"] & attacked)  # type: ignore[operator]
    for name in ("count", "trace", "example"):
        assert outcome[name] is part[name]


def test_inherit_copies_the_inherited_tables_of_the_previous_row() -> None:
    tables = _part(N, length=2, seed=5)
    before = {name: None if v is None else v.clone() for name, v in tables.items()}
    keep = torch.tensor([True, False, False, True, False])
    inherit(tables, 1, keep, FIELDS)
    for field in FIELDS:
        now, then = tables[field.name], before[field.name]
        if now is None or then is None:
            continue
        expected = then.clone()
        if field.inherited:
            expected[1][keep] = then[0][keep]
        assert _same(now, expected), field.name


@pytest.mark.parametrize("split", [3, 7])
def test_cat_of_two_runs_is_the_run_on_their_samples_together(model, data, split) -> None:
    # PGD draws every sample's randomness from the sample's own streams, so a run on two parts
    # of the samples (with their ids) gives each sample what one run on all gives it.
    x, y = data
    x, y = x[:10], y[:10]
    ids = torch.arange(10)

    def run(part: slice):
        return pgd_targeted(
            model,
            x[part],
            y[part],
            [0.05, 0.2],
            norm="linf",
            bounds=(0.0, 1.0),
            num_steps=3,
            generator=4,
            sample_ids=ids[part],
        )

    whole, first, second = run(slice(None)), run(slice(0, split)), run(slice(split, None))
    joined = cat([tables_of(first), tables_of(second)], PER_SAMPLE_TABLES)
    expected = tables_of(whole)
    assert set(joined) == {f.name for f in PER_SAMPLE_TABLES}
    for name, value in expected.items():
        assert value is not None, name
        got = joined[name]
        assert got is not None and got.dtype == value.dtype, name
        # Floating values may differ in the last bits with the batch a sample was in.
        torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-7, equal_nan=True, msg=name)
    # The suite joins the calls of one stage so, and picks the stage's samples from them.
    order = torch.tensor([9, 0, 4, 2, 1, 3, 5, 6, 7, 8])
    concatenated = concatenate([first, second], 11, order)
    picked = take(joined, order, PER_SAMPLE_TABLES)
    for name, value in tables_of(concatenated).items():
        assert _same(value, picked[name]), name


def test_an_outcome_holds_its_run_at_the_runs_samples_and_the_fills_elsewhere(model, data) -> None:
    x, y = data
    index = torch.tensor([1, 5, 6, 20, 33])
    result = pgd_targeted(
        model,
        x[index],
        y[index],
        [0.05, 0.2],
        norm="linf",
        bounds=(0.0, 1.0),
        num_steps=3,
        generator=4,
        sample_ids=index,
    )
    spec = AttackSpec("pgd-t", "pgd-t", {"num_steps": 3})
    outcome = outcome_of(spec, Norm.LINF, result, index, x)
    fields = [f for f in PER_SAMPLE_TABLES if hasattr(outcome, f.name)]
    held = tables_of(outcome, fields)
    shown = take(held, index, fields)
    attacked = result.attacked
    for name, value in tables_of(result, fields).items():
        assert value is not None
        field = next(f for f in fields if f.name == name)
        if field.unattacked != "kept":
            value = torch.where(attacked, value, field.fill)  # type: ignore[arg-type]
        assert _same(shown[name], value), name
    rest = torch.tensor([i for i in range(x.shape[0]) if i not in index.tolist()])
    fills = take(empty(fields, 2, x, length=result.loss_trace.shape[1]), rest, fields)
    for name, value in take(held, rest, fields).items():
        assert _same(value, fills[name]), name


def test_masked_spreads_the_attacked_samples_over_a_traces_steps() -> None:
    fields = (Field("trace", fill=float("nan"), shape=("K", "T", "N"), unattacked="outcome"),)
    trace = torch.rand(K, 3, 4, dtype=torch.float64)
    attacked = torch.tensor([[True, False, True, False], [False, False, True, True]])
    expected = torch.where(attacked.unsqueeze(1), trace, math.nan)
    assert _same(masked({"trace": trace}, fields, "outcome", attacked)["trace"], expected)
    one_row = masked({"trace": trace[1]}, fields, "outcome", attacked[1])["trace"]
    assert _same(one_row, expected[1])
    examples = (Field("example", fill=CLEAN_INPUT, shape=("K", "N", "..."), unattacked="outcome"),)
    with pytest.raises(ValueError, match="clean input"):
        masked({"example": torch.zeros(K, 4, 3)}, examples, "outcome", attacked)
