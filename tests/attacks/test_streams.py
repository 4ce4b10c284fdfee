"""Per-sample random streams: a sample's result does not depend on the batch it falls in.

For every kind the registry calls batch-independent, a sample attacked among 12 in batches of
5 gets what it gets among a permuted 7 of them in batches of 3, given its id.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model

from attacks import AttackSpec, Norm, SuiteConfig, registry
from attacks.engine import setup
from attacks.result import AttackResult
from attacks.shards import dealt
from attacks.suite import expected_cost_order, run_attack_spec
from attacks.threat import geometry
from torchutil import draw_seed, make_generator

EPSILONS = {"linf": [0.02, 0.06], "l2": [0.2, 0.6]}

# Every batch-independent kind with the draws it has: random starts, restarts, random targets.
INDEPENDENT: list[tuple[str, dict[str, Any]]] = [
    ("fgsm", {}),
    ("pgd", {"num_steps": 5, "num_restarts": 2}),
    ("pgd", {"num_steps": 5, "num_restarts": 2, "keep": "last", "early_stop": False}),
    ("pgd-t", {"target_mode": "random", "num_steps": 5, "num_restarts": 2}),
    ("pgd-t", {"target_mode": "top", "num_target_classes": 3, "num_steps": 4}),
    ("noise", {"num_draws": 25}),
    ("square", {"num_queries": 80, "num_restarts": 2}),
    ("square", {"num_queries": 80, "rescale_schedule": True}),
    ("apgd", {"loss": "ce", "num_steps": 5, "num_restarts": 2}),
    ("apgd", {"loss": "dlr", "num_steps": 5}),
    ("apgd", {"targeted": True, "num_target_classes": 3, "num_steps": 5}),
    # FAB with one run draws nothing: its steps are each sample's own.
    ("fab", {"num_target_classes": 3, "num_steps": 5}),
    ("fab", {"targeted": False, "num_steps": 5}),
]

INTEGERS = ("success", "attacked", "last_success", "queries", "success_step", "nonfinite")
FLOATS = ("margin", "adversarial")


FLOAT32_ONLY = ("apgd", "fab")  # pyautoattack's APGD and FAB compute in float32


@pytest.fixture(scope="module")
def problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = tiny_model(torch.float64)
    x, y = tiny_data(model, n=12, dtype=torch.float64)
    return model, x, y


@pytest.fixture(scope="module")
def problem32() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = tiny_model(torch.float32)
    x, y = tiny_data(model, n=12, dtype=torch.float32)
    return model, x, y


def _attack(kind: str, params: dict[str, Any], model, x, y, norm: str, **kwargs) -> AttackResult:
    function = registry.get(kind).function
    return function(model, x, y, EPSILONS[norm], norm=norm, generator=7, **params, **kwargs)


def _fields(result: AttackResult, index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The per-sample fields of ``result``, of the samples ``index`` (all when None)."""
    fields = {name: getattr(result, name) for name in (*INTEGERS, *FLOATS)}
    fields["loss_trace"] = result.loss_trace.movedim(2, 1)  # [K, N, T + 1]
    if result.targets is not None and result.target_success is not None:
        fields["targets"], fields["target_success"] = result.targets, result.target_success
    if index is None:
        return fields
    return {name: value[:, index] for name, value in fields.items()}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("kind", "params"), INDEPENDENT)
def test_a_sample_gets_the_same_result_in_any_batch(kind, params, norm, problem, problem32) -> None:
    assert registry.batch_independent(kind, params)
    model, x, y = problem32 if kind in FLOAT32_ONLY else problem
    whole = _attack(kind, params, model, x, y, norm, batch_size=5)
    # The attacks neither all fail nor all succeed at once, so the comparison has content.
    attacked = whole.success & whole.attacked
    assert attacked.any() and not whole.success.all()
    subset = torch.randperm(12, generator=make_generator(3))[:7]
    part = _attack(kind, params, model, x[subset], y[subset], norm, batch_size=3, sample_ids=subset)
    expected, found = _fields(whole, subset), _fields(part)
    assert expected.keys() == found.keys()
    if kind == "pgd-t":
        assert "targets" in found
    for name, value in found.items():
        if value.is_floating_point():
            torch.testing.assert_close(
                value, expected[name], rtol=1e-5, atol=1e-6, equal_nan=True, msg=name
            )
        else:
            assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("kind", "params"), INDEPENDENT)
