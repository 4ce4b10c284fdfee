"""Oracles: Square, APGD and FAB against the AutoAttack authors' pyautoattack."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import mnist_test, tiny_data, tiny_model, zoo_checkpoint
from oracle_helpers import _norm
from torch import nn

from attacks import Norm, pgd, pgd_targeted, preset, square


@pytest.mark.data
def test_square_breaks_a_standard_model_at_the_preset_epsilon() -> None:
    checkpoint = zoo_checkpoint("mnist-lenet5-dropout.pt")
    data = mnist_test()
    x, y = data.x[:100], data.y[:100]
    eps = preset("standard", "mnist").epsilons[_norm("linf")][0]
    result = square(checkpoint.model, x, y, [eps], norm="linf", generator=0)
    assert result.robust_accuracy[0] <= 0.05
    assert result.queries[0][result.attacked[0]].float().median() < 1000


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_memoised_square_equals_pyautoattack_bit_for_bit(norm: str) -> None:
    from pyautoattack.square import SquareAttack

    from attacks.square import square_attack_class

    model = tiny_model()
    x, _ = tiny_data(model)
    with torch.no_grad():
        y = model(x).argmax(dim=1)

    def run(attack_class: type) -> tuple[torch.Tensor, torch.Tensor]:
        def predict(inputs: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(inputs)

        eps = 0.1 if norm == "Linf" else 0.5
        attack = attack_class(predict, norm=norm, n_queries=60, eps=eps, resc_schedule=True)
        attack.init_hyperparam(x)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return attack.attack_single_run(x, y)

    queries, adversarial = run(SquareAttack)
    memo_queries, memo_adversarial = run(square_attack_class())
    assert torch.equal(queries, memo_queries) and torch.equal(adversarial, memo_adversarial)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("channels", "side", "queries"), [(1, 8, 300), (3, 16, 1000)])
def test_native_square_with_pyautoattacks_draws_is_pyautoattack_bit_for_bit(
    norm: str, channels: int, side: int, queries: int
) -> None:
    """``square_search`` computes every sample's own window; given pyautoattack's draws (one
    window per iteration for the batch) it returns pyautoattack's queries and examples to the
    last bit, through the whole schedule of square sizes (1000 queries pass six of its steps)."""
    from attacks.square import PyautoattackDraws, square_attack_class, square_search

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * (side - 2) ** 2, 10)
    ).eval()
    x = torch.rand(16, channels, side, side)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    eps = 0.05 if norm == "linf" else 0.5
    attack = square_attack_class()(
        model,
        norm="Linf" if norm == "linf" else "L2",
        n_queries=queries,
        eps=eps,
        loss="margin",
        resc_schedule=False,
    )
    attack.init_hyperparam(x)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(3)
        their_queries, theirs = attack.attack_single_run(x, y)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        draws = PyautoattackDraws(Norm.parse(norm), channels, x.device)
        our_queries, ours = square_search(
            model, x, y, eps, Norm.parse(norm), draws, num_queries=queries
        )
    assert torch.equal(our_queries, their_queries) and torch.equal(ours, theirs)
    with torch.no_grad():
        broken = int((model(theirs).argmax(dim=1) != y).sum())
    assert broken >= 2 and (their_queries > 50).any()  # the search ran and found things


@pytest.mark.data
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_native_square_breaks_what_pyautoattacks_breaks_on_a_zoo_model(norm: str) -> None:
    """Native Square (each sample its own windows) against pyautoattack's Square (one window per
    batch), same queries, on MNIST samples of a LeNet-5 at a radius where both break about
    half: neither breaks significantly more (paired, exact McNemar), and the queries of what
    both break have medians within a factor of 2."""
    from core.stats import mcnemar_exact

    checkpoint = zoo_checkpoint("mnist-lenet5-dropout.pt")
    data = mnist_test()
    x, y = data.x[:200], data.y[:200]
    eps = 0.12 if norm == "linf" else 1.0
    runs = {
        backend: square(
            checkpoint.model, x, y, [eps], norm=norm, num_queries=300, generator=0, backend=backend
        )
        for backend in ("native", "pyautoattack")
    }
    ours, theirs = (runs[b].success[0] & runs[b].attacked[0] for b in ("native", "pyautoattack"))
    assert 40 <= int(theirs.sum()) <= 160, int(theirs.sum())  # a radius with something to find
    only_ours, only_theirs = int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
    assert mcnemar_exact(only_theirs, only_ours) > 0.01, (only_ours, only_theirs)
    assert mcnemar_exact(only_ours, only_theirs) > 0.01, (only_ours, only_theirs)
    both = ours & theirs
    median = {b: runs[b].queries[0][both].float().median() for b in runs}
    assert 0.5 <= float(median["native"] / median["pyautoattack"]) <= 2.0, median


@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_top_targets_match_pyautoattack_apgd_t_on_a_zoo_model(norm: str) -> None:
    """Targeted margin PGD over the 9 most likely wrong classes against the AutoAttack
    authors' APGD-T (targeted DLR over the same 9 classes, same number of steps), on the
    samples a plain PGD-CE left robust: neither may break significantly more (paired)."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    from checkpoints.datasets import load_dataset
    from core.stats import mcnemar_exact

    checkpoint = zoo_checkpoint("digits-mlp-dropout.pt")
    model = checkpoint.model
    data = load_dataset("digits")
    x, y = data.x, data.y
    eps = preset("standard", "digits").epsilons[_norm(norm)][0]
    plain = pgd(model, x, y, [eps], norm=norm, num_steps=20, rel_step_size=0.1, generator=0)
    left = (~plain.success[0]).nonzero().squeeze(1)
    x, y = x[left], y[left]
    ours = pgd_targeted(
        model,
        x,
        y,
        [eps],
        norm=norm,
        target_mode="top",
        num_target_classes=9,
        loss="cw",
        num_steps=50,
        rel_step_size=0.1,
        generator=0,
    ).success[0]
    runner = APGDAttack_targeted(
        model,
        n_iter=50,
        norm="Linf" if norm == "linf" else "L2",
        eps=eps,
        n_restarts=1,
        n_target_classes=9,
        seed=0,
        device=x.device,
    )
    with torch.random.fork_rng():
        adversarial = runner.perturb(x, y)
    with torch.no_grad():
        theirs = model(adversarial).argmax(dim=1) != y
    only_ours, only_theirs = int((ours & ~theirs).sum()), int((theirs & ~ours).sum())
    assert int(theirs.sum()) >= 5  # the comparison has something to compare
    assert mcnemar_exact(only_theirs, only_ours) > 0.01, (only_ours, only_theirs)
    assert mcnemar_exact(only_ours, only_theirs) > 0.01, (only_ours, only_theirs)


