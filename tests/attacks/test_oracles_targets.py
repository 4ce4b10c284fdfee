"""Oracles for targeted PGD's choice of target classes: never the label, the most likely
wrong classes first, every wrong class when there are fewer than asked."""

from __future__ import annotations

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model

from attacks import pgd_targeted


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
