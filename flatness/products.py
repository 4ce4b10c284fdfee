"""The Hessian of the loss over a data set, accessed only through its products with vectors.

The Hessian is that of L(θ) = (1/N) Σ_i CE(f_θ(x_i), y_i) with respect to all trainable
parameters. Its products with vectors are computed forward-over-reverse (``torch.func.jvp`` of
``torch.func.grad``), batch by batch and weighted by batch size. Several probe vectors share
one pass over the data through ``torch.func.vmap``, so the forward and backward pass of the
loss itself is paid once per pass rather than once per probe. The trace (`flatness.hessian`),
the eigenvalues (`flatness.eigenvalues`) and the spectral density (`flatness.density`) all
reach the Hessian through these products.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, vmap

from flatness.core import (
    FunctionalModel,
    Mode,
    batches,
    dropout_seeds,
    in_mode,
    rademacher,
    seeded_global_rng,
    sharded_sweep,
)
from torchutil import make_generator

HESSIAN = "Hessian of the mean cross-entropy over the data w.r.t. all trainable parameters"
# Probes sharing a pass hold this many numbers at most when their count is left to us (256 MB
# in float32): beyond it the shared forward pass saves little and memory grows with every probe.
_AUTO_PROBE_NUMBERS = 2**26
FIXED_DRAWS = "; in train mode, of the loss averaged over fixed dropout draws per batch"


class HessianOperator:
    """The linear map v ↦ H v of the Hessian of the mean loss over ``(x, y)``.

    Must be used while the model is in the intended mode (see `flatness.core.in_mode`).

    Args:
        fmodel: The model as a function of its trainable parameters.
        x: Inputs ``[N, ...]``.
        y: Labels ``[N]``.
        batch_size: Samples per forward-over-reverse pass.
        probes_per_pass: Vectors pushed through one pass together (memory grows with it).
        mode: In train mode each product averages ``num_mc_samples`` dropout draws per batch.
        num_mc_samples: Dropout draws per batch (1 in eval mode).
        generator: Source of the dropout draws.
        fixed_draws: Reuse the same draws for every product, so that the operator is one fixed
            symmetric matrix (needed by Lanczos); otherwise every product draws afresh, which
            keeps Hutchinson's probes independent.
        sharded: Under torch.distributed, split the batches of every product between the
            ranks, each of which gets the whole product (`flatness.core.sharded_sweep`);
            otherwise every rank computes its products alone.

    Attributes:
        dim: Number of parameters d.
        num_matvecs: Vectors multiplied so far.
    """

    def __init__(
        self,
        fmodel: FunctionalModel,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        probes_per_pass: int,
        mode: Mode,
        num_mc_samples: int,
        generator: torch.Generator,
        fixed_draws: bool,
        sharded: bool = True,
    ) -> None:
        self.fmodel = fmodel
        self._sharded = sharded
        self.dim = fmodel.dim
        self.num_matvecs = 0
        self._data = list(batches(x, y, batch_size, fmodel))
        self._probes_per_pass = probes_per_pass
        self._mode = mode
        self._num_mc_samples = num_mc_samples
        self._generator = generator
        # Seeds drawn once here make every product use the same dropout masks.
        self._fixed_seeds = (
            [dropout_seeds(generator, mode, num_mc_samples) for _ in self._data]
            if fixed_draws
            else None
        )

    def matvec(self, vectors: Tensor) -> Tensor:
        """Hessian-vector products ``[P, d] -> [P, d]``."""
        products = [self._pass(chunk, False) for chunk in vectors.split(self._probes_per_pass)]
        self.num_matvecs += vectors.shape[0]
        # A single chunk is returned as it is: concatenating it would copy a [P, d] result.
        return products[0] if len(products) == 1 else torch.cat(products)

    def quadratic_forms(self, vectors: Tensor) -> Tensor:
        """``vᵀ H v`` for each row of ``[P, d]``, as ``[P]``.

        Sums ``vᵀ H_b v`` batch by batch, so no parameter-sized product is ever accumulated:
        the memory is that of one batch's Hessian-vector product.
        """
        values = [self._pass(chunk, True) for chunk in vectors.split(self._probes_per_pass)]
        self.num_matvecs += vectors.shape[0]
        return torch.cat(values)

    def _pass(self, vectors: Tensor, quadratic: bool) -> Tensor:
        tangents = self.fmodel.unflatten(vectors)
        total = vectors.new_zeros(vectors.shape[0]) if quadratic else torch.zeros_like(vectors)
        # Drawn for every batch on every rank, so that the generator stays in step.
        seeds = [
            self._fixed_seeds[index]
            if self._fixed_seeds is not None
            else dropout_seeds(self._generator, self._mode, self._num_mc_samples)
            for index in range(len(self._data))
        ]

        def term(index: int, draw: int) -> list[Tensor]:
            x_b, y_b, _ = self._data[index]
            with seeded_global_rng(seeds[index][draw], self.fmodel.device):
                products = self._batch_hvp(x_b, y_b, tangents)
            if quadratic:
                forms = sum(_rowwise_dot(products[n], tangents[n]) for n in products)
                return [cast(Tensor, forms)]
            return [self.fmodel.flatten(products, batch_dims=1)]

        def fold(index: int, draw: int, parts: list[Tensor]) -> None:
            total.add_(parts[0], alpha=self._data[index][2] / len(seeds[index]))

        draws = [len(batch_seeds) for batch_seeds in seeds]
        layout = [(tuple(total.shape), total.dtype)]
        sharded_sweep(
            draws, term, fold, lambda _: layout, self.fmodel.device, sharded=self._sharded
        )
        return total

    def _batch_hvp(self, x: Tensor, y: Tensor, tangents: dict[str, Tensor]) -> dict[str, Tensor]:
        return batch_hvp(self.fmodel, x, y, tangents)


def batch_hvp(
    fmodel: FunctionalModel, x: Tensor, y: Tensor, tangents: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Products of the Hessian of the mean loss over ``(x, y)`` with ``P`` tangents
    (``{name: [P, *shape]}``), forward-over-reverse, in one pass (``torch.func.vmap``)."""

    def loss(params: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(fmodel(params, x), y)

    def hvp(tangent: dict[str, Tensor]) -> dict[str, Tensor]:
        return jvp(grad(loss), (fmodel.params,), (tangent,))[1]

    # One dropout draw per pass: the primal computation does not depend on the probe.
    return vmap(hvp, randomness="same")(tangents)


def batch_quadratic_forms(fmodel: FunctionalModel, x: Tensor, y: Tensor, vectors: Tensor) -> Tensor:
    """``vᵀ H v`` for each row of ``vectors [P, d]``, H the Hessian of the mean loss over
    ``(x, y)``: ``[P]``."""
    tangents = fmodel.unflatten(vectors)
    products = batch_hvp(fmodel, x, y, tangents)
    return cast(Tensor, sum(_rowwise_dot(products[n], tangents[n]) for n in products))


def _rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    """``[P, ...] · [P, ...] -> [P]`` without an elementwise product of the full size."""
    return torch.bmm(a.reshape(a.shape[0], 1, -1), b.reshape(b.shape[0], -1, 1)).flatten()


def vectors_like(fmodel: FunctionalModel) -> Tensor:
    """A scalar carrying the dtype and device that parameter-sized vectors must have."""
    return torch.empty((), dtype=fmodel.dtype, device=fmodel.device)


def fixed_operator(
    fmodel: FunctionalModel,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    mode: Mode,
    num_mc_samples: int,
    generator: torch.Generator,
) -> HessianOperator:
    return HessianOperator(
        fmodel,
        x,
        y,
        batch_size=batch_size,
        probes_per_pass=1,
        mode=mode,
        num_mc_samples=num_mc_samples,
        generator=generator,
        fixed_draws=True,
    )


def hessian_pass(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """One eval-mode pass of Hessian-vector products over ``(x, y)`` as a single batch, with
    as many probes as Hutchinson's trace pushes through one pass: the largest step any
    estimator here takes, whose peak memory sets the batch size that fits (see
    ``torchutil.choose_batch_size``). Under torch.distributed every rank runs the pass
    itself: it measures the rank's own memory."""
    fmodel = FunctionalModel(model)
    with in_mode(model, Mode.EVAL):
        probes = default_probes_per_pass(fmodel.dim)
        generator = make_generator(0)
        operator = HessianOperator(
            fmodel,
            x,
            y,
            batch_size=x.shape[0],
            probes_per_pass=probes,
            mode=Mode.EVAL,
            num_mc_samples=1,
            generator=generator,
            fixed_draws=False,
            sharded=False,
        )
        operator.quadratic_forms(rademacher((probes, fmodel.dim), generator, vectors_like(fmodel)))


def default_probes_per_pass(dim: int) -> int:
    """Up to 8 probes per pass, fewer when they would exceed ``_AUTO_PROBE_NUMBERS``."""
    return max(1, min(8, _AUTO_PROBE_NUMBERS // dim))
