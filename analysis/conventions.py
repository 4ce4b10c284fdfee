"""Other input conventions, tried on the clean evaluation samples.

A model fed its inputs in another convention than it was trained with (without its
normalisation, in [0, 1] where it expects 0..255, in another channel order) still returns
logits, only worse ones: its clean accuracy drops, sometimes to chance, and every robust
accuracy measured on it describes a model nobody trained. The ``low-clean-accuracy`` check
compares the clean accuracy with what the model scores when the same images are presented in
a fixed list of other conventions (:func:`conventions_to_try`); a convention that scores
significantly and materially better says which flag was likely missing.

Each convention is emulated through the inputs, whatever the model is: a model that computes
``net((x - m0) / s0)`` (``m0 = 0, s0 = 1`` without normalisation) fed
``(x - m1) / s1 * s0 + m0`` computes ``net((x - m1) / s1)``, the same network normalised with
``(m1, s1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks.losses import predict
from checkpoints.checkfile import error_summary
from checkpoints.spec import NAMED_NORMALIZATIONS
from torchutil import shared_map

__all__ = ["Convention", "ConventionTrial", "conventions_to_try", "try_conventions"]

GRID_MEANS = (0.0, 0.25, 0.5)
GRID_STDS = (0.125, 0.25, 0.5)
"""Single-value normalisations tried besides the named ones: means and stds on a coarse
powers-of-two grid over the statistics of [0, 1] pixel datasets (means 0.1 to 0.5, stds 0.2 to
0.35) and the [-1, 1] convention (0.5, 0.5)."""


@dataclass(frozen=True)
class Convention:
    """One way to present [0, 1] pixels to the model.

    Attributes:
        name: what it is, in words (``normalisation imagenet``).
        flag: the flag that makes the audit present them so ("" when no flag does).
        mean, std: the normalisation the network then sees applied (None: none).
        flip_channels: reverse the channel order (RGB to BGR).
        approximate: a point of the grid, standing for statistics near it.
    """

    name: str
    flag: str
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    flip_channels: bool = False
    approximate: bool = False


@dataclass(frozen=True)
class ConventionTrial:
    """The model's clean predictions under one convention.

    Attributes:
        convention: the convention.
        correct: ``[N]`` bool, CPU: each evaluation sample classified correctly under it; None
            when the model raised on inputs presented so (``error`` says what).
        error: the model's error, one line, or None.
    """

    convention: Convention
    correct: Tensor | None
    error: str | None = None


def _values(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def conventions_to_try(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    channels: int,
    bounds: tuple[float, float],
) -> list[Convention]:
    """The conventions other than the current one (``mean``, ``std``) worth trying on a model
    of ``channels`` input channels: no normalisation, each named one that fits the channels,
    the single-value grid (``GRID_MEANS`` × ``GRID_STDS``), 0..255 pixels and, for three
    channels, the reversed channel order. None for bounds other than [0, 1], whose pixels
    the statistics do not describe.
    """
    if tuple(bounds) != (0.0, 1.0):
        return []
    current = None if mean is None or std is None else (tuple(mean), tuple(std))
    out: list[Convention] = []
    if current is not None:
        out.append(Convention("no normalisation", "--normalization none", None, None))
    for name, (named_mean, named_std) in NAMED_NORMALIZATIONS.items():
        if len(named_mean) in (1, channels):
            out.append(
                Convention(
                    f"normalisation {name}", f"--normalization {name}", named_mean, named_std
                )
            )
    for grid_mean in GRID_MEANS:
        for grid_std in GRID_STDS:
            text = f"{grid_mean:g}:{grid_std:g}"
            out.append(
                Convention(
                    f"normalisation mean {grid_mean:g}, std {grid_std:g}",
                    f"--normalization {text}",
                    (grid_mean,),
                    (grid_std,),
                    approximate=True,
                )
            )
    # Pixels in 0..255: the network sees 255 x, which normalisation with mean 0 and std 1/255
    # gives, with epsilons still in [0, 1] units.
    out.append(Convention("pixels in 0..255", "--normalization 0:0.00392157", (0.0,), (1 / 255,)))
    if channels == 3:
        out.append(Convention("channels in BGR order", "", mean=None, std=None, flip_channels=True))
    kept = []
    for convention in out:
        same = not convention.flip_channels and (
            (convention.mean is None and current is None)
            or (
                current is not None
                and convention.mean is not None
                and convention.std is not None
                and _broadcast(convention.mean, channels) == _broadcast(current[0], channels)
                and _broadcast(convention.std, channels) == _broadcast(current[1], channels)
            )
        )
        if not same:
            kept.append(convention)
    return kept


def _broadcast(values: Sequence[float], channels: int) -> tuple[float, ...]:
    return tuple(values) * channels if len(values) == 1 else tuple(values)


def _column(values: Sequence[float] | None, fill: float, like: Tensor) -> Tensor:
    if values is None:
        return torch.full((1, 1, 1, 1), fill, dtype=like.dtype, device=like.device)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def present(
    x: Tensor,
    convention: Convention,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> Tensor:
    """The inputs ``[N, C, H, W]`` that make a model normalising with (``mean``, ``std``) see
    ``x`` in ``convention``."""
    if convention.flip_channels:
        return x.flip(1)
    to_mean, to_std = _column(convention.mean, 0.0, x), _column(convention.std, 1.0, x)
    from_mean, from_std = _column(mean, 0.0, x), _column(std, 1.0, x)
    return (x - to_mean) / to_std * from_std + from_mean


def try_conventions(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    bounds: tuple[float, float],
    batch_size: int,
) -> tuple[ConventionTrial, ...]:
    """The model's clean correctness on ``x`` ``[N, C, H, W]`` (labels ``y`` ``[N]``) under
    each of :func:`conventions_to_try`; one forward pass per convention, no gradients. A
    convention on which the model raises is kept with its error and no outcome.

    Args:
        model: the model as audited (normalising with ``mean``/``std`` inside), in eval mode.
        mean, std: the normalisation the audit applies (None: none).
        bounds: the audit's input bounds.
        batch_size: samples per forward pass.
    """
    conventions = conventions_to_try(mean, std, int(x.shape[1]), bounds)
    batches = -(-len(x) // batch_size)

    def outcome(item: int) -> Tensor | str:
        """Convention ``item // batches`` on batch ``item % batches``: correct or the error."""
        convention, start = conventions[item // batches], (item % batches) * batch_size
        try:
            batch = present(x[start : start + batch_size], convention, mean, std)
            with torch.no_grad():
                return (predict(model(batch)) == y[start : start + batch_size]).cpu()
        except Exception as err:  # noqa: BLE001 - a model may refuse such inputs
            return error_summary(err)

    # Under torch.distributed each batch of each convention is evaluated by one process.
    outcomes = shared_map(len(conventions) * batches, outcome)
    trials = []
    for number, convention in enumerate(conventions):
        parts = outcomes[number * batches : (number + 1) * batches]
        error = next((part for part in parts if isinstance(part, str)), None)
        if error is not None:
            # A model that refuses inputs outside what it expects says nothing about its
            # convention: the trial is recorded as not run, never as evidence.
            trials.append(ConventionTrial(convention, None, error))
        else:
            correct = [part for part in parts if isinstance(part, Tensor)]
            trials.append(ConventionTrial(convention, torch.cat(correct)))
    return tuple(trials)
