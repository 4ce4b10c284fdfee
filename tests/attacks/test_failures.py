"""No exception inside one attack stops a suite: failures and cut graphs become records."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import AttackSpec, SweepConfig, apgd, fab, pgd, preset, robust_after, run_suite
from attacks.evaluator import NO_INPUT_GRADIENT, NoInputGradient


class _Cut(nn.Module):
    """The tiny model behind an operation that cuts the autograd graph."""

    def __init__(self, model: nn.Module, how: str) -> None:
        super().__init__()
        self.model, self.how = model, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "threshold":
            return self.model((x > 0.5).float())
        if self.how == "integer":
            return self.model((x * 16).to(torch.int64).to(x.dtype) / 16)
        return self.model(x.detach())


def _suite(**changes):
    config = preset("quick", "digits")
    attacks = tuple(
        spec
        if spec.kind != "square"
        else AttackSpec(spec.kind, spec.label, {**spec.params, "num_queries": 20})
        for spec in config.attacks
    )
    sweep = config.sweep
    assert sweep is not None
    small = {"attacks": attacks, "sweep": SweepConfig(sweep.attack, num_points=2)}
    return config.with_options(**{**small, **changes})


@pytest.mark.parametrize("how", ["threshold", "integer", "detach"])
def test_gradient_attacks_on_a_cut_graph_are_not_applicable(how, model, data) -> None:
    x, y = data
    cut = _Cut(model, how).eval()
    result = run_suite(cut, x, y, _suite(), generator=0)
    with torch.no_grad():
        clean_correct = cut(x).argmax(dim=1) == y
    for outcome in result.norms:
        by_label = {record.label: record for record in outcome.attacks}
        for label in ("pgd-ce", "pgd-t", "pgd-cw", "fgsm"):
            record = by_label[label]
            assert record.status == "not-applicable", (how, label)
            assert record.message == NO_INPUT_GRADIENT
            assert not record.attacked.any() and not (record.success & clean_correct).any()
        # Black-box attacks still run, on every sample the gradient attacks left robust.
        for label in ("noise", "square"):
            record = by_label[label]
            assert record.status == "ok" and record.message is None
            assert torch.equal(by_label["noise"].attacked[0], clean_correct)
        # The sweep (PGD-CE) could not run either; nothing stops at it.
        assert outcome.sweep is None and outcome.independent_sweep is None
        stages = {(f.stage, f.label) for f in outcome.failures}
        assert ("sweep", "pgd-ce") in stages and ("attack", "fgsm") in stages
        assert all(f.status == "not-applicable" for f in outcome.failures)
        successes = [record.success for record in outcome.attacks]
        assert torch.equal(outcome.robust, robust_after(clean_correct, successes)[-1])
    linf = result.norms[0]
    assert linf.attacks[0].status == "not-applicable"
    assert linf.failures[0].message == NO_INPUT_GRADIENT


def test_the_evaluator_says_the_gradient_does_not_exist(model, data) -> None:
    x, y = data
    with pytest.raises(NoInputGradient, match=NO_INPUT_GRADIENT):
        pgd(_Cut(model, "threshold").eval(), x, y, [0.1], num_steps=2)
    # Through the reference libraries too (pyautoattack, torchattacks).
    with pytest.raises(NoInputGradient):
        apgd(_Cut(model, "detach").eval(), x, y, [0.1], num_steps=2)
    for how in ("detach", "threshold"):
        with pytest.raises(NoInputGradient):
            fab(_Cut(model, how).eval(), x, y, [0.1], num_steps=2)
    with pytest.raises(NoInputGradient):
        pgd(_Cut(model, "detach").eval(), x, y, [0.1], num_steps=2, backend="torchattacks")


class _Fragile(nn.Module):
    """Raises inside forward on inputs PGD reaches: a gradient is asked for at a point more
    than 0.02 from every clean input (FGSM asks only at the clean inputs)."""

    def __init__(self, model: nn.Module, clean: torch.Tensor) -> None:
        super().__init__()
        self.model, self.clean = model, clean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            distance = (x.detach().flatten(1)[:, None] - self.clean.flatten(1)[None]).abs()
            if bool((distance.amax(dim=2).amin(dim=1) > 0.02).any()):
                raise RuntimeError("lookup table overflow in layer 3")
        return self.model(x)


def test_an_attack_that_raises_is_recorded_and_the_suite_goes_on(model, data) -> None:
    x, y = data
    fragile = _Fragile(model, x).eval()
    base = preset("quick", "digits")
    specs = {spec.label: spec for spec in base.attacks}
    config = base.with_options(
        attacks=(
            specs["pgd-ce"],
            specs["fgsm"],
            specs["noise"],
            AttackSpec("square", "square", {**specs["square"].params, "num_queries": 20}),
        ),
        sweep=None,
    )
    result = run_suite(fragile, x, y, config, generator=0)
    with torch.no_grad():
        clean_correct = model(x).argmax(dim=1) == y
    for outcome in result.norms:
        pgd_ce = outcome.attack("pgd-ce")
        assert pgd_ce.status == "failed"
        assert pgd_ce.message == "RuntimeError: lookup table overflow in layer 3"
        assert pgd_ce.statuses == ("failed",) and not pgd_ce.attacked.any()
        # Its samples count as not attacked: FGSM, next, runs on every clean-correct one.
        fgsm = outcome.attack("fgsm")
        assert fgsm.status == "ok"
        assert torch.equal(fgsm.attacked[0], clean_correct)
        assert all(outcome.attack(label).status == "ok" for label in ("noise", "square"))
        assert [(f.stage, f.label, f.status) for f in outcome.failures] == [
            ("attack", "pgd-ce", "failed")
        ]
        assert outcome.failures[0].epsilon == outcome.epsilons[0]
