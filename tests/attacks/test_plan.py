"""A suite's plan: its stages, in order, computed from the configuration alone."""

from __future__ import annotations

import pytest
import torch

from attacks import AttackSpec, Norm, SweepConfig, preset, registry, run_suite
from attacks.plan import plan_suite

DIGIT = (1, 8, 8)
"""The shape of one sample of the digits."""


def _small(config):
    """``config`` with small budgets, for runs on the tiny model."""
    sweep = config.sweep
    assert sweep is not None
    attacks = tuple(
        spec
        if spec.kind != "square"
        else AttackSpec(spec.kind, spec.label, {**spec.params, "num_queries": 20})
        for spec in config.attacks
    )
    return config.with_options(
        attacks=attacks, sweep=SweepConfig(sweep.attack, num_points=4, independent_samples=8)
    )


def test_the_standard_plan_lists_the_stages_in_the_documented_order() -> None:
    config = preset("standard", "digits")
    plan = plan_suite(config, DIGIT)
    main = ["pgd-ce", "pgd-t", "pgd-cw", "fgsm", "noise", "fab-t", "square", "apgd-t"]
    expected: list[tuple[str, str | None, str | None]] = []
    for norm in (Norm.LINF, Norm.L2):
        expected.append(("sweep", norm.value, "pgd-ce"))
        if norm is Norm.LINF:
            # Once, after the first norm's sweep: the clean pass.
            expected.append(("clean", None, None))
        expected += [("attack", norm.value, label) for label in main]
        expected.append(("independent-sweep", norm.value, "pgd-ce"))
    got = [
        (
            stage.role,
            None if stage.norm is None else stage.norm.value,
            None if stage.attack is None else stage.attack.label,
        )
        for stage in plan.stages
    ]
    assert got == expected
    assert [item.norm for item in plan.norms] == [Norm.LINF, Norm.L2]
    for item in plan.norms:
        assert item.epsilons == tuple(config.epsilons[item.norm])
        assert item.sweep_epsilons[-1] == item.unbounded_epsilon


@pytest.mark.parametrize("name", ["quick", "standard", "thesis", "thorough"])
@pytest.mark.parametrize("skip_broken", [True, False])
def test_units_are_unique_and_the_total_counts_every_stage_but_the_clean_pass(
    name, skip_broken
) -> None:
    config = preset(name, "mnist").with_options(
        epsilons={Norm.LINF: (0.1, 0.3), Norm.L2: (1.0, 2.0)}, skip_broken=skip_broken
    )
    plan = plan_suite(config, (1, 28, 28))
    assert len(set(plan.units)) == len(plan.units)
    assert plan.total == len(plan.units) == len(plan.stages) - 1
    assert [stage.role for stage in plan.stages].count("clean") == 1
    per_norm = 2 * len(config.attacks) + 2
    assert plan.total == 2 * per_norm
    assert plan_suite(config, (1, 28, 28)) == plan
    for stage in plan.stages:
        if stage.attack is not None:
            independent = registry.batch_independent(stage.attack.kind, stage.attack.params)
            assert stage.split == ("samples" if independent else "batches")
        if stage.role == "attack":
            assert stage.attack is not None
            peer = stage.attack.peer_of is not None
            assert stage.samples == ("robust" if skip_broken and not peer else "clean-correct")


def test_the_swept_attack_takes_the_sweeps_row_at_its_epsilons() -> None:
    config = preset("standard", "digits")
    plan = plan_suite(config, DIGIT)
    sweeps = {item.norm: item.sweep_epsilons for item in plan.norms}
    shared = [stage for stage in plan.stages if stage.sweep_row is not None]
    assert [(stage.norm, stage.attack.label) for stage in shared if stage.attack] == [
        (Norm.LINF, "pgd-ce"),
        (Norm.L2, "pgd-ce"),
    ]
    for stage in shared:
        assert stage.norm is not None and stage.sweep_row is not None
        assert sweeps[stage.norm][stage.sweep_row] == stage.epsilons[0]
    independent = [stage for stage in plan.stages if stage.role == "independent-sweep"]
    assert all(not stage.nested and stage.subsample == 100 for stage in independent)


