"""Flatness of a trained classifier's minimum: Fisher-Rao norm, Hessian trace and spectrum,
loss-landscape slices and ε-sharpness, each with its standard error and provenance.

A model is any ``nn.Module`` mapping inputs to logits. Every stochastic estimator takes a
target precision and a budget and stops at whichever comes first, saying which
(``stopped_by``): the Fisher-Rao norms and the Hessian trace draw a fresh mini-batch for each
observation (doubly stochastic, `flatness.draws`), Lanczos stops when the requested
eigenvalues have converged by their residual bounds, the spectral density adds runs until its
standard error is small enough, and the density and the landscape slices use samples of their
own. Every estimator runs in eval mode by default (or in train mode with dropout-family layers
active and batch norm frozen, Monte-Carlo averaged), draws randomness only from the
``torch.Generator`` it is given, and leaves the model's parameters, buffers and mode as it
found them. Under torch.distributed (``torchrun``, every rank holding the whole data set) the
batches of each pass, and the draws, are split between the ranks, and every rank returns
exactly the result of a single process.

Each estimator returns its record of the result document, declared in ``core.flatrecords``
(`fisher_rao_norm` a ``FisherRaoEstimate``, `hutchinson_trace` a ``TraceEstimate``,
`hessian_eigenvalues` ``Eigenvalues``, `spectral_density` a ``SpectralDensity``,
`loss_landscape` a ``Landscape``, `epsilon_sharpness` a ``SharpnessEstimate``), and `measure` a
``FlatnessResult``; ``core.docfields.encode`` gives the JSON the document holds. A quantity that
is undefined (the standard error of a single observation) is None.
"""

from flatness.core import Mode
from flatness.draws import StoppedBy
from flatness.fisher_rao import Fisher, fisher_rao_norm
from flatness.hessian import (
    TraceMethod,
    hessian_eigenvalues,
    hessian_pass,
    hutchinson_trace,
    spectral_density,
)
from flatness.landscape import filter_normalized_direction, loss_landscape
from flatness.sharpness import epsilon_sharpness
from flatness.stats import MeanAccumulator
from flatness.suite import FlatnessConfig, Measure, Unit, measure

__all__ = [
    "Fisher",
    "FlatnessConfig",
    "MeanAccumulator",
    "Measure",
    "Mode",
    "StoppedBy",
    "TraceMethod",
    "Unit",
    "epsilon_sharpness",
    "filter_normalized_direction",
    "fisher_rao_norm",
    "hessian_eigenvalues",
    "hessian_pass",
    "hutchinson_trace",
    "loss_landscape",
    "measure",
    "spectral_density",
]
