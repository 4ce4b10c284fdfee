"""Loss-landscape slices along random filter-normalised directions (Li et al. 2018)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from core.flatrecords import Landscape
from flatness.core import (
    FunctionalModel,
    Mode,
    batches,
    check_data,
    check_mc_samples,
    check_positive,
    defined,
    dropout_seeds,
    gaussian,
    in_mode,
    loss_pass,
    make_provenance,
    own_sample,
    parse_mode,
)
from flatness.stats import MeanAccumulator
from torchutil import shared_map

Grid = tuple[float | None, ...] | tuple[tuple[float | None, ...], ...]


def filter_normalized_direction(
    params: dict[str, Tensor], generator: torch.Generator
) -> dict[str, Tensor]:
    """A Gaussian direction rescaled filter by filter to the norms of θ's filters.

    A filter is one slice along the first (output) dimension of a weight with two or more
    dimensions. Parameters with one dimension or fewer (biases, batch-norm scales) get a zero
    direction, as in Li et al.'s reference code, so that the slice does not move them.

    Args:
        params: θ by name.
        generator: Source of the Gaussian entries.

    Returns:
        The direction by name, each entry shaped like its parameter.
    """
    direction = {}
    for name, param in params.items():
        if param.ndim <= 1:
            direction[name] = torch.zeros_like(param)
            continue
        noise = gaussian(tuple(param.shape), generator, param)
        filter_norms = param.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-12)
        direction[name] = noise * filter_norms.view(-1, *([1] * (param.ndim - 1)))
    return direction


def loss_landscape(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    num_directions: int = 1,
    num_points: int = 21,
    span: float = 1.0,
    sample_size: int | None = None,
    batch_size: int = 256,
    mode: Mode | str = Mode.EVAL,
    num_mc_samples: int = 1,
) -> Landscape:
    """Loss along one or two random filter-normalised directions through θ.

    Args:
        model: Maps inputs ``[B, ...]`` to logits ``[B, K]``.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        generator: Source of the directions (and of dropout draws in train mode).
        num_directions: 1 (a curve) or 2 (a surface).
        num_points: Grid points G per direction, from ``-span`` to ``span``.
        span: Largest step, in units of the filter-normalised direction.
        sample_size: Samples evaluated at every point, a random sample of the N drawn once
            and shared by all points (a picture of the landscape needs fewer samples than a
            figure with a small standard error); None or at least N: all of them.
        batch_size: Samples per forward pass.
        mode: ``"eval"`` or ``"train"`` (then every point averages the same fixed dropout draws,
            so the surface is not roughened by fresh noise at each point).
        num_mc_samples: Dropout draws per batch in train mode.

    Returns:
        The G step sizes used along each direction (``coordinates``, ascending, 0 included
        when G is odd); the mean loss over the samples (``losses``), its standard error
        (``loss_stderrs``) and the accuracy (``accuracies``) at each point, ``[G]`` for one
        direction or ``[G][G]`` for two (row i is a = coordinates[i], column j is
        b = coordinates[j]), None where undefined (a standard error of one sample); and
        ``sample_size``, the samples evaluated at every point.
    """
    mode = parse_mode(mode)
    check_data(x, y, batch_size)
    check_mc_samples(mode, num_mc_samples)
    check_positive("span", span)
    if num_directions not in (1, 2):
        raise ValueError(f"num_directions must be 1 or 2, got {num_directions}")
    if num_points < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}")
    if sample_size is not None:
        check_positive("sample_size", sample_size)
    fmodel = FunctionalModel(model)
    directions = [
        filter_normalized_direction(fmodel.params, generator) for _ in range(num_directions)
    ]
    coordinates = torch.linspace(
        -span, span, num_points, dtype=torch.float64, device="cpu"
    ).tolist()
    sample_x, sample_y = own_sample(x, y, sample_size, generator)
    data = list(batches(sample_x, sample_y, batch_size, fmodel))
    seeds = [dropout_seeds(generator, mode, num_mc_samples) for _ in data]
    grids = [coordinates] if num_directions == 1 else [coordinates, coordinates]

    def point(index: int) -> tuple[float, float, float]:
        """The mean loss, its standard error and the accuracy at grid point ``index``."""
        step = points[index]
        params = {
            name: value + sum(c * d[name] for c, d in zip(step, directions, strict=True))
            for name, value in fmodel.params.items()
        }
        result = loss_pass(fmodel, data, params, seeds, sharded=False)
        summary = MeanAccumulator()
        summary.update(result.losses)
        return summary.mean, summary.stderr, result.correct.mean().item()

    # Under torch.distributed each point is computed whole by one process and the values are
    # gathered: a point's sample is often one batch, which splitting by batch would leave to
    # one process while the other waits.
    points = list(itertools.product(*grids))
    with in_mode(model, mode):
        values = shared_map(len(points), point)
    losses, stderrs, accuracies = (list(column) for column in zip(*values, strict=True))
    definition = (
        f"mean cross-entropy at θ + Σ_k c_k d_k for {num_directions} random filter-normalised "
        "direction(s) d_k (Li et al. 2018; biases and other 1-D parameters held fixed), over "
        f"{'all the samples' if sample_x.shape[0] == x.shape[0] else 'a random sample of them'}"
    )
    return Landscape(
        coordinates=tuple(coordinates),
        losses=_shape(losses, num_directions, num_points),
        loss_stderrs=_shape(stderrs, num_directions, num_points),
        accuracies=_shape(accuracies, num_directions, num_points),
        num_directions=num_directions,
        sample_size=sample_x.shape[0],
        provenance=make_provenance(x, y, batch_size, mode, num_mc_samples, generator, definition),
    )


def _shape(values: list[float], num_directions: int, num_points: int) -> Grid:
    """The values of the points as a curve or a surface, None where undefined."""
    points = [defined(value) for value in values]
    if num_directions == 1:
        return tuple(points)
    return tuple(tuple(points[i : i + num_points]) for i in range(0, len(points), num_points))