def test_a_plan_without_a_sweep_or_a_norm() -> None:
    config = preset("quick", "digits").with_options(sweep=None)
    plan = plan_suite(config, DIGIT)
    assert plan.stages[0].role == "clean"
    assert all(stage.role in ("clean", "attack") for stage in plan.stages)
    assert plan.total == 2 * len(config.attacks)
    empty = plan_suite(config.with_options(epsilons={}), DIGIT)
    assert [stage.role for stage in empty.stages] == ["clean"] and empty.total == 0


def test_a_run_reports_and_keeps_the_plans_stages(model, data) -> None:
    x, y = data
    config = _small(preset("quick", "digits"))
    plan = plan_suite(config, x.shape[1:])
    reported: list[tuple[int, int, str]] = []
    units: list[str] = []

    def memo(unit, compute):
        units.append(unit)
        return compute(), False

    run_suite(model, x, y, config, generator=0, progress=lambda *a: reported.append(a), memo=memo)
    labels = [stage.label for stage in plan.stages if stage.reported]
    assert reported == [(i + 1, plan.total, label) for i, label in enumerate(labels)]
    # A stage with no sample left to attack, or one the sweep answers, runs nothing.
    assert units == [unit for unit in plan.units if unit in units]
    assert {stage.unit for stage in plan.stages if "sweep" in stage.role} <= set(units)
    assert torch.equal(x, data[0])


class _NoGradient(torch.nn.Module):
    """The tiny model, raising whenever its input asks for a gradient."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("no gradient here")
        return self.model(x)


def test_without_the_sweep_its_shared_stages_run_and_the_independent_one_is_skipped(
    model, data
) -> None:
    x, y = data
    config = _small(preset("quick", "digits"))
    plan = plan_suite(config, x.shape[1:])
    reported: list[str] = []
    units: list[str] = []

    def memo(unit, compute):
        units.append(unit)
        return compute(), False

    result = run_suite(
        _NoGradient(model).eval(),
        x,
        y,
        config,
        generator=0,
        progress=lambda done, total, label: reported.append(label),
        memo=memo,
    )
    for item in plan.norms:
        norm = item.norm.value
        shared = [s for s in plan.stages if s.norm is item.norm and s.sweep_row is not None]
        assert shared and all(stage.unit in units for stage in shared)
        assert f"{norm} independent sweep (skipped: the sweep did not complete)" in reported
        assert f"{norm}-independent-sweep-pgd-ce" not in units
        outcome = result.norm(item.norm)
        assert outcome.sweep is None and outcome.independent_sweep is None
        assert [f.stage for f in outcome.failures][0] == "sweep"
        assert outcome.attack("pgd-ce").status == "failed"


def test_a_resumed_suite_reports_each_stage_as_it_was_found(model, data) -> None:
    x, y = data
    config = _small(preset("quick", "digits"))
    sweep = config.sweep
    assert sweep is not None
    config = config.with_options(sweep=SweepConfig(sweep.attack, independent_samples=0))
    stored: dict[str, object] = {}

    def memo(unit, compute):
        if unit in stored:
            return stored[unit], True
        stored[unit] = compute()
        return stored[unit], False

    def run():
        labels: list[str] = []
        result = run_suite(
            model, x, y, config, generator=0, progress=lambda *a: labels.append(a[2]), memo=memo
        )
        return labels, result

    (first, alone), (second, resumed) = run(), run()
    assert not any(label.endswith("(resumed)") for label in first)
    # The independent sweep of no samples ran nothing, so it never resumes.
    assert [label for label in second if "independent" in label] == [
        "linf independent sweep",
        "l2 independent sweep",
    ]
    assert [label.removesuffix(" (resumed)") for label in second] == first
    assert [[r.label for r in n.attacks] for n in resumed.norms] == [
        [r.label for r in n.attacks] for n in alone.norms
    ]
    for a, b in zip(alone.norms, resumed.norms, strict=True):
        assert torch.equal(a.robust, b.robust)