def test_the_same_call_twice_is_bit_identical(kind, params, norm, problem, problem32) -> None:
    model, x, y = problem32 if kind in FLOAT32_ONLY else problem
    first = _fields(_attack(kind, params, model, x, y, norm, batch_size=5))
    second = _fields(_attack(kind, params, model, x, y, norm, batch_size=5))
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_another_sample_id_gives_another_random_start(norm, problem) -> None:
    model, x, y = problem
    one = x[4:5].expand(3, -1, -1, -1).contiguous()
    labels = y[4:5].expand(3).contiguous()
    params = {"num_steps": 1, "early_stop": False, "keep": "last"}
    ids = torch.tensor([0, 5, 11])
    result = _attack("pgd", params, model, one, labels, norm, sample_ids=ids)
    # The objective at the random start differs between the ids, though the input is the same.
    start = result.loss_trace[0, 0]
    assert torch.unique(start).numel() == 3
    again = _attack("pgd", params, model, one[:1], labels[:1], norm, sample_ids=ids[1:2])
    assert torch.equal(again.loss_trace[0, 0], start[1:2])
    # So does the margin of each random-noise draw.
    noise = _attack("noise", {"num_draws": 2}, model, one, labels, norm, sample_ids=ids)
    draws = noise.loss_trace[0, 1:]
    assert (draws[:, 0] != draws[:, 1]).all() and (draws[:, 1] != draws[:, 2]).all()


def test_setup_draws_one_seed_whatever_the_number_of_samples(problem) -> None:
    model, x, y = problem
    states = []
    for n in (1, 12):
        generator = make_generator(5)
        config = setup(
            model,
            x[:n],
            y[:n],
            [0.1],
            norm="linf",
            bounds=(0, 1),
            generator=generator,
            eot_samples=1,
        )
        assert torch.equal(config.sample_ids, torch.arange(n))
        states.append(generator.get_state())
    reference = make_generator(5)
    draw_seed(reference)
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], reference.get_state())


def test_per_sample_streams_draw_on_the_cpu_row_by_row(problem) -> None:
    model, x, y = problem
    config = setup(model, x, y, [0.1], norm="l2", bounds=(0, 1), generator=0, eot_samples=1)
    index = torch.tensor([3, 7])
    eps = torch.full((2,), 0.5, dtype=x.dtype)
    start = geometry("l2").random_start(x[index], eps, config.streams(index, 1))
    alone = geometry("l2").random_start(x[7:8], eps[:1], config.streams(index[1:], 1))
    assert torch.equal(start[1:], alone)
    assert (geometry("l2").distance(start, x[index]) <= eps + 1e-12).all()
    with pytest.raises(ValueError, match="one generator per row"):
        geometry("linf").random_start(x[index], eps, config.streams(index[:1], 1))


@pytest.mark.parametrize("kind", registry.list_attacks())
def test_every_kind_checks_the_sample_ids(kind, problem) -> None:
    model, x, y = problem
    function = registry.get(kind).function
    for bad, message in (
        (torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10]), "must be distinct, got 1 repeated"),
        (torch.arange(12, dtype=torch.int32), "dtype torch.int64, got torch.int32"),
        (torch.arange(11), r"shape \[N\] = \[12\]"),
        (torch.arange(12).reshape(3, 4), r"shape \[N\] = \[12\]"),
        (list(range(12)), "int64 tensor of shape"),
    ):
        with pytest.raises(ValueError, match=message):
            function(model, x.float(), y, [0.1], sample_ids=bad)


