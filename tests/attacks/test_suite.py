"""Suites, presets, the threat model and JSON output."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
import torch

from attacks import (
    AttackSpec,
    Bounds,
    Norm,
    SuiteConfig,
    apgd,
    check_epsilons,
    geometry,
    pgd,
    preset,
    run_suite,
)
from attacks.losses import is_finite_rows


def _quick(**changes) -> SuiteConfig:
    config = preset("quick", "digits")
    sweep = config.sweep
    assert sweep is not None
    small = {
        "sweep": type(sweep)(sweep.attack, num_points=4, independent_samples=8),
        "attacks": tuple(
            spec
            if spec.kind != "square"
            else type(spec)(spec.kind, spec.label, {**spec.params, "num_queries": 20})
            for spec in config.attacks
        ),
    }
    return config.with_options(**{**small, **changes})


def test_suite_is_a_worst_case_over_attacks(model, data) -> None:
    x, y = data
    calls: list[tuple[int, int, str]] = []
    result = run_suite(model, x, y, _quick(), generator=3, progress=lambda *a: calls.append(a))
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)
    for outcome in result.norms:
        broken = torch.zeros_like(outcome.robust)
        previous = result.clean_accuracy
        for record in outcome.attacks:
            broken |= record.success
            assert all(a.value <= previous + 1e-12 for a in record.robust_accuracy_after)
            previous = record.robust_accuracy_after[0].value
            if record.label == "pgd-cw":
                # A peer attack runs on every clean-correct sample.
                assert torch.equal(record.attacked[0], result.clean_correct)
            else:
                # Only samples every earlier attack left robust were attacked.
                assert not (record.attacked & broken & ~record.success).any()
        assert torch.equal(outcome.robust, result.clean_correct & ~broken)
        assert outcome.robust_accuracy[0] == pytest.approx(
            outcome.attacks[-1].robust_accuracy_after[0].value
        )
        # The main PGD-CE run is the sweep's run at the suite epsilon: no work repeated.
        pgd_ce = outcome.attack("pgd-ce")
        assert pgd_ce.source == "sweep"
        assert outcome.sweep is not None
        k = outcome.sweep_epsilons.index(outcome.epsilons[0])
        assert torch.equal(pgd_ce.success[0], outcome.sweep.success[k])
        assert outcome.sweep_epsilons[-1] == pytest.approx(outcome.unbounded_epsilon)
        independent = outcome.independent_sweep
        assert independent is not None and independent.sample_index.numel() == 8
        assert independent.result is not None and not independent.result.params["nested"]


def test_suite_is_reproducible(model, data) -> None:
    x, y = data
    first = run_suite(model, x, y, _quick(), generator=3)
    second = run_suite(model, x, y, _quick(), generator=3)
    for a, b in zip(first.norms, second.norms, strict=True):
        assert torch.equal(a.robust, b.robust)
        for ra, rb in zip(a.attacks, b.attacks, strict=True):
            assert torch.equal(ra.success, rb.success)
    linf = first.norms[0]
    assert linf.norm is Norm.LINF and isinstance(linf.robust_accuracy[0], float)
    assert linf.attacks[0].success.dtype == torch.bool
    assert first.config.name == "quick" and first.seed == 3
    again = pickle.loads(pickle.dumps(first))
    assert again.norms[0].attacks[0].robust_accuracy_after == linf.attacks[0].robust_accuracy_after


def test_skip_broken_off_attacks_every_clean_correct_sample(model, data) -> None:
    x, y = data
    result = run_suite(model, x, y, _quick(skip_broken=False, sweep=None), generator=1)
    for outcome in result.norms:
        for record in outcome.attacks:
            assert torch.equal(record.attacked[0], result.clean_correct)


def test_presets_hold_the_documented_settings() -> None:
    standard = preset("standard", "mnist")
    assert standard.epsilons == {Norm.LINF: (0.3,), Norm.L2: (2.0,)}
    assert preset("standard", "cifar10").epsilons[Norm.LINF] == (8 / 255,)
    labels = [spec.label for spec in standard.attacks]
    # FAB-T before Square (AutoAttack's order, and the cheaper one: benchmarks/bench_fab_order).
    assert labels == ["pgd-ce", "pgd-t", "pgd-cw", "fgsm", "noise", "fab-t", "square", "apgd-t"]
    pgd_ce, pgd_cw = standard.attacks[0], standard.attacks[2]
    assert pgd_ce.params["num_steps"] == 100 and pgd_ce.params["rel_step_size"] == 0.1
    assert pgd_cw.params["loss"] == "cw" and pgd_cw.peer_of == "pgd-ce"
    top = standard.attacks[-1]
    assert top.kind == "apgd" and top.peer_of is None
    assert top.params == {"targeted": True, "num_target_classes": 9, "num_steps": 100}
    # AutoAttack's standard FAB-T: targeted, one run per target, 9 targets, 100 iterations.
    fab_t = standard.attacks[-3]
    assert fab_t.kind == "fab" and fab_t.peer_of is None
    assert fab_t.params == {"targeted": True, "num_target_classes": 9, "num_steps": 100}
    thorough = [spec.label for spec in preset("thorough", "mnist").attacks]
    assert thorough == labels + ["pgd-cw-restarts", "apgd-ce", "autoattack"]
    # The quick preset (CI) and the thesis' setting keep their lists.
    quick = [spec.label for spec in preset("quick", "digits").attacks]
    assert quick == ["pgd-ce", "pgd-t", "pgd-cw", "fgsm", "noise", "square"]
    assert "apgd-t" not in [spec.label for spec in preset("thesis").attacks]
    square_spec = standard.attacks[-2]
    assert square_spec.params["num_queries"] == 5000 and square_spec.params["p_init"] == 0.8
    assert standard.sweep is not None
    sweep = standard.sweep.epsilons(0.3, 1.0)
    assert len(sweep) == 8 and sweep[-1] == pytest.approx(1.2)
    assert standard.sweep.epsilons(2.0, 28.3)[-1] == 28.3  # the unbounded L2 radius appended
    thesis = preset("thesis")
    assert thesis.epsilons[Norm.LINF] == (8 / 255,)
    assert thesis.attacks[0].params["num_steps"] == 10
    assert thesis.attacks[0].params["rel_step_size"] * 8 / 255 == pytest.approx(3 / 255)
    thorough = [spec.label for spec in preset("thorough", "mnist").attacks]
    assert {"apgd-ce", "apgd-t", "autoattack"} <= set(thorough)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("fast", "mnist")
    with pytest.raises(ValueError, match="standard epsilons"):
        preset("standard", "imagenet")


def test_epsilons_are_validated_with_the_fix_named() -> None:
    assert check_epsilons([0, 0.1]) == (0.0, 0.1)
    with pytest.raises(ValueError, match=r"got \[0.3, 0.1\]; pass \[0.1, 0.3\]"):
        check_epsilons([0.3, 0.1])
    with pytest.raises(ValueError, match="finite"):
        check_epsilons([math.nan])
    with pytest.raises(ValueError, match="norm must be one of 'linf', 'l2'"):
        Norm.parse("l0")
    assert Norm.parse("LINF") is Norm.LINF


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_geometry_stays_in_the_ball_and_the_box(norm: str) -> None:
    geom = geometry(norm)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(200, 3, 4, 4, generator=generator, dtype=torch.float64)
    eps = torch.rand(200, generator=generator, dtype=torch.float64)
    far = x0 + 3 * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    projected = geom.project(far, x0, eps, Bounds())
    assert (geom.distance(projected, x0) <= eps + 1e-12).all()
    assert projected.min() >= 0 and projected.max() <= 1
    start = geom.random_start(x0, eps, generator)
    assert (geom.distance(start, x0) <= eps + 1e-12).all()
    step = geom.normalize(torch.randn(x0.shape, generator=generator, dtype=torch.float64))
    if norm == "linf":
        assert torch.equal(step.abs(), torch.ones_like(step))
    else:
        torch.testing.assert_close(
            step.flatten(1).norm(dim=1), torch.ones(200, dtype=torch.float64)
        )
    # The in-place step of the PGD loop is the projection of the plain step, to the last bit.
    x = geom.project(far, x0, eps, Bounds())
    grad = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    step_size = 0.1 * torch.rand(200, generator=generator, dtype=torch.float64)
    plain = geom.project(
        x + step_size.reshape(-1, 1, 1, 1) * geom.normalize(grad), x0, eps, Bounds()
    )
    assert torch.equal(geom.ascend(x, grad.clone(), step_size, x0, eps, Bounds()), plain)
    surface = geom.surface_draw(x0, eps, generator, draw=0)
    torch.testing.assert_close(geom.distance(surface, x0), eps)
    # The unbounded epsilon's ball around any point of the box holds the whole box.
    corner_distance = geom.distance(torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    assert geom.unbounded_epsilon((3, 4, 4), Bounds()) >= float(corner_distance[0])


def test_non_finite_rows_are_found_exactly() -> None:
    values = torch.randn(6, 5, dtype=torch.float32)
    values[1, 2] = float("nan")
    values[2, 0] = float("inf")
    values[3, 0], values[3, 1] = float("inf"), float("-inf")
    values[4] = 3e38  # finite, though its sum overflows
    assert is_finite_rows(values).tolist() == [True, False, False, False, True, True]


def test_non_finite_logits_and_gradients_are_counted(model, data) -> None:
    x, y = data

    class Poisoned(torch.nn.Module):
        """NaN logits, and so NaN gradients, for samples whose first pixel is above 0.9."""

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            bad = inputs.flatten(1)[:, :1] > 0.9
            return model(inputs) + torch.where(bad, float("nan"), 0.0)

    result = pgd(Poisoned(), x, y, [0.0, 0.05], num_steps=2, random_start=False)
    stats = result.gradient_stats
    assert stats is not None
    assert stats.nonfinite_logits > 0 and stats.nonfinite_gradients > 0
    clean = pgd(model, x, y, [0.05], num_steps=2).gradient_stats
    assert clean is not None and clean.nonfinite_logits == clean.nonfinite_gradients == 0


def test_a_peer_attack_is_recorded_with_its_peer(model, data) -> None:
    x, y = data
    result = run_suite(model, x, y, _quick(), generator=0)
    attacks = result.config.to_dict()["attacks"]
    assert [a.get("peer_of") for a in attacks] == [None, None, "pgd-ce", None, None, None]
    for outcome in result.norms:
        assert int(outcome.attack("fgsm").attacked[0].sum()) < int(result.clean_correct.sum())


def test_peer_of_must_name_an_earlier_attack() -> None:
    config = preset("quick", "digits")
    specs = list(config.attacks)
    specs[0] = replace(specs[0], peer_of="pgd-cw")
    with pytest.raises(ValueError, match="peer_of must name an earlier attack"):
        config.with_options(attacks=tuple(specs))


def test_a_stochastic_model_gets_eot_and_autoattacks_rand_attacks() -> None:
    from attacks.presets import EOT_APGD_SAMPLES, for_stochastic_model

    assert EOT_APGD_SAMPLES == 20  # AutoAttack's rand version: eot_iter=20
    standard = preset("standard", "mnist")
    random = for_stochastic_model(standard, 8)
    assert random.eot_samples == 8
    labels = [spec.label for spec in random.attacks]
    assert labels == [spec.label for spec in standard.attacks] + ["eot-apgd-ce", "eot-apgd-dlr"]
    for spec, loss in zip(random.attacks[-2:], ("ce", "dlr"), strict=True):
        assert spec.kind == "apgd" and spec.peer_of is None
        assert spec.params == {"loss": loss, "num_steps": 100, "eot_samples": 20}
    # Idempotent; a suite that already averages keeps its own number of passes.
    assert for_stochastic_model(random, 8) == random
    assert for_stochastic_model(standard.with_options(eot_samples=4), 8).eot_samples == 4
    # The preset's own step count (quick: 10).
    quick = for_stochastic_model(preset("quick", "digits"), 8)
    assert quick.attacks[-1].params == {"loss": "dlr", "num_steps": 10, "eot_samples": 20}
    # No gradient attack asked for, none added; an EOT APGD already there is kept.
    square_only = tuple(spec for spec in standard.attacks if spec.label == "square")
    only_square = standard.with_options(attacks=square_only)
    assert for_stochastic_model(only_square, 8).attacks == only_square.attacks
    mine = AttackSpec("apgd", "mine", {"loss": "ce", "eot_samples": 30})
    own = for_stochastic_model(standard.with_options(attacks=(mine,)), 8)
    assert [spec.label for spec in own.attacks] == ["mine", "eot-apgd-dlr"]


def test_apgd_averages_its_gradient_over_eot_samples_passes(model, data) -> None:
    """APGD with EOT takes ``eot_samples`` gradients at every step (pyautoattack's
    ``eot_iter``)."""
    x, y = data
    one = apgd(model, x, y, [0.1], num_steps=4, generator=0)
    three = apgd(model, x, y, [0.1], num_steps=4, eot_samples=3, generator=0)
    attacked = int(one.attacked.sum())
    assert attacked == int(three.attacked.sum()) > 0
    # One run of 4 steps plus the start: 5 gradients per attacked sample, each over 3 passes.
    assert one.num_backward == 5 * attacked and three.num_backward == 15 * attacked
    assert three.params["eot_samples"] == 3 and one.params["eot_samples"] == 1