@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_apgd_loop_is_pyautoattacks_perturb_bit_for_bit(norm: str, targeted: bool) -> None:
    """``_perturb`` (the loop that lets each sample start from its own stream) is pyautoattack's
    ``perturb``: with pyautoattack's own starts it returns the same examples to the last bit,
    over restarts and target classes; with the sample's starts it returns examples in the ball
    that break samples."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    from attacks.apgd import _perturb, apgd_start

    model = tiny_model()
    x, y = tiny_data(model, n=24)
    eps = 0.08 if norm == "linf" else 0.6
    common = {"n_iter": 6, "norm": "Linf" if norm == "linf" else "L2", "eps": eps, "seed": 5}
    common["n_restarts"] = 2
    if targeted:
        runner = APGDAttack_targeted(model, n_target_classes=3, **common)
    else:
        runner = APGDAttack(model, loss="ce", **common)
    with torch.random.fork_rng():
        theirs = runner.perturb(x, y)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        ours = _perturb(runner, x, y, lambda x_run, rows: None)
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        broken = model(theirs).argmax(dim=1) != y
    assert 0 < int(broken[4:].sum()) < 20  # some samples broken, some not: a real comparison

    # Each sample's own starts, from per-sample generators, give examples in the ball too.
    generators = [torch.Generator().manual_seed(i) for i in range(24)]
    with torch.random.fork_rng():
        own = _perturb(
            runner,
            x,
            y,
            lambda x_run, rows: apgd_start(
                x_run, eps, Norm.parse(norm), [generators[i] for i in rows.tolist()]
            ),
        )
    offset = (own - x).flatten(1)
    size = offset.abs().amax(1) if norm == "linf" else offset.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    with torch.no_grad():
        assert (model(own).argmax(dim=1) != y)[4:].any()


@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [True, False])
def test_fab_is_pyautoattacks_fab_bit_for_bit(norm: str, targeted: bool) -> None:
    """``fab`` returns the examples of the AutoAttack authors' ``FABAttack_PT.perturb`` with
    AutoAttack's standard settings (one run per target, 9 targets for FAB-T), to the last bit;
    its success is the model's own judgement of them; it leaves the parameters' ``.grad`` as
    they were, which pyautoattack's ``backward`` does not."""
    from pyautoattack.fab_pt import FABAttack_PT

    from attacks import fab

    model = tiny_model()
    x, y = tiny_data(model, n=40)
    eps = 0.08 if norm == "linf" else 0.6
    ours = fab(model, x, y, [eps], norm=norm, targeted=targeted, num_steps=10, generator=3)
    assert all(p.grad is None for p in model.parameters())
    runner = FABAttack_PT(
        model,
        norm="Linf" if norm == "linf" else "L2",
        n_restarts=1,
        n_iter=10,
        eps=eps,
        seed=0,
        targeted=targeted,
        n_target_classes=9,
        device=x.device,
    )
    with torch.random.fork_rng():
        theirs = runner.perturb(x, y)
    assert any(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    correct = ~ours.success[0] | ours.attacked[0]  # clean errors are not attacked
    assert torch.equal(ours.adversarial[0][correct], theirs[correct])
    with torch.no_grad():
        broken = model(theirs).argmax(dim=1) != y
    assert torch.equal(ours.success[0], broken)
    assert 4 < int(broken.sum()) < 40  # some samples broken, some not: a real comparison
