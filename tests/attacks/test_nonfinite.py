"""Every attack survives a model with NaN or Inf logits, and never counts them as a success.

The oracle is the construction: the model below returns a non-finite logit exactly for the
bright images (mean pixel above 0.7), either always or only once they leave the 1/16 grid the
clean images lie on (so only under attack). The bright and dark images are far enough apart
that no budget used here turns one into the other, so which samples are non-finite is known
before any attack runs; each returned example is judged again by calling the model directly.
"""

from __future__ import annotations

import math

import pytest
import torch
from attack_fixtures import tiny_model
from torch import nn

from attacks import apgd, fab, fgsm, pgd, pgd_targeted, random_noise, run_suite, square
from attacks.losses import NO_PREDICTION, fooled, predict, zero_nonfinite_

NUM_SAMPLES = 24
BRIGHT = 0.7
EPSILONS = {"linf": [0.02, 0.05], "l2": [0.1, 0.3]}


class Poisoned(nn.Module):
    """``model`` with the logit of class 0 replaced by ``value`` on bright images: always
    (``when="clean"``) or only off the 1/16 grid (``when="perturbed"``)."""

    def __init__(self, model: nn.Module, value: float, when: str) -> None:
        super().__init__()
        self.model, self.value, self.when = model, value, when

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        bad = x.flatten(1).mean(1) > BRIGHT
        if self.when == "perturbed":
            grid = x.flatten(1) * 16
            bad = bad & ((grid - grid.round()).abs().amax(1) > 1e-4)
        column = torch.arange(logits.shape[1], device=logits.device) == 0
        return torch.where(bad[:, None] & column[None, :], self.value, logits)


