"""Plumbing shared by the flatness estimators.

A model is seen as a pure function of its trainable parameters through
``torch.func.functional_call``: estimators never write to ``module.parameters()``, and
buffers are passed as clones, so the model's state is the same afterwards by construction.
The module's train/eval flags are set for the duration of an estimator and restored exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

import torchutil
from core.flatrecords import MeasureProvenance

# Shared with attacks through torchutil; the estimators import them from here.
from torchutil import draw_seeds as draw_seeds
from torchutil import seeded_global_rng as seeded_global_rng


class Mode(StrEnum):
    """Which forward pass an estimator differentiates.

    ``EVAL``: ``model.eval()``, deterministic. ``TRAIN``: dropout-family layers (anything gated
    on ``self.training``) are active and Monte-Carlo averaged, while batch norm stays frozen at
    its running statistics so that no buffer changes and samples stay independent.
    """

    EVAL = "eval"
    TRAIN = "train"


def parse_mode(mode: Mode | str) -> Mode:
    """Converts the string form of a mode, naming the known ones on failure."""
    try:
        return Mode(mode)
    except ValueError:
        known = ", ".join(repr(m.value) for m in Mode)
        raise ValueError(f"mode must be one of {known}, got {mode!r}") from None


def in_mode(model: nn.Module, mode: Mode) -> AbstractContextManager[None]:
    """Puts ``model`` into ``mode`` (batch norm frozen in train mode) and restores every
    submodule's own flag afterwards (`torchutil.model_mode`)."""
    return torchutil.model_mode(model, train=mode is Mode.TRAIN)


class FunctionalModel:
    """A module as a pure function ``(params, x) -> logits`` of its trainable parameters.

    Args:
        model: Any module mapping inputs ``[B, ...]`` to logits ``[B, K]``.

    Attributes:
        params: Detached trainable parameters, by name: the point θ the estimators work at.
        constants: Frozen parameters and clones of the buffers, passed unchanged to every call.
        names, shapes, numels: Layout used to flatten parameter dictionaries into vectors.
        dim: Number of trainable scalars d.
    """

    def __init__(self, model: nn.Module) -> None:
        trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        if not trainable:
            raise ValueError(
                "model must have trainable parameters, got none with requires_grad=True; "
                "fix: call requires_grad_(True) on the parameters to be measured"
            )
        self.model = model
        self.params = trainable
        frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        self.constants = frozen | {n: b.clone() for n, b in model.named_buffers()}
        self.names = tuple(trainable)
        self.shapes = tuple(p.shape for p in trainable.values())
        self.numels = tuple(p.numel() for p in trainable.values())
        self.dim = sum(self.numels)
        first = next(iter(trainable.values()))
        self.device = first.device
        self.dtype = first.dtype

    def __call__(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.model, (params, self.constants), (x,))

    def flatten(self, tree: dict[str, Tensor], batch_dims: int = 0) -> Tensor:
        """``{name: [*batch, *shape]}`` -> ``[*batch, d]``."""
        batch = next(iter(tree.values())).shape[:batch_dims]
        return torch.cat([tree[n].reshape(*batch, -1) for n in self.names], dim=-1)

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """``[*batch, d]`` -> ``{name: [*batch, *shape]}`` (views, no copy)."""
        batch = vector.shape[:-1]
        chunks = vector.split(self.numels, dim=-1)
        pieces = zip(self.names, chunks, self.shapes, strict=True)
        return {name: chunk.reshape(*batch, *shape) for name, chunk, shape in pieces}


