"""Threat models: the norm, the epsilons and the input bounds, and the geometry of each norm.

The geometry of a norm is written once here and shared by every attack: a random start inside
the ball, the normalisation of a gradient into a unit step, and the projection of a point onto
the epsilon ball intersected with the input box. Epsilons are per sample (a tensor of shape
``[N]``) so that one batch can mix epsilons, restarts and targets.

Random draws come from a ``RandomSource``: one ``torch.Generator`` that draws the whole batch
at once, or a sequence of CPU generators, one per sample (row), each drawing that sample's
values alone. With one generator per sample, a sample's draws do not depend on the batch it
falls in, its position there or the other samples: the native attacks draw this way.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor


class Norm(Enum):
    """The norm that measures a perturbation. Strings ``"linf"``/``"l2"`` at the edge."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: Norm | str) -> Norm:
        """Turn ``"linf"``/``"l2"`` (any case) or a ``Norm`` into a ``Norm``.

        Raises:
            ValueError: for an unknown name; the message lists the known ones.
        """
        if isinstance(value, Norm):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            known = ", ".join(repr(n.value) for n in cls)
            raise ValueError(f"norm must be one of {known}, got {value!r}") from None


@dataclass(frozen=True)
class Bounds:
    """The box every input lives in, normally ``[0, 1]`` pixels."""

    lower: float = 0.0
    upper: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"bounds must be finite, got ({self.lower}, {self.upper})")
        if self.lower >= self.upper:
            raise ValueError(
                f"bounds must satisfy lower < upper, got ({self.lower}, {self.upper}); "
                "pass Bounds(0.0, 1.0) for pixels in [0, 1]"
            )

    @classmethod
    def parse(cls, value: Bounds | Sequence[float]) -> Bounds:
        """Accept a ``Bounds`` or a pair ``(lower, upper)``."""
        if isinstance(value, Bounds):
            return value
        if len(value) != 2:
            raise ValueError(f"bounds must be a pair (lower, upper), got {value!r}")
        return cls(float(value[0]), float(value[1]))


Epsilons = float | Iterable[float]
"""One epsilon (``0.3``), or ascending epsilons (``[0.1, 0.3]``) for one call to evaluate."""


def check_epsilons(epsilons: Epsilons | Tensor) -> tuple[float, ...]:
    """Validate epsilons: one number, or a non-empty, finite, non-negative and strictly
    ascending list of them.

    This is the attacks' contract, for any caller: epsilon 0 is allowed (the ball is the
    clean input itself, a well-defined evaluation), and a repeat is refused (each epsilon is
    one column of the result).
    An audit's user-given epsilons pass a stricter check first,
    ``analysis.epsilons.ascending_epsilons``, which also refuses 0: the audit reports the clean
    accuracy anyway.

    Returns:
        The epsilons as a tuple of floats (one value for a single number).

    Raises:
        ValueError: naming what was expected, what arrived and the fix.
        TypeError: neither a number nor a list of numbers.
    """
    if isinstance(epsilons, bool | str | bytes):
        raise TypeError(
            f"epsilons must be a number or a list of numbers, got {epsilons!r}; pass e.g. 0.3 "
            "or [0.1, 0.3]"
        )
    if isinstance(epsilons, numbers.Real) or getattr(epsilons, "ndim", None) == 0:
        epsilons = [float(epsilons)]  # type: ignore[arg-type]
    try:
        values = tuple(float(e) for e in epsilons)  # type: ignore[union-attr]
    except TypeError:
        raise TypeError(
            f"epsilons must be a number or a list of numbers, got {type(epsilons).__name__}; "
            "pass e.g. 0.3 or [0.1, 0.3]"
        ) from None
    if not values:
        raise ValueError("epsilons must hold at least one value, got []; pass e.g. [0.3]")
    if any(not math.isfinite(e) or e < 0 for e in values):
        raise ValueError(f"epsilons must be finite and non-negative, got {list(values)}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(
            f"epsilons must be non-negative and ascending, got {list(values)}; "
            f"pass {sorted(set(values))}"
        )
    return values