def _data(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid images, every third one bright; labels the clean model's predictions, the first
    two wrong. Returns ``(x, y, bright)``."""
    generator = torch.Generator().manual_seed(3)
    bright = torch.arange(NUM_SAMPLES) % 3 == 0
    dark_pixels = torch.randint(0, 10, (NUM_SAMPLES, 1, 8, 8), generator=generator)
    bright_pixels = torch.randint(13, 17, (NUM_SAMPLES, 1, 8, 8), generator=generator)
    x = torch.where(bright[:, None, None, None], bright_pixels, dark_pixels).float() / 16
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10
    return x, y, bright


ATTACKS = {
    "fgsm": lambda m, x, y, e, n: fgsm(m, x, y, e, norm=n),
    "fgsm-cleverhans": lambda m, x, y, e, n: fgsm(m, x, y, e, norm=n, backend="cleverhans"),
    "fgsm-torchattacks": lambda m, x, y, e, n: fgsm(m, x, y, e, norm=n, backend="torchattacks"),
    "pgd-ce": lambda m, x, y, e, n: pgd(m, x, y, e, norm=n, num_steps=5),
    "pgd-ce-cleverhans": lambda m, x, y, e, n: pgd(
        m, x, y, e, norm=n, num_steps=5, backend="cleverhans"
    ),
    "pgd-ce-torchattacks": lambda m, x, y, e, n: pgd(
        m, x, y, e, norm=n, num_steps=5, backend="torchattacks"
    ),
    "pgd-cw-last": lambda m, x, y, e, n: pgd(
        m, x, y, e, norm=n, num_steps=5, loss="cw", keep="last", early_stop=False
    ),
    "pgd-t": lambda m, x, y, e, n: pgd_targeted(m, x, y, e, norm=n, num_steps=5),
    "pgd-t-top": lambda m, x, y, e, n: pgd_targeted(
        m, x, y, e, norm=n, num_steps=5, target_mode="top", num_target_classes=3
    ),
    "pgd-t-torchattacks": lambda m, x, y, e, n: pgd_targeted(
        m, x, y, e, norm=n, num_steps=5, backend="torchattacks"
    ),
    "pgd-t-cleverhans": lambda m, x, y, e, n: pgd_targeted(
        m, x, y, e, norm=n, num_steps=5, backend="cleverhans"
    ),
    "apgd-ce": lambda m, x, y, e, n: apgd(m, x, y, e, norm=n, num_steps=5),
    "apgd-dlr": lambda m, x, y, e, n: apgd(m, x, y, e, norm=n, num_steps=5, loss="dlr"),
    "apgd-t": lambda m, x, y, e, n: apgd(
        m, x, y, e, norm=n, num_steps=5, targeted=True, num_target_classes=2
    ),
    "fab-t": lambda m, x, y, e, n: fab(m, x, y, e, norm=n, num_steps=5, num_target_classes=3),
    "square": lambda m, x, y, e, n: square(m, x, y, e, norm=n, num_queries=40),
    "noise": lambda m, x, y, e, n: random_noise(m, x, y, e, norm=n, num_draws=8),
}

CASES = [("clean", math.nan), ("clean", -math.inf), ("perturbed", math.nan)]
CASES += [("perturbed", math.inf), ("perturbed", -math.inf)]


def _judge(model: nn.Module, examples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(finite [N], argmax [N])`` of the model at ``examples``, by a direct call."""
    with torch.no_grad():
        logits = model(examples)
    return torch.isfinite(logits).all(1), logits.argmax(1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("when", "value"), CASES)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_non_finite_logits_are_recorded_and_never_a_success(name, when, value, norm) -> None:
    inner = tiny_model()
    x, y, bright = _data(inner)
    model = Poisoned(inner, value, when).eval()
    clean_finite, clean_argmax = _judge(model, x)
    assert torch.equal(clean_finite, ~bright if when == "clean" else torch.ones_like(bright))

    result = ATTACKS[name](model, x, y, EPSILONS[norm], norm)

    clean_correct = clean_finite & (clean_argmax == y)
    for k in range(len(result.epsilons)):
        finite, argmax = _judge(model, result.adversarial[k])
        # The engine's marks agree with the model itself, example by example.
        assert torch.equal(result.nonfinite[k], ~finite), (k, result.nonfinite[k], finite)
        assert torch.equal(result.success[k], ~clean_correct | (finite & (argmax != y)))
        # A non-finite sample is never an attack's success, however its argmax falls.
        assert not (result.success[k] & result.attacked[k] & ~finite).any()
        assert not result.attacked[k][~clean_correct].any()
        if when == "clean":
            assert result.nonfinite[k][bright].all() and not result.nonfinite[k][~bright].any()
            assert torch.isnan(result.margin[k][bright]).all()
        else:
            # Under attack only the bright samples can become non-finite, and none is broken.
            assert not result.nonfinite[k][~bright].any()
            assert not result.success[k][bright & clean_correct].any()
    assert result.nonfinite_evaluations > 0
    if result.gradient_stats is not None:
        assert result.gradient_stats.nonfinite_logits == result.nonfinite_evaluations


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_gradient_attacks_step_off_the_grid_and_are_marked(norm) -> None:
    """PGD and FGSM move every bright sample off the grid (a NaN gradient gives no step, but
    the clean gradient here is finite), so exactly the clean-correct bright ones are marked."""
    inner = tiny_model()
    x, y, bright = _data(inner)
    model = Poisoned(inner, math.nan, "perturbed").eval()
    clean_correct = _judge(model, x)[1] == y
    expected = bright & clean_correct
    assert int(expected.sum()) >= 4
    for result in (
        pgd(model, x, y, EPSILONS[norm], norm=norm, num_steps=5),
        fgsm(model, x, y, EPSILONS[norm], norm=norm),
        square(model, x, y, EPSILONS[norm], norm=norm, num_queries=40),
    ):
        assert torch.equal(result.nonfinite, expected.expand_as(result.nonfinite)), result.attack
        assert not (result.success & expected).any()


def test_the_unbounded_attack_survives_and_judges_by_the_model() -> None:
    inner = tiny_model()
    x, y, bright = _data(inner)
    model = Poisoned(inner, math.nan, "clean").eval()
    for norm, whole_box in (("linf", 1.0), ("l2", 9.0)):
        result = pgd(model, x, y, [0.05, whole_box], norm=norm, num_steps=5)
        finite, argmax = _judge(model, result.adversarial[1])
        broken = result.success[1] & result.attacked[1]
        assert (finite[broken] & (argmax[broken] != y[broken])).all()
        assert torch.equal(result.nonfinite[1][result.attacked[1]], ~finite[result.attacked[1]])


def test_a_suite_on_a_poisoned_model_records_every_attack() -> None:
    from attacks import preset

    inner = tiny_model()
    x, y, bright = _data(inner)
    model = Poisoned(inner, math.inf, "perturbed").eval()
    config = preset("quick", "digits")
    result = run_suite(model, x, y, config, generator=0)
    correct = _judge(model, x)[1] == y
    assert torch.equal(result.clean_correct, correct)
    assert not result.clean_nonfinite.any()
    for outcome in result.norms:
        assert [r.status for r in outcome.attacks] == ["ok"] * len(outcome.attacks)
        for record in outcome.attacks:
            assert not (record.nonfinite & ~bright).any()
            assert not (record.success & record.attacked & record.nonfinite).any()
        # A bright, clean-correct sample is never broken: every example of it is non-finite.
        assert outcome.robust[:, bright & correct].all()


def test_prediction_helpers() -> None:
    logits = torch.tensor([[0.0, 2.0], [math.nan, 1.0], [math.inf, 0.0], [-math.inf, 3.0]])
    labels = torch.tensor([0, 0, 1, 0])
    assert predict(logits).tolist() == [1, NO_PREDICTION, NO_PREDICTION, NO_PREDICTION]
    assert fooled(logits, labels).tolist() == [True, False, False, False]
    grad = torch.tensor([[1.0, math.nan], [-math.inf, 2.0]])
    assert zero_nonfinite_(grad).tolist() == [[1.0, 0.0], [0.0, 2.0]]
    finite = torch.tensor([[3e38, 3e38]])
    assert torch.equal(zero_nonfinite_(finite.clone()), finite)  # an overflowing sum is no NaN