def check_data(x: Tensor, y: Tensor, batch_size: int) -> None:
    """Rejects data that cannot be a labelled classification set."""
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(
            f"x must be a batch of inputs [N, ...] with N >= 1, got shape {tuple(x.shape)}; "
            "fix: add a leading batch dimension"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.is_floating_point:
        raise ValueError(
            f"y must be integer class labels of shape [{x.shape[0]}], got {y.dtype} of shape "
            f"{tuple(y.shape)}; fix: pass y.long() with one label per input"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")


def batches(
    x: Tensor, y: Tensor, batch_size: int, fmodel: FunctionalModel
) -> Iterator[tuple[Tensor, Tensor, float]]:
    """Yields ``(x_b, y_b, weight_b)`` with the weights ``N_b / N`` summing to one.

    Inputs are moved to the parameters' device and floating dtype, so a float64 model can be
    measured on float32 data.
    """
    total = x.shape[0]
    dtype = fmodel.dtype if x.dtype.is_floating_point else x.dtype
    for start in range(0, total, batch_size):
        x_b = x[start : start + batch_size].to(device=fmodel.device, dtype=dtype)
        y_b = y[start : start + batch_size].to(device=fmodel.device, dtype=torch.long)
        yield x_b, y_b, x_b.shape[0] / total


def fingerprint(x: Tensor, y: Tensor) -> str:
    """Short SHA-256 of the data, recorded so that two estimates can be matched to their data."""
    digest = hashlib.sha256()
    for tensor in (x, y):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def dropout_seeds(generator: torch.Generator, mode: Mode, num_mc_samples: int) -> list[int | None]:
    """Seeds of one batch's dropout draws: ``num_mc_samples`` in train mode, ``[None]`` in eval."""
    if mode is Mode.EVAL:
        return [None]
    return list(draw_seeds(generator, num_mc_samples))


def rademacher(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Independent ±1 entries with the dtype and device of ``like``.

    Drawn in place in the target dtype: an int64 intermediate would be twice the size of a
    float32 probe, which matters for probes with 10⁸ entries.
    """
    signs = torch.empty(shape, dtype=like.dtype, device=generator.device)
    signs.bernoulli_(0.5, generator=generator).mul_(2).sub_(1)
    return signs.to(like.device)


def gaussian(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal entries with the dtype and device of ``like``."""
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return noise.to(like.device)


def own_sample(
    x: Tensor, y: Tensor, sample_size: int | None, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A random sample of ``sample_size`` of the N samples (in their order), drawn from
    ``generator``; all of them (and no draw) when ``sample_size`` is None or at least N."""
    if sample_size is None or sample_size >= x.shape[0]:
        return x, y
    chosen = torch.randperm(x.shape[0], generator=generator, device=generator.device)
    chosen = chosen[:sample_size].sort().values.to(x.device)
    return x[chosen], y[chosen]


def check_positive(name: str, value: int | float) -> None:
    """Rejects a count, budget or size that must be positive."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value}")


def defined(value: float) -> float | None:
    """A number of an estimate where the document allows None: None when it is undefined (NaN,
    or infinite: the standard error of a single observation, the interval around it), else
    the value as a float.

    The estimators build their records (``core.flatrecords``) with it for every field that
    may be None, so the document holds ``null`` there, never a NaN; a field that must hold a
    number (an estimate's ``value``, an eigenvalue) keeps a NaN, and the document writes it
    as ``"NaN"`` (``core.docjson.NONFINITE_TOKENS``).
    """
    return float(value) if math.isfinite(value) else None


def check_mc_samples(mode: Mode, num_mc_samples: int) -> None:
    """Rejects Monte-Carlo averaging where there is nothing random to average."""
    check_positive("num_mc_samples", num_mc_samples)
    if mode is Mode.EVAL and num_mc_samples != 1:
        raise ValueError(
            f"num_mc_samples must be 1 in eval mode (the model is deterministic), got "
            f"{num_mc_samples}; fix: pass mode='train' to average over dropout draws"
        )


def make_provenance(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    mode: Mode,
    num_mc_samples: int,
    generator: torch.Generator,
    definition: str,
) -> MeasureProvenance:
    """The provenance of an estimate over ``(x, y)``."""
    return MeasureProvenance(
        num_samples=x.shape[0],
        batch_size=batch_size,
        data_fingerprint=fingerprint(x, y),
        mode=mode.value,
        num_mc_samples=num_mc_samples,
        seed=generator.initial_seed(),
        definition=definition,
    )


@dataclasses.dataclass(frozen=True)
class LossPass:
    """Per-sample results of one sweep over the data at one parameter point.

    Attributes:
        losses: Cross-entropy per sample ``[N]`` (averaged over dropout draws in train mode).
        correct: Fraction of draws in which the sample is classified correctly ``[N]``.
    """

    losses: Tensor
    correct: Tensor


Batches = list[tuple[Tensor, Tensor, float]]


def loss_pass(
    fmodel: FunctionalModel,
    data: Batches,
    params: dict[str, Tensor],
    seeds: list[list[int | None]],
    *,
    sharded: bool = True,
) -> LossPass:
    """Evaluates the per-sample loss over ``data`` at ``params``.

    Args:
        fmodel: The model as a function of its parameters.
        data: Batches from `batches`.
        params: The parameter point, by name.
        seeds: Per batch, the dropout seeds to average over (`dropout_seeds`). Reusing the same
            seeds at every point compares losses under common random numbers, so differences
            between points are not drowned by dropout noise.
        sharded: False computes every batch in this process (`sharded_sweep`), for a caller
            that shares out whole passes instead.
    """
    return _sweep(fmodel, data, params, seeds, None, sharded=sharded)


def loss_and_gradient(
    fmodel: FunctionalModel,
    data: Batches,
    params: dict[str, Tensor],
    seeds: list[list[int | None]],
) -> tuple[LossPass, dict[str, Tensor]]:
    """`loss_pass` plus the gradient of the mean loss by parameter name."""
    gradient = {n: torch.zeros_like(p) for n, p in params.items()}
    return _sweep(fmodel, data, params, seeds, gradient), gradient


def _sweep(
    fmodel: FunctionalModel,
    data: Batches,
    params: dict[str, Tensor],
    seeds: list[list[int | None]],
    gradient: dict[str, Tensor] | None,
    *,
    sharded: bool = True,
) -> LossPass:
    """One pass over the data; accumulates the mean loss's gradient into ``gradient``."""
    losses = [
        torch.zeros(x_b.shape[0], dtype=fmodel.dtype, device=fmodel.device) for x_b, *_ in data
    ]
    correct = [torch.zeros_like(batch_losses) for batch_losses in losses]

    def term(index: int, draw: int) -> list[Tensor]:
        x_b, y_b, _ = data[index]
        with seeded_global_rng(seeds[index][draw], fmodel.device):
            if gradient is None:
                with torch.no_grad():
                    logits = fmodel(params, x_b)
                per_sample = F.cross_entropy(logits, y_b, reduction="none")
                step = []
            else:
                values, (per_sample, logits) = grad(_mean_loss, has_aux=True)(
                    params, fmodel, x_b, y_b
                )
                step = [values[name] for name in fmodel.names]
        hits = (logits.argmax(dim=-1) == y_b).to(fmodel.dtype)
        return [per_sample.detach(), hits, *step]

    def fold(index: int, draw: int, parts: list[Tensor]) -> None:
        count = len(seeds[index])
        if gradient is not None:
            weight = data[index][2]
            for name, value in zip(fmodel.names, parts[2:], strict=True):
                gradient[name] += value * (weight / count)
        losses[index] += parts[0] / count
        correct[index] += parts[1] / count

    def layout(index: int) -> TermLayout:
        size = ((data[index][0].shape[0],), fmodel.dtype)
        steps = (
            []
            if gradient is None
            else [(tuple(gradient[n].shape), gradient[n].dtype) for n in fmodel.names]
        )
        return [size, size, *steps]

    sharded_sweep(
        [len(draws) for draws in seeds], term, fold, layout, fmodel.device, sharded=sharded
    )
    return LossPass(torch.cat(losses), torch.cat(correct))


TermLayout = list[tuple[tuple[int, ...], torch.dtype]]
"""Shapes and dtypes of the tensors one term of a batch consists of."""


def sharded_sweep(
    draws: list[int],
    term: Callable[[int, int], list[Tensor]],
    fold: Callable[[int, int, list[Tensor]], None],
    layout: Callable[[int], TermLayout],
    device: torch.device,
    *,
    sharded: bool = True,
) -> None:
    """Folds ``term(b, k)`` for every batch b and draw ``k < draws[b]``, in that order.

    In one process this is ``fold(b, k, term(b, k))`` for each b and k. Under
    torch.distributed (every rank holding the whole data and calling with the same
    arguments) batch b, of the single process's batching, is computed only by rank
    ``b % world_size``, and its terms are sent to every rank, which folds all terms in the
    single process's order. So batch composition and dropout seeds are those of one process,
    and since a fold is the estimator's own accumulation (a running sum over batches, a
    `MeanAccumulator` update), every rank ends with the state one process reaches, bit for
    bit: the same floating-point operations in the same order.

    Terms are sent instead of all-reducing each rank's partial sums because a sum in another
    order differs in its last bits, and Lanczos amplifies such differences without bound
    once Ritz values converge: reduced partial Hessian-vector products moved a float32
    model's second eigenvalue from 0.89 to 0.68 and a float64 quadrature weight from 0.017
    to 1e-18. The cost is memory for one term (besides the rank's own) and, per pass,
    sending every term once; computing a term (a batch's forward and backward passes) takes
    far longer than sending it.

    Args:
        draws: Per batch, the number of terms (dropout draws) it contributes.
        term: ``(batch, draw) -> tensors``, the batch's contribution; called only on the
            batch's rank. Laid out as ``layout(batch)`` says.
        fold: ``(batch, draw, tensors)``: adds a term to the state, on every rank, in order.
        layout: Per batch, the shape and dtype of each tensor of its terms, so that the ranks
            that receive a term know what arrives.
        device: Where received terms are put (the model's device).
        sharded: False makes every rank compute every batch itself, as one process does
            (for a pass that measures one rank's own cost).
    """
    world = torchutil.world_size() if sharded else 1
    if world == 1:
        for index, count in enumerate(draws):
            for draw in range(count):
                fold(index, draw, term(index, draw))
        return
    me = torchutil.rank()
    for start in range(0, len(draws), world):
        mine = start + me
        # Every rank computes its own batch of the round first, so they all work at once.
        own = [term(mine, draw) for draw in range(draws[mine])] if mine < len(draws) else []
        for index in range(start, min(start + world, len(draws))):
            owner = index - start
            for draw in range(draws[index]):
                parts = own[draw] if owner == me else None
                fold(index, draw, _send_term(parts, layout(index), device, owner))
        del own


def _send_term(
    parts: list[Tensor] | None, layout: TermLayout, device: torch.device, owner: int
) -> list[Tensor]:
    """The owner's ``parts`` on every rank (the owner passes them, the others None); tensors
    of one dtype travel packed in one message."""
    if len({dtype for _, dtype in layout}) > 1:
        if parts is None:
            parts = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in layout]
        return [torchutil.broadcast_tensor(part, owner) for part in parts]
    if parts is not None:
        if len(parts) > 1:
            torchutil.broadcast_tensor(torch.cat([p.reshape(-1) for p in parts]), owner)
        else:
            torchutil.broadcast_tensor(parts[0], owner)
        return parts
    sizes = [math.prod(shape) for shape, _ in layout]
    packed = torch.empty(sum(sizes), dtype=layout[0][1], device=device)
    torchutil.broadcast_tensor(packed, owner)
    pieces = packed.split(sizes)
    return [piece.view(shape) for piece, (shape, _) in zip(pieces, layout, strict=True)]


def _mean_loss(
    params: dict[str, Tensor], fmodel: FunctionalModel, x: Tensor, y: Tensor
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    logits = fmodel(params, x)
    per_sample = F.cross_entropy(logits, y, reduction="none")
    return per_sample.mean(), (per_sample.detach(), logits.detach())
