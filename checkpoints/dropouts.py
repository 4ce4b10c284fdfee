"""The dropout-family layers that model synaptic failure: NormOut, QSD and plain dropout.

Each layer is a pure function (``normout``, ``qsd``, ``dropout``) plus a thin ``nn.Module``
gated on ``self.training``: in eval mode every layer is the identity. Randomness comes from an
explicit ``torch.Generator`` when one is given (the module's ``generator`` attribute), so a
stochastic forward pass can be reproduced exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORMOUT_METHODS = ("temporal", "spatial", "spatiotemporal")
QSD_VARIANTS = ("full", "dist_p", "dist_q")


def _rand_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator)


# --------------------------------------------------------------------------------------- NormOut


def _normout_dims(x: Tensor, method: str) -> tuple[int, ...]:
    if x.dim() not in (2, 4):
        raise ValueError(
            f"NormOut expects a 2-D [N, D] or 4-D [N, C, H, W] input, got shape {tuple(x.shape)}"
        )
    if method == "temporal":
        return (0,)
    if method == "spatial":
        return (1,)
    if method == "spatiotemporal":
        return (0, 1)
    raise ValueError(f"NormOut method must be one of {NORMOUT_METHODS}, got {method!r}")


def normout_keep_probability(
    x: Tensor, method: str, use_abs: bool = True, temperature: float | None = None
) -> Tensor:
    """Keep probability of every element of ``x`` under NormOut.

    ``temporal`` normalises by the maximum over the batch (dim 0) for each unit (each
    (C, H, W) position of a 4-D input); ``spatial`` by the maximum over dim 1 (units or
    channels) for each sample and each (h, w); ``spatiotemporal`` by the maximum over both.

    Args:
        x: activations, [N, D] or [N, C, H, W].
        method: one of ``temporal``, ``spatial``, ``spatiotemporal``.
        use_abs: normalise |a| rather than a.
        temperature: if given, the softmax variant p = exp((|a| - max) / T), computed stably
            (the exponent is never positive). Without it, p = |a| / max.

    Returns:
        Probabilities in [0, 1], same shape as ``x``. A zero (or, without ``use_abs``,
        non-positive) maximum keeps nothing and produces no NaN.
    """
    dims = _normout_dims(x, method)
    a = x.detach()
    if use_abs:
        a = a.abs()
    peak = a.amax(dim=dims, keepdim=True)
    if temperature is not None:
        if not temperature > 0:
            raise ValueError(f"NormOut temperature must be positive, got {temperature}")
        # Unlike a softmax normalised by a sum over the batch, exp((a - max) / T) never
        # overflows: the exponent is at most zero.
        prob = torch.exp((a - peak) / temperature)
    else:
        positive = peak > 0
        prob = a / torch.where(positive, peak, torch.ones_like(peak))
        prob = torch.where(positive, prob, torch.zeros_like(prob))
    return prob.clamp(0.0, 1.0)


def normout(
    x: Tensor,
    method: str = "spatiotemporal",
    use_abs: bool = True,
    temperature: float | None = None,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """NormOut: keep each unit with probability |a| / max (no rescaling).

    Args:
        x: activations, [N, D] or [N, C, H, W].
        method, use_abs, temperature: see :func:`normout_keep_probability`.
        training: when False the layer is the identity.
        generator: source of the uniform draws.

    Returns:
        ``x`` times a 0/1 mask, same shape; gradients flow only through kept units.
    """
    if not training:
        return x
    prob = normout_keep_probability(x, method, use_abs, temperature)
    mask = _rand_like(prob, generator) < prob
    return x * mask.to(x.dtype)


class NormOut(nn.Module):
    """Module form of :func:`normout`; identity in eval mode."""

    def __init__(
        self, method: str = "spatiotemporal", use_abs: bool = True, temperature: float | None = None
    ) -> None:
        super().__init__()
        if method not in NORMOUT_METHODS:
            raise ValueError(f"NormOut method must be one of {NORMOUT_METHODS}, got {method!r}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"NormOut temperature must be positive, got {temperature}")
        self.method = method
        self.use_abs = use_abs
        self.temperature = None if temperature is None else float(temperature)
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        return normout(
            x, self.method, self.use_abs, self.temperature, self.training, self.generator
        )

    def extra_repr(self) -> str:
        text = f"method={self.method}, use_abs={self.use_abs}"
        return text if self.temperature is None else f"{text}, temperature={self.temperature}"


# ------------------------------------------------------------------------------------------- QSD


def _sample_log_gamma(
    shape: torch.Tensor, size: torch.Size, generator: torch.Generator | None
) -> Tensor:
    """log of Gamma(shape, 1) samples by Marsaglia and Tsang, boosted for shape < 1.

    Working in log space keeps very small shapes (which underflow to exactly 0 in linear
    space) usable for the Beta ratio.
    """
    device, dtype = shape.device, torch.float64
    a = shape.to(dtype).expand(size)
    boosted = a < 1
    d = torch.where(boosted, a + 1, a) - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    result = torch.empty(size, dtype=dtype, device=device)
    pending = torch.ones(size, dtype=torch.bool, device=device)
    while bool(pending.any()):
        idx = pending.nonzero(as_tuple=True)
        n = idx[0].numel()
        z = torch.randn(n, dtype=dtype, device=device, generator=generator)
        u = torch.rand(n, dtype=dtype, device=device, generator=generator)
        di, ci = d[idx], c[idx]
        v = (1 + ci * z) ** 3
        ok = (v > 0) & (
            torch.log(u) < 0.5 * z * z + di - di * v + di * torch.log(v.clamp_min(1e-300))
        )
        accepted = tuple(i[ok] for i in idx)
        result[accepted] = torch.log(di[ok]) + torch.log(v[ok])
        pending[accepted] = False
    u = torch.rand(size, dtype=dtype, device=device, generator=generator)
    boost = torch.log(u.clamp_min(1e-300)) / a
    return torch.where(boosted, result + boost, result)


def sample_beta(
    alpha: float,
    beta: float,
    size: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Beta(alpha, beta) samples from an explicit generator, float64, shape ``size``.

    ``torch.distributions.Beta`` cannot take a generator; this uses X / (X + Y) with
    X ~ Gamma(alpha), Y ~ Gamma(beta), evaluated as a sigmoid of log X - log Y.
    """
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"Beta parameters must be positive, got alpha={alpha}, beta={beta}")
    size = torch.Size(size)
    log_x = _sample_log_gamma(torch.tensor(float(alpha), device=device), size, generator)
    log_y = _sample_log_gamma(torch.tensor(float(beta), device=device), size, generator)
    return torch.sigmoid(log_x - log_y)


