"""Oracles: closed forms, analytic worst cases and the reference libraries."""

from __future__ import annotations

import math

import pytest
import torch
from attack_fixtures import mnist_test, tiny_data, tiny_model, zoo_checkpoint
from torch import nn

from attacks import Norm, fgsm, pgd, pgd_targeted, preset, square


def _linear(num_classes: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)).to(dtype).eval()


def _interior(n: int = 40, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Points in [0.3, 0.7], so that the small balls below never reach the box."""
    generator = torch.Generator().manual_seed(5)
    return (0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=generator)).to(dtype)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_on_a_linear_model_equals_its_closed_form(norm: str) -> None:
    model = _linear(5)
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.arange(30) % 5
    epsilons = [0.01, 0.1, 0.5]
    result = fgsm(model, x, y, epsilons, norm=norm, nested=False)

    weight, bias = model[1].weight, model[1].bias
    with torch.no_grad():
        probabilities = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
        # d CE / d x = W^T (softmax(z) - onehot(y)) for z = W x + b.
        grad = (probabilities - nn.functional.one_hot(y, 5).double()) @ weight
        direction = grad.sign() if norm == "linf" else grad / grad.norm(dim=1, keepdim=True)
    attacked = result.attacked[0]
    for k, eps in enumerate(epsilons):
        expected = (x.flatten(1) + eps * direction).clamp(0, 1).reshape(x.shape)
        torch.testing.assert_close(
            result.adversarial[k][attacked], expected[attacked], rtol=0, atol=1e-12
        )


def _linear_binary(norm: str):
    """A linear binary classifier, its inputs and labels, the median margin's radius ``eps``
    and the closed-form worst-case true-class margin over the ``eps`` ball."""
    torch.manual_seed(4)
    weight = torch.randn(64, dtype=torch.float64)
    x = _interior()
    bias = -(x.flatten(1) @ weight).median()

    class Binary(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            score = inputs.flatten(1) @ weight + bias
            return torch.stack([torch.zeros_like(score), score], dim=1)

    score = x.flatten(1) @ weight + bias
    y = (score > 0).long()
    dual = weight.abs().sum() if norm == "linf" else weight.norm()
    # The median margin's radius: about half the samples robust, and far from the box.
    eps = float(score.abs().median() / dual)
    worst_margin = (2.0 * y - 1.0) * score - eps * dual  # min over the ball
    return Binary(), x, y, eps, worst_margin


# From a random start, L2 PGD only approaches the boundary point, so it starts at the input.
@pytest.mark.parametrize(("norm", "random_start"), [("linf", False), ("linf", True), ("l2", False)])
def test_pgd_on_a_linear_binary_classifier_reaches_the_worst_case(
    norm: str, random_start: bool
) -> None:
    model, x, y, eps, worst_margin = _linear_binary(norm)
    result = pgd(model, x, y, [eps], norm=norm, num_steps=20, random_start=random_start)
    decided = worst_margin.abs() > 1e-9
    assert torch.equal(result.success[0][decided], (worst_margin < 0)[decided])
    robust = ~result.success[0]
    torch.testing.assert_close(result.margin[0][robust], worst_margin[robust], rtol=0, atol=1e-9)
    assert robust.any() and result.success[0].any()


def _reference_fgsm(library: str, model: nn.Module, x, y, eps: float, norm: str):
    if library == "torchattacks":
        import torchattacks

        return torchattacks.FGSM(model, eps=eps)(x, y)
    from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method

    order = math.inf if norm == "linf" else 2
    return fast_gradient_method(model, x, eps, order, clip_min=0.0, clip_max=1.0, y=y)


def _reference_pgd(
    library: str, model: nn.Module, x, y, eps: float, step: float, steps: int, norm: str
):
    if library == "torchattacks":
        import torchattacks

        attack_class = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
        return attack_class(model, eps=eps, alpha=step, steps=steps, random_start=False)(x, y)
    from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

    order = math.inf if norm == "linf" else 2
    return projected_gradient_descent(
        model,
        x,
        eps,
        step,
        steps,
        order,
        clip_min=0.0,
        clip_max=1.0,
        y=y,
        rand_init=False,
        sanity_checks=False,
    )


# cleverhans computes in float32 whatever it is given; torchattacks keeps float64. Under L2
# cleverhans clips to the box before projecting onto the ball and torchattacks after, so the
# L2 comparisons use interior points where the box is never reached.
REFERENCE_CASES = [
    ("torchattacks", "linf", torch.float64),
    ("torchattacks", "l2", torch.float64),
    ("cleverhans", "linf", torch.float32),
    ("cleverhans", "l2", torch.float32),
]


@pytest.mark.reference
@pytest.mark.parametrize(("library", "norm", "dtype"), REFERENCE_CASES)
def test_native_fgsm_and_pgd_equal_the_reference_libraries(library, norm, dtype) -> None:
    model = tiny_model(dtype)
    if norm == "l2":
        x = _interior(48, dtype)
        epsilons = [0.05, 0.2]
    else:
        x, _ = tiny_data(model, dtype=dtype)
        epsilons = [0.03, 0.1]
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every sample correct, so every sample is attacked
    if not (library == "torchattacks" and norm == "l2"):
        native = fgsm(model, x, y, epsilons, norm=norm, nested=False)
        for k, eps in enumerate(epsilons):
            reference = _reference_fgsm(library, model, x, y, eps, norm)
            torch.testing.assert_close(
                native.adversarial[k], reference.to(dtype), rtol=0, atol=1e-6
            )
    steps, rel = 7, 0.3
    native = pgd(
        model,
        x,
        y,
        epsilons,
        norm=norm,
        num_steps=steps,
        rel_step_size=rel,
        random_start=False,
        keep="last",
        early_stop=False,
        nested=False,
    )
    for k, eps in enumerate(epsilons):
        reference = _reference_pgd(library, model, x, y, eps, rel * eps, steps, norm)
        torch.testing.assert_close(native.adversarial[k], reference.to(dtype), rtol=0, atol=1e-6)
    # The selectable backend reproduces the library's numbers.
    through = pgd(
        model,
        x,
        y,
        epsilons,
        norm=norm,
        num_steps=steps,
        rel_step_size=rel,
        random_start=False,
        nested=False,
        backend=library,
    )
    assert torch.equal(through.success, native.success)


def _binomial_interval(accuracy: float, n: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1.0 / n) / n)
    return accuracy - half, accuracy + half


def _torchattacks_robust_accuracy(model, x, y, eps, step, steps, norm, seed) -> float:
    import torchattacks

    attack_class = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        adversarial = attack_class(model, eps=eps, alpha=step, steps=steps, random_start=True)(x, y)
    with torch.no_grad():
        return float((model(adversarial).argmax(dim=1) == y).double().mean())


@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_matches_torchattacks_robust_accuracy_on_a_zoo_model(norm: str) -> None:
    from checkpoints.datasets import load_dataset

    checkpoint = zoo_checkpoint("digits-mlp-none.pt")
    data = load_dataset("digits")
    x, y = data.x[:300], data.y[:300]
    eps = preset("standard", "digits").epsilons[_norm(norm)][0]
    steps = 20
    native = pgd(checkpoint.model, x, y, [eps], norm=norm, num_steps=steps, generator=11)
    reference = _torchattacks_robust_accuracy(
        checkpoint.model, x, y, eps, 2.5 / steps * eps, steps, norm, seed=11
    )
    low, high = _binomial_interval(reference, x.shape[0])
    assert low <= native.robust_accuracy[0] <= high, (native.robust_accuracy, reference)


@pytest.mark.data
@pytest.mark.reference
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_matches_torchattacks_on_the_mnist_lenet(norm: str) -> None:
    checkpoint = zoo_checkpoint("mnist-lenet5-dropout.pt")
    data = mnist_test()
    x, y = data.x[:500], data.y[:500]
    eps = {"linf": 0.1, "l2": 1.0}[norm]  # mid-range accuracy, where a difference would show
    native = pgd(checkpoint.model, x, y, [eps], norm=norm, num_steps=40, generator=3)
    reference = _torchattacks_robust_accuracy(
        checkpoint.model, x, y, eps, 2.5 / 40 * eps, 40, norm, seed=3
    )
    low, high = _binomial_interval(reference, x.shape[0])
    assert low <= native.robust_accuracy[0] <= high, (native.robust_accuracy, reference)


def _norm(name: str):  # noqa: ANN202
    from attacks import Norm

    return Norm.parse(name)


@pytest.mark.parametrize("mode", ["random", "next", "least-likely", "all", "top"])
@pytest.mark.parametrize("num_classes", [2, 3, 10])
def test_pgd_t_never_targets_the_true_class(mode: str, num_classes: int) -> None:
    model = tiny_model(num_classes=num_classes)
    x, _ = tiny_data(model)
    with torch.no_grad():
        clean = model(x)
    y = clean.argmax(dim=1)
    result = pgd_targeted(model, x, y, [0.05, 0.3], target_mode=mode, num_steps=4)
    assert result.targets is not None and result.target_success is not None
    assigned = result.targets >= 0
    assert assigned[result.attacked].all()
    assert (result.targets[assigned] != y.expand_as(result.targets)[assigned]).all()
    if mode == "next":
        expected = (y + 1) % num_classes
        assert torch.equal(
            result.targets[result.attacked], expected.expand_as(result.targets)[result.attacked]
        )
    if mode == "least-likely":
        masked = clean.scatter(1, y[:, None], float("inf"))
        expected = masked.argmin(dim=1).expand_as(result.targets)
        assert torch.equal(result.targets[result.attacked], expected[result.attacked])
    if num_classes == 2:
        assert torch.equal(result.targets[assigned], (1 - y).expand_as(result.targets)[assigned])
    # Targeted success means the prediction is the target, which is never the label.
    assert (result.success | ~result.target_success).all()
    if mode == "random":
        # A sample keeps its random target at every epsilon.
        both = result.attacked.all(dim=0)
        assert torch.equal(result.targets[0][both], result.targets[1][both])


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


def test_targeted_margin_rises_as_the_target_gains() -> None:
    from attacks.losses import objective

    # Carlini and Wagner's targeted objective by hand: z_t - max_{j != t} z_j.
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [3.0, 2.5, 0.0, -1.0], [0.5, 2.0, 1.0, 0.0]])
    labels = torch.tensor([0, 0, 0])
    targets = torch.tensor([1, 1, 1])
    value = objective("cw", targeted=True)(logits, labels, targets)
    torch.testing.assert_close(value, torch.tensor([1.0 - 3.0, 2.5 - 3.0, 2.0 - 1.0]))
    # Every targeted objective rises as the target's logit rises and the label's falls.
    for name in ("ce", "cw", "dlr"):
        function = objective(name, targeted=True)
        before = function(logits, labels, targets)
        after = function(logits + torch.tensor([-0.2, 0.2, 0.0, 0.0]), labels, targets)
        assert (after > before).all(), name


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_pgd_on_a_linear_binary_classifier_reaches_the_worst_case(
    loss: str, norm: str
) -> None:
    # With two classes the only target is the other class, so the targeted attack's exact
    # worst case is the untargeted one's.
    model, x, y, eps, worst_margin = _linear_binary(norm)
    for mode in ("next", "top"):
        result = pgd_targeted(
            model,
            x,
            y,
            [eps],
            norm=norm,
            target_mode=mode,
            loss=loss,
            num_steps=20,
            random_start=False,
        )
        decided = worst_margin.abs() > 1e-9
        assert torch.equal(result.success[0][decided], (worst_margin < 0)[decided]), mode
        assert result.success[0].any() and not result.success[0].all()


def test_top_targets_follow_the_clean_logits_most_likely_first() -> None:
    model = tiny_model()
    x, _ = tiny_data(model)
    with torch.no_grad():
        clean = model(x)
    y = clean.argmax(dim=1)
    # Ranks of the wrong classes by clean logit, computed independently in plain Python.
    ranked = [
        sorted((c for c in range(10) if c != label), key=lambda c, row=row: -row[c])
        for row, label in zip(clean.tolist(), y.tolist(), strict=True)
    ]
    one = pgd_targeted(model, x, y, [0.05], target_mode="top", num_target_classes=1, num_steps=3)
    assert one.targets is not None
    assert one.targets[0].tolist() == [r[0] for r in ranked]
    # With three targets, a sample the first target could not break moves on to the next two
    # (the first run is the same, same seed), and every example belongs to one of its three
    # most likely wrong classes.
    three = pgd_targeted(model, x, y, [0.05], target_mode="top", num_target_classes=3, num_steps=3)
    assert three.targets is not None
    for sample, target in enumerate(three.targets[0].tolist()):
        assert target in ranked[sample][:3]
    assert bool((three.success[0] >= one.success[0]).all())
    assert bool((three.success[0] & ~one.success[0]).any())
    assert three.params["num_target_classes"] == 3


def test_top_targets_on_fewer_classes_than_asked_use_every_wrong_class() -> None:
    model = tiny_model(num_classes=3)
    x, _ = tiny_data(model)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    result = pgd_targeted(model, x, y, [0.3], target_mode="top", num_target_classes=9, num_steps=3)
    assert result.targets is not None
    assert (result.targets[0] != y).all() and (result.targets[0] >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"target_mode": "random", "num_target_classes": 3}, ValueError, "target_mode 'top' only"),
        ({"target_mode": "top", "num_target_classes": 0}, ValueError, "at least 1, got 0"),
        ({"target_mode": "top", "num_target_classes": 2.0}, TypeError, "must be an int"),
    ],
)
def test_num_target_classes_is_checked(kwargs, error, message) -> None:
    model = tiny_model()
    x, y = tiny_data(model)
    with pytest.raises(error, match=message):
        pgd_targeted(model, x, y, [0.1], num_steps=2, **kwargs)


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
