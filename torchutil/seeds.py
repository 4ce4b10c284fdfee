"""Explicit generators on a device, seeds drawn from them, and the global RNG seeded from them.

Every draw names its device: a generator draws on its own device, whatever torch's default
device is, and a tensor meant for another device is moved there after the draw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

SEED_BOUND = 2**62
"""Seeds are drawn uniformly from ``[0, SEED_BOUND)``."""

_MASK64 = 2**64 - 1


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A generator on ``device`` (default the CPU, never torch's default device) seeded with
    ``seed``."""
    return torch.Generator(device=torch.device("cpu") if device is None else device).manual_seed(
        int(seed)
    )


def draw_seeds(generator: torch.Generator, count: int, bound: int = SEED_BOUND) -> list[int]:
    """``count`` seeds in ``[0, bound)`` from ``generator``, drawn on its device."""
    return torch.randint(0, bound, (count,), generator=generator, device=generator.device).tolist()


def draw_seed(generator: torch.Generator, bound: int = SEED_BOUND) -> int:
    """One seed in ``[0, bound)`` from ``generator``, drawn on its device."""
    return int(draw_seeds(generator, 1, bound)[0])


def child_generator(
    generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Generator:
    """A generator seeded from ``generator``, on ``device`` (default: the parent's device)."""
    return make_generator(draw_seed(generator), generator.device if device is None else device)


def splitmix64(value: int) -> int:
    """Steele, Lea and Flood's SplitMix64 finaliser of ``value`` (taken modulo 2^64).

    A bijection of 64-bit integers in which every input bit changes about half of the output
    bits; the mixing step of ``mix_seeds``.
    """
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seeds(*values: int) -> int:
    """One 32-bit seed from integers, e.g. ``(stage seed, sample id, stream)``.

    ``h = 0``, then ``h = splitmix64(h ^ (v mod 2^64))`` for each value ``v`` in order; the
    seed is the high 32 bits of ``h``. Every value changes the seed, and so the stream, of a
    generator seeded with it. A CPU generator (mt19937) keeps only 32 bits of its seed, so the
    seed has only those: two of ``n`` keys share a seed with probability about ``n^2 / 2^33``.
    """
    state = 0
    for value in values:
        state = splitmix64(state ^ (int(value) & _MASK64))
    return state >> 32


def keyed_generators(seed: int, keys: Sequence[int], stream: int) -> list[torch.Generator]:
    """One CPU generator per key, seeded with ``mix_seeds(seed, key, stream)``.

    A key's generator depends on ``seed``, the key and ``stream`` only, never on the other
    keys or their order: the draws of a sample keyed by its identity are the same in every
    batch it falls in.
    """
    return [make_generator(mix_seeds(seed, key, stream)) for key in keys]


@contextlib.contextmanager
def forked_global_rng(device: torch.device) -> Iterator[None]:
    """Torch's global RNG state (the CPU's, and ``device``'s on CUDA) is restored afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def seeded_global_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seeds the global RNG with ``seed`` for the duration and restores its state afterwards.

    Code we do not control (stochastic layers, pyautoattack, torchattacks) draws from the
    global RNG; seeding it from an explicit generator makes those draws reproducible while
    leaving the caller's global state untouched. ``None`` (nothing random) leaves it alone.
    """
    if seed is None:
        yield
        return
    with forked_global_rng(device):
        torch.manual_seed(seed)
        yield


class RngState:
    """The state of explicit generators and of torch's global RNG (the CPU's, and ``device``'s
    on CUDA), to restore when a computation is redone (after an out-of-memory error) so that
    it draws what it drew the first time."""

    def __init__(self, generators: Sequence[torch.Generator], device: torch.device) -> None:
        self._generators = [(g, g.get_state()) for g in generators]
        self._cpu = torch.get_rng_state()
        self._device = device
        self._cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        for generator, state in self._generators:
            generator.set_state(state)
        torch.set_rng_state(self._cpu)
        if self._cuda is not None:
            torch.cuda.set_rng_state(self._cuda, self._device)