def test_batch_independence_is_declared_for_every_kind() -> None:
    assert registry.batch_independent("fgsm", {}) is True
    assert registry.batch_independent("pgd", {"random_start": True}) is True
    assert registry.batch_independent("pgd-t", {"target_mode": "random"}) is True
    assert registry.batch_independent("noise", {}) is True
    for backend in ("cleverhans", "torchattacks"):
        for kind in ("fgsm", "pgd", "pgd-t"):
            assert registry.batch_independent(kind, {"backend": backend}) is False
    assert registry.batch_independent("apgd", {"targeted": True}) is True
    assert registry.batch_independent("square", {}) is True
    assert registry.batch_independent("square", {"backend": "pyautoattack"}) is False
    assert registry.batch_independent("fab", {}) is True
    assert registry.batch_independent("fab", {"targeted": False}) is True
    assert registry.batch_independent("fab", {"num_restarts": 2}) is False
    assert registry.batch_independent("autoattack", {}) is False
    with pytest.raises(ValueError, match="unknown attack kind"):
        registry.batch_independent("cw", {})
    with pytest.raises(ValueError, match="unknown parameter 'steps'"):
        registry.batch_independent("pgd", {"steps": 3})
    with pytest.raises(ValueError, match="is not a parameter of an attack; it is set by the audit"):
        registry.get("pgd").check({"sample_ids": None})


def test_the_suite_passes_sample_ids_through_to_the_attack(problem) -> None:
    model, x, y = problem
    spec = AttackSpec("noise", "noise", {"num_draws": 25})
    config = SuiteConfig("ids", {Norm.LINF: (0.06,)}, (spec,), batch_size=5)
    whole = _attack("noise", {"num_draws": 25}, model, x, y, "linf", batch_size=5)
    subset = torch.tensor([9, 2, 7, 4])
    part = run_attack_spec(
        spec,
        model,
        x[subset],
        y[subset],
        EPSILONS["linf"],
        norm=Norm.LINF,
        config=config,
        generator=make_generator(7),
        sample_ids=subset,
    )
    assert torch.equal(part.success, whole.success[:, subset])
    torch.testing.assert_close(part.adversarial, whole.adversarial[:, subset])


def test_samples_are_dealt_by_expected_cost_back_and_forth() -> None:
    """An exact case: ``index``'s samples ranked by ``order`` (5, 3, 0, 1, 2, 7, 9) go to the
    processes 0, 1, 1, 0, 0, 1, 1 (and 0, 1, 2, 2, 1, 0, 0 for three), each part sorted."""
    order = torch.tensor([5, 3, 0, 1, 4, 2, 6, 7, 8, 9])
    index = torch.tensor([0, 1, 2, 3, 5, 7, 9])
    assert [p.tolist() for p in dealt(index, order, 2)] == [[1, 2, 5], [0, 3, 7, 9]]
    assert [p.tolist() for p in dealt(index, order, 3)] == [[5, 7, 9], [2, 3], [0, 1]]


@pytest.mark.parametrize("world", [2, 3])
def test_dealt_parts_share_every_cost_level(world: int) -> None:
    """On a random ranking of 1000 samples and a random half of them: the parts partition the
    half, their sizes differ by at most one, and their sums of cost ranks (among the half) by
    at most the half's size (a split in order differs by about a quarter of its square)."""
    generator = make_generator(3)
    order = torch.randperm(1000, generator=generator)
    index = torch.randperm(1000, generator=generator)[:500].sort().values
    parts = dealt(index, order, world)
    assert torch.equal(torch.cat(parts).sort().values, index)
    assert all(torch.equal(p, p.sort().values) for p in parts)
    assert max(p.numel() for p in parts) - min(p.numel() for p in parts) <= 1
    # The cost rank of each of the half's samples among them.
    ranked = [s for s in order.tolist() if s in set(index.tolist())]
    cost = torch.zeros(1000, dtype=torch.long)
    cost[torch.tensor(ranked)] = torch.arange(len(ranked))
    sums = [int(cost[p].sum()) for p in parts]
    assert max(sums) - min(sums) <= index.numel()


def test_expected_cost_order_ranks_by_clean_margin() -> None:
    """A linear model whose margins are known: misclassified first, then by rising margin; and
    it draws nothing from the global RNG."""
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 2.0], [0.5, 0.0], [0.0, 5.0]])
    y = torch.tensor([0, 1, 0, 0, 1])  # margins 3, 1, -1, 0.5, 5
    state = torch.get_rng_state()
    config = SuiteConfig(name="t", epsilons={Norm.LINF: (0.1,)}, attacks=(), batch_size=2)
    order = expected_cost_order(model, x, y, config)
    assert order.tolist() == [2, 3, 1, 0, 4]
    assert torch.equal(torch.get_rng_state(), state)