def check_inputs(x: Tensor, y: Tensor, bounds: Bounds) -> None:
    """Check a batch before an attack: shapes agree, labels are integers, pixels in the bounds.

    Args:
        x: inputs ``[N, ...]``, floating point, inside ``bounds``.
        y: labels ``[N]``, integer.
        bounds: the input box.
    """
    if not x.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"inputs must have shape [N, ...] with N samples, got {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have shape [N] = [{x.shape[0]}], got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {y.dtype}")
    if x.numel() and (x.min().item() < bounds.lower or x.max().item() > bounds.upper):
        raise ValueError(
            f"inputs must lie in the bounds [{bounds.lower}, {bounds.upper}], got values in "
            f"[{x.min().item():.4g}, {x.max().item():.4g}]; pass unnormalised pixels and "
            "normalise inside the model"
        )


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape ``[N]`` values so that they broadcast against ``like`` of shape ``[N, ...]``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _clamp_(x: Tensor, radius: Tensor) -> Tensor:
    """``x.clamp_(-radius, radius)`` for a broadcast ``radius``, the same values, several times
    faster on CPU (``clamp`` with tensor bounds takes a slow broadcasting path)."""
    return torch.minimum(torch.maximum(x, -radius, out=x), radius, out=x)


def _flat_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(p=2, dim=1)


RandomSource = torch.Generator | Sequence[torch.Generator]
"""One generator for a whole batch, or one CPU generator per row (sample) of the draws."""


def _per_row(
    shape: Sequence[int], like: Tensor, generators: Sequence[torch.Generator], normal: bool
) -> Tensor:
    """Row ``i`` of the draws from ``generators[i]`` alone, drawn on the CPU, then moved."""
    shape = tuple(shape)
    if not shape or shape[0] != len(generators):
        raise ValueError(
            f"per-sample draws need one generator per row: {len(generators)} generators for "
            f"draws of shape {shape}"
        )
    out = torch.empty(shape, dtype=like.dtype, device="cpu")
    for row, generator in zip(out, generators, strict=True):
        if generator.device.type != "cpu":
            raise ValueError(
                f"per-sample generators draw on the CPU, got one on {generator.device}; "
                "seed them with torchutil.keyed_generators"
            )
        if normal:
            row.normal_(generator=generator)
        else:
            row.uniform_(generator=generator)
    return out.to(like.device)


def uniform(shape: Sequence[int], like: Tensor, source: RandomSource) -> Tensor:
    """Uniform draws in ``[0, 1)`` from ``source``, with ``like``'s dtype and device.

    A single generator draws on its own device; a sequence of generators draws row ``i``
    (``shape[0]`` rows) from its ``i``-th, on the CPU.
    """
    if not isinstance(source, torch.Generator):
        return _per_row(shape, like, source, normal=False)
    out = torch.rand(tuple(shape), generator=source, dtype=like.dtype, device=source.device)
    return out.to(like.device)


def normal(shape: Sequence[int], like: Tensor, source: RandomSource) -> Tensor:
    """Standard normal draws from ``source`` (as for ``uniform``), ``like``'s dtype and device."""
    if not isinstance(source, torch.Generator):
        return _per_row(shape, like, source, normal=True)
    out = torch.randn(tuple(shape), generator=source, dtype=like.dtype, device=source.device)
    return out.to(like.device)