def _qsd_beta(drop_rate: float, alpha: float) -> float:
    if not 0.0 < drop_rate < 1.0:
        raise ValueError(f"QSD drop_rate must be in (0, 1), got {drop_rate}")
    if not alpha > 0:
        raise ValueError(f"QSD alpha (homogeneity) must be positive, got {alpha}")
    mean_retain = 1.0 - drop_rate
    return alpha * (1.0 - mean_retain) / mean_retain


def qsd_expected_coefficient(drop_rate: float, alpha: float, variant: str = "full") -> float:
    """E[c] for QSD: 1 + beta / (alpha (alpha + beta + 1)) for ``full``, 1 for the ablations."""
    beta = _qsd_beta(drop_rate, alpha)
    if variant == "full":
        return 1.0 + beta / (alpha * (alpha + beta + 1.0))
    if variant in ("dist_p", "dist_q"):
        return 1.0
    raise ValueError(f"QSD variant must be one of {QSD_VARIANTS}, got {variant!r}")


def qsd_coefficients(
    shape: torch.Size | tuple[int, ...],
    drop_rate: float,
    alpha: float,
    variant: str = "full",
    unit_expectation: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """QSD multipliers c (Bhumbra 2020, eq. 5), one per element, freshly drawn.

    With mean retain probability p̄ = 1 - d and beta = alpha (1 - p̄) / p̄:

    - ``full``: p_i ~ Beta(alpha, beta), m_i ~ Bernoulli(p_i), c_i = m_i p_i / p̄².
    - ``dist_p``: p_i distributed, q fixed at 1 / p̄: c_i = m_i / p̄.
    - ``dist_q``: p fixed at p̄, q_i = p_i / p̄²: m_i ~ Bernoulli(p̄), c_i = m_i p_i / p̄².

    ``unit_expectation`` divides c by E[c] (only changes ``full``).
    """
    beta = _qsd_beta(drop_rate, alpha)
    mean_retain = 1.0 - drop_rate
    if variant not in QSD_VARIANTS:
        raise ValueError(f"QSD variant must be one of {QSD_VARIANTS}, got {variant!r}")
    p = sample_beta(alpha, beta, shape, generator, device)
    u = torch.rand(torch.Size(shape), dtype=torch.float64, device=device, generator=generator)
    if variant == "full":
        coeff = (u < p) * p / mean_retain**2
    elif variant == "dist_p":
        coeff = (u < p) / mean_retain
    else:
        coeff = (u < mean_retain) * p / mean_retain**2
    if unit_expectation:
        coeff = coeff / qsd_expected_coefficient(drop_rate, alpha, variant)
    return coeff.to(dtype)


def qsd(
    x: Tensor,
    drop_rate: float = 0.2,
    alpha: float = 0.2,
    variant: str = "full",
    unit_expectation: bool = False,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Quantal synaptic dilution: ``x * c`` with c from :func:`qsd_coefficients`.

    Identity when ``training`` is False. Gradients flow only through kept units.
    """
    if not training:
        return x
    coeff = qsd_coefficients(
        x.shape, drop_rate, alpha, variant, unit_expectation, generator, x.dtype, x.device
    )
    return x * coeff


class QSD(nn.Module):
    """Module form of :func:`qsd`; identity in eval mode."""

    def __init__(
        self,
        drop_rate: float = 0.2,
        alpha: float = 0.2,
        variant: str = "full",
        unit_expectation: bool = False,
    ) -> None:
        super().__init__()
        qsd_expected_coefficient(drop_rate, alpha, variant)  # validates all three
        self.drop_rate = float(drop_rate)
        self.alpha = float(alpha)
        self.variant = variant
        self.unit_expectation = unit_expectation
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        return qsd(
            x,
            self.drop_rate,
            self.alpha,
            self.variant,
            self.unit_expectation,
            self.training,
            self.generator,
        )

    def extra_repr(self) -> str:
        return (
            f"drop_rate={self.drop_rate}, alpha={self.alpha}, variant={self.variant}, "
            f"unit_expectation={self.unit_expectation}"
        )


# --------------------------------------------------------------------------------------- Dropout


def dropout(
    x: Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = _rand_like(x, generator) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class Dropout(nn.Module):
    """Module form of :func:`dropout`; identity in eval mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
