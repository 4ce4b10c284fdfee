"""Per-sample objectives that attacks maximise, and the classification margin.

Every objective takes logits ``[N, C]`` and returns ``[N]``; larger is better for the attacker,
so an untargeted cross-entropy is returned as is and a targeted one with its sign flipped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Objective = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``objective(logits [N, C], labels [N], targets [N] or None) -> [N]``, to be maximised."""

LOSSES = ("ce", "cw", "dlr")


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``z_y - max_{j != y} z_j`` per sample ``[N]``: positive when ``labels`` is predicted."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(dim=1)


def _dlr_scale(logits: Tensor, drop: int) -> Tensor:
    ordered = logits.sort(dim=1, descending=True).values
    if drop == 3:
        return ordered[:, 0] - ordered[:, 2] + 1e-12
    return ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12


def _untargeted(name: str) -> Objective:
    def ce(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        return F.cross_entropy(logits, labels, reduction="none")

    def cw(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        return -margin(logits, labels)

    def dlr(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        return -margin(logits, labels) / _dlr_scale(logits, 3)

    return {"ce": ce, "cw": cw, "dlr": dlr}[name]


def _need(targets: Tensor | None) -> Tensor:
    if targets is None:
        raise ValueError("a targeted objective needs targets [N], got None")
    return targets


def _targeted(name: str) -> Objective:
    def ce(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        targets = _need(targets)
        return -F.cross_entropy(logits, targets, reduction="none")

    def cw(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        # The target's margin over every other class: rises as the target gains (Carlini
        # and Wagner's targeted objective), positive once the target is predicted.
        targets = _need(targets)
        return margin(logits, targets)

    def dlr(logits: Tensor, labels: Tensor, targets: Tensor | None) -> Tensor:
        targets = _need(targets)
        gap = logits.gather(1, labels[:, None]) - logits.gather(1, targets[:, None])
        return -gap.squeeze(1) / _dlr_scale(logits, 4)

    return {"ce": ce, "cw": cw, "dlr": dlr}[name]


def objective(name: str, *, targeted: bool, num_classes: int | None = None) -> Objective:
    """The objective called ``name`` (``"ce"``, ``"cw"`` or ``"dlr"``).

    Args:
        name: ``"ce"`` cross-entropy; ``"cw"`` Carlini-Wagner margin; ``"dlr"`` the
            difference-of-logits ratio of Croce and Hein (needs 3 classes, 4 when targeted).
        targeted: minimise the loss of a target class instead of maximising that of the label.
        num_classes: checked against DLR's minimum when given.

    Raises:
        ValueError: for an unknown name or too few classes for DLR.
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")
    needed = 4 if targeted else 3
    if name == "dlr" and num_classes is not None and num_classes < needed:
        raise ValueError(
            f"the DLR loss needs at least {needed} classes, got {num_classes}; use loss='cw'"
        )
    return _targeted(name) if targeted else _untargeted(name)


def describe(name: str, *, targeted: bool) -> str:
    """The label of an objective in results: ``"ce"``, or ``"-ce(target)"`` when targeted."""
    return f"-{name}(target)" if targeted else name


def is_finite_rows(values: Tensor) -> Tensor:
    """``[N]`` bool: whether every entry of each row of ``values`` ``[N, ...]`` is finite."""
    flat = values.flatten(1)
    # NaN and Inf reach a row's sum, so one reduction clears almost every row (a tenth of the
    # cost of an element-wise test); only rows whose sum is not finite, which a huge but
    # finite row can also cause, are tested element by element.
    finite = torch.isfinite(flat.sum(dim=1))
    if not bool(finite.all()):
        suspect = (~finite).nonzero().squeeze(1)
        finite[suspect] = torch.isfinite(flat[suspect]).all(dim=1)
    return finite


NO_PREDICTION = -1
"""What ``predict`` gives for a row of logits holding NaN or Inf: no class at all."""


def predict(logits: Tensor) -> Tensor:
    """``[N]`` int64 argmax of ``logits`` ``[N, C]``, ``NO_PREDICTION`` (-1) for a row that is
    not finite: the argmax of NaN is arbitrary (torch returns the NaN's index), so such a row
    predicts nothing; it equals no label and no target."""
    return torch.where(is_finite_rows(logits), logits.argmax(dim=1), NO_PREDICTION)


def fooled(logits: Tensor, labels: Tensor) -> Tensor:
    """``[N]`` bool: the logits are finite and their argmax is not the label. A row with NaN
    or Inf fools nothing (nor is it correct: see ``predict``)."""
    prediction = predict(logits)
    return (prediction != labels) & (prediction != NO_PREDICTION)


def judged_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``margin`` ``[N]``, NaN for a row that is not finite (it has no margin)."""
    return torch.where(is_finite_rows(logits), margin(logits, labels), float("nan"))


def zero_nonfinite_(values: Tensor) -> Tensor:
    """Set the NaN and infinite entries of ``values`` to zero, in place, and return it.

    Gradient attacks step along ``zero_nonfinite_(grad)``: a coordinate whose derivative is
    not finite gives no step (a sign or an L2 normalisation of NaN would spread it over the
    whole iterate). A finite tensor is left untouched; one sum clears almost every call.
    """
    if not bool(torch.isfinite(values.sum())):
        values.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return values