class Geometry:
    """What an attack needs to know about a norm. Subclasses: ``LinfGeometry``, ``L2Geometry``."""

    norm: Norm

    def random_start(self, x0: Tensor, eps: Tensor, source: RandomSource) -> Tensor:
        """A point drawn uniformly from the ball around ``x0`` (not yet clipped to the box).

        Args:
            x0: centres ``[N, ...]``.
            eps: radii ``[N]``.
            source: a generator, or one CPU generator per sample. Per sample, L∞ draws
                ``x0[0].numel()`` uniforms; L2 that many normals (the direction) and then one
                uniform (the radius).
        """
        raise NotImplementedError

    def normalize(self, grad: Tensor) -> Tensor:
        """Turn a gradient ``[N, ...]`` into the steepest-ascent step of unit norm."""
        raise NotImplementedError

    def project_ball(self, x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
        """Project ``x`` onto the ball of radius ``eps`` ``[N]`` around ``x0``."""
        raise NotImplementedError

    def surface_draw(self, x0: Tensor, eps: Tensor, source: RandomSource, draw: int) -> Tensor:
        """One random-noise candidate: a corner or interior point (L∞) or a sphere point (L2).

        ``surface_point(x0, eps, surface_noise(x0.shape, x0, source), draw)``.

        Args:
            x0: centres ``[N, ...]``.
            eps: radii ``[N]``.
            source: a generator, or one CPU generator per sample.
            draw: the index of the draw; L∞ alternates corners (even) and interior (odd).
        """
        return self.surface_point(x0, eps, self.surface_noise(x0.shape, x0, source), draw)

    def surface_noise(self, shape: Sequence[int], like: Tensor, source: RandomSource) -> Tensor:
        """The raw draws that ``surface_point`` turns into candidates: uniforms in ``[0, 1)``
        (L∞) or standard normals (L2) of ``shape``, from ``source`` (see ``uniform``)."""
        raise NotImplementedError

    def surface_point(self, x0: Tensor, eps: Tensor, noise: Tensor, draw: int) -> Tensor:
        """The candidate of ``surface_draw`` made from raw draws ``noise`` ``[N, ...]``.

        Args:
            x0: centres ``[N, ...]``.
            eps: radii ``[N]``.
            noise: from ``surface_noise``, of ``x0``'s shape; not modified.
            draw: the index of the draw; L∞ alternates corners (even) and interior (odd).
        """
        raise NotImplementedError

    def distance(self, x: Tensor, x0: Tensor) -> Tensor:
        """Per-sample distance ``[N]`` between ``x`` and ``x0``."""
        raise NotImplementedError

    def unbounded_epsilon(self, sample_shape: Sequence[int], bounds: Bounds) -> float:
        """An epsilon whose ball around any point of the box contains the whole box."""
        raise NotImplementedError

    def project(self, x: Tensor, x0: Tensor, eps: Tensor, bounds: Bounds) -> Tensor:
        """Project onto the ball around ``x0`` and then clip to the box.

        Clipping after the ball projection keeps the point inside the ball because ``x0`` is
        inside the box: clipping only moves coordinates towards ``x0``.
        """
        return self.project_ball(x, x0, eps).clamp_(bounds.lower, bounds.upper)

    def slack(self, x0: Tensor, eps: Tensor, bounds: Bounds) -> Tensor:
        """Float rounding allowed beyond ``eps`` ``[N]`` when a distance is measured.

        A point built as ``x0 + delta`` with ``|delta| <= eps`` measures ``(x0 + delta) - x0``,
        which rounding can put a few units in the last place above ``eps``: 4 machine epsilons
        relative to ``eps`` and to the scale of the box (times the square root of the number
        of coordinates under L2, whose rounding errors add up).
        """
        scale = max(abs(bounds.lower), abs(bounds.upper), 1.0)
        if self.norm is Norm.L2:
            scale *= math.sqrt(x0[0].numel())
        return 4 * torch.finfo(x0.dtype).eps * (eps + scale)

    def enforce(self, x: Tensor, x0: Tensor, eps: Tensor, bounds: Bounds) -> Tensor:
        """``x`` brought inside the ball of radius ``eps`` ``[N]`` around ``x0`` and the box.

        Samples already inside (up to ``slack``) keep their values bit for bit, except that
        coordinates outside the box are clipped (clipping leaves inside values unchanged);
        samples outside are projected with ``project``. Non-finite coordinates are replaced by
        those of ``x0`` first.

        Returns:
            A new tensor ``[N, ...]``; ``x`` is not modified.
        """
        x = torch.where(torch.isfinite(x), x, x0)
        outside = self.distance(x, x0) > eps + self.slack(x0, eps, bounds)
        if bool(outside.any()):
            projected = self.project(x[outside], x0[outside], eps[outside], bounds)
            x[outside] = projected
        return x.clamp_(bounds.lower, bounds.upper)

    def ascend(
        self, x: Tensor, grad: Tensor, step: Tensor, x0: Tensor, eps: Tensor, bounds: Bounds
    ) -> Tensor:
        """One projected steepest-ascent step: ``project(x + step * normalize(grad))``.

        Args:
            x: current points ``[N, ...]``.
            grad: their gradients ``[N, ...]``; overwritten (the step is built in its memory).
            step: step lengths ``[N]``.
            x0, eps, bounds: as for ``project``.
        """
        return self.project(x + _per_sample(step, x) * self.normalize(grad), x0, eps, bounds)


class LinfGeometry(Geometry):
    norm = Norm.LINF

    def random_start(self, x0: Tensor, eps: Tensor, source: RandomSource) -> Tensor:
        noise = uniform(x0.shape, x0, source).mul_(2).sub_(1)
        return x0 + noise * _per_sample(eps, x0)

    def normalize(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def project_ball(self, x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
        return x0 + _clamp_(x - x0, _per_sample(eps, x0))

    def project(self, x: Tensor, x0: Tensor, eps: Tensor, bounds: Bounds) -> Tensor:
        # Under L∞ ball and box are both coordinate-wise, so clamping the offset and then the
        # point is the exact projection onto their intersection. The order of operations is
        # that of torchattacks and cleverhans, so results agree with theirs to the last bit.
        radius = _per_sample(eps, x0)
        delta = _clamp_(x - x0, radius)
        return (x0 + delta).clamp_(bounds.lower, bounds.upper)

    def ascend(
        self, x: Tensor, grad: Tensor, step: Tensor, x0: Tensor, eps: Tensor, bounds: Bounds
    ) -> Tensor:
        # ``project(x + step * sign(grad))`` in place, operation for operation (each operation
        # is commutative or the same), so it agrees with ``project`` to the last bit.
        radius = _per_sample(eps, x0)
        out = grad.contiguous().sign_().mul_(_per_sample(step, x)).add_(x).sub_(x0)
        return _clamp_(out, radius).add_(x0).clamp_(bounds.lower, bounds.upper)

    def surface_noise(self, shape: Sequence[int], like: Tensor, source: RandomSource) -> Tensor:
        return uniform(shape, like, source)

    def surface_point(self, x0: Tensor, eps: Tensor, noise: Tensor, draw: int) -> Tensor:
        offset = noise.mul(2).sub_(1)
        if draw % 2 == 0:
            offset = offset.sign_()
        return x0 + offset * _per_sample(eps, x0)

    def distance(self, x: Tensor, x0: Tensor) -> Tensor:
        return (x - x0).flatten(1).abs().amax(dim=1)

    def unbounded_epsilon(self, sample_shape: Sequence[int], bounds: Bounds) -> float:
        return bounds.upper - bounds.lower


class L2Geometry(Geometry):
    norm = Norm.L2

    def random_start(self, x0: Tensor, eps: Tensor, source: RandomSource) -> Tensor:
        direction = normal(x0.shape, x0, source)
        direction = direction / _per_sample(_flat_norm(direction), x0)
        dim = x0[0].numel()
        # Radius eps * U^(1/d) makes the point uniform in the ball's volume.
        radius = eps * uniform((x0.shape[0],), x0, source).pow(1.0 / dim)
        return x0 + direction * _per_sample(radius, x0)

    def normalize(self, grad: Tensor) -> Tensor:
        # Dividing by the norm however small it is (only an exactly zero gradient gives a zero
        # step) lets an L2 step move where the gradient has nearly vanished, as a sign step does.
        norms = _flat_norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)
        return grad / _per_sample(norms, grad)

    def project_ball(self, x: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
        delta = x - x0
        norms = _flat_norm(delta)
        factor = torch.where(norms > eps, eps / norms.clamp_min(torch.finfo(x.dtype).tiny), 1.0)
        return x0 + delta * _per_sample(factor, x0)

    def ascend(
        self, x: Tensor, grad: Tensor, step: Tensor, x0: Tensor, eps: Tensor, bounds: Bounds
    ) -> Tensor:
        # ``project(x + step * normalize(grad))`` in place, with the same operations.
        grad = grad.contiguous()
        norms = _flat_norm(grad).clamp_min(torch.finfo(grad.dtype).tiny)
        delta = grad.div_(_per_sample(norms, grad)).mul_(_per_sample(step, x)).add_(x).sub_(x0)
        delta_norms = _flat_norm(delta)
        factor = torch.where(
            delta_norms > eps, eps / delta_norms.clamp_min(torch.finfo(x.dtype).tiny), 1.0
        )
        return delta.mul_(_per_sample(factor, x0)).add_(x0).clamp_(bounds.lower, bounds.upper)

    def surface_noise(self, shape: Sequence[int], like: Tensor, source: RandomSource) -> Tensor:
        return normal(shape, like, source)

    def surface_point(self, x0: Tensor, eps: Tensor, noise: Tensor, draw: int) -> Tensor:
        direction = noise / _per_sample(_flat_norm(noise), x0)
        return x0 + direction * _per_sample(eps, x0)

    def distance(self, x: Tensor, x0: Tensor) -> Tensor:
        return _flat_norm(x - x0)

    def unbounded_epsilon(self, sample_shape: Sequence[int], bounds: Bounds) -> float:
        # A radius beyond the box diameter: from any point of the box the whole box is inside.
        diameter = (bounds.upper - bounds.lower) * math.sqrt(math.prod(sample_shape))
        return 1.01 * diameter


_GEOMETRIES: dict[Norm, Geometry] = {Norm.LINF: LinfGeometry(), Norm.L2: L2Geometry()}


def geometry(norm: Norm | str) -> Geometry:
    """The geometry of ``norm`` (``Norm.LINF``/``"linf"`` or ``Norm.L2``/``"l2"``)."""
    return _GEOMETRIES[Norm.parse(norm)]
