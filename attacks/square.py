"""Square attack (Andriushchenko et al.), L∞ and L2: natively, or through pyautoattack.

A score-based black-box attack: no gradients, so gradient masking cannot hide from it. Each
epsilon attacks the samples still correctly classified.

``backend="native"`` (the default) is ``square_search``: the algorithm of pyautoattack's
``SquareAttack.attack_single_run`` (margin loss, its schedule of square sizes, its L∞ and L2
updates and start points), operation for operation, except that every sample draws its own
windows, signs and stencil orientations, where pyautoattack draws one window per iteration for
the whole batch. The draws come from the sample's stream (``attacks.engine``), so a sample's
result does not depend on its batch, and an evaluation set split across processes gives each
sample what one process gives it. Given pyautoattack's shared draws instead
(``PyautoattackDraws``), ``square_search`` returns pyautoattack's examples and query counts bit
for bit (tested), which is what shows the update is pyautoattack's.

``backend="pyautoattack"`` runs ``SquareAttack.attack_single_run`` itself, with a seed drawn
from the explicit generator; the global RNG it uses is restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from attacks.call import prepare, pyautoattack_norm
from attacks.engine import Batch, BatchResult, epsilon_stream
from attacks.losses import fooled, is_finite_rows, judged_margin, margin
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Norm
from torchutil import draw_seed, seeded_global_rng, torch_default_device

_STENCILS: dict[tuple[str, int, int, str], Tensor] = {}


def square_attack_class() -> type:
    """pyautoattack's ``SquareAttack`` with its L2/L1 window stencils memoised.

    ``eta_rectangles`` builds a fixed ``x × y`` stencil with a Python loop of small tensor
    operations at every iteration; it draws nothing, so caching it per size changes neither
    the random stream nor any result (the tests compare both classes bit for bit) and saves
    about 5 % of an L2 run's time on MNIST. ``margin_and_loss`` scores a query with NaN or
    Inf logits as the attacker's worst (finite logits: pyautoattack's values bit for bit).
    """
    from pyautoattack.square import SquareAttack

    class MemoisedSquareAttack(SquareAttack):
        def margin_and_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            # pyautoattack's margin (``z_y - max_{j != y} z_j``, the same operations), except
            # that a query whose logits are not finite scores the largest float, the worst
            # point for the attacker: never accepted, never counted as fooled, and the search
            # goes on. A NaN margin would drop the sample from the search (and an empty search
            # crashes pyautoattack's L2 step), an infinite logit would count as a success, and
            # +inf itself turns into NaN in pyautoattack's blend ``0 * margin + 1 * best``.
            if self.loss != "margin" or self.targeted:
                return super().margin_and_loss(x, y)
            logits = self.predict(x)
            worst = torch.finfo(logits.dtype).max
            value = torch.where(is_finite_rows(logits), margin(logits, y), worst)
            return value, value.clone()

        def eta_rectangles(self, x: int, y: int) -> Tensor:
            key = (self.norm, x, y, str(self.device))
            stencil = _STENCILS.get(key)
            if stencil is None:
                stencil = _STENCILS[key] = super().eta_rectangles(x, y)
            return stencil.clone()

    return MemoisedSquareAttack


SQUARE_BACKENDS = ("native", "pyautoattack")

LogitsFn = Callable[[Tensor], Tensor]


def square_margin(logits_fn: LogitsFn, x: Tensor, y: Tensor) -> Tensor:
    """The margin ``z_y - max_{j != y} z_j`` Square minimises (its loss too), with a query whose
    logits are not finite scored the largest float, the attacker's worst (as
    ``MemoisedSquareAttack.margin_and_loss``)."""
    logits = logits_fn(x)
    worst = torch.finfo(logits.dtype).max
    return torch.where(is_finite_rows(logits), margin(logits, y), worst)


def p_selection(p_init: float, iteration: int, num_queries: int, rescale: bool) -> float:
    """pyautoattack's schedule: the fraction of pixels a square covers at ``iteration``."""
    it = int(iteration / num_queries * 10000) if rescale else iteration
    bounds = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
    halvings = next((k for k, bound in enumerate(bounds) if it <= bound), len(bounds))
    return p_init / 2**halvings


def draw_width(norm: Norm, channels: int) -> int:
    """Uniforms per sample and iteration: L∞ the window's row and column and a sign per
    channel; L2 two windows' rows and columns, the stencil's orientation and a sign per channel."""
    return (2 if norm is Norm.LINF else 5) + channels


def _l2_tiles(h: int, w: int) -> list[tuple[int, int, int]]:
    """The L2 start's tiles ``(row, column, size)``: pyautoattack's grid of ``h // 5`` squares."""
    s = h // 5
    start = (h - s * 5) // 2
    return [(start + i * s, start + j * s, s) for i in range(h // s) for j in range(w // s)]


def start_width(norm: Norm, shape: Sequence[int]) -> int:
    """Uniforms per sample for the start point: L∞ a sign per channel and column (vertical
    stripes); L2 per tile of the grid its stencil's orientation and a sign per channel."""
    c, h, w = shape
    return c * w if norm is Norm.LINF else len(_l2_tiles(h, w)) * (1 + c)


class SquareDraws(Protocol):
    """Where ``square_search`` takes its uniforms in ``[0, 1)`` from (float32, on the device)."""

    def start(self, n: int, width: int) -> Tensor:
        """``[n, width]``: the start point's draws of the run's ``n`` samples."""
        ...

    def step(self, iteration: int, rows: Tensor, width: int) -> Tensor:
        """``[len(rows), width]``: the draws at ``iteration`` of the run's samples ``rows``."""
        ...


class SampleDraws:
    """Each sample's draws from its own CPU generator, in blocks of ``block`` iterations.

    A sample draws ``start_width`` uniforms at the start of a run, then, at every ``block``-th
    iteration it takes part in, a block ``[block, width]``. A sample still searching at an
    iteration has taken part in every earlier one, so its draws there are the same whatever
    the other samples do; and a sample in a later run finished every iteration of the earlier
    ones. Rows are the run's samples, ``generators[i]`` the ``i``-th's.
    """

    def __init__(
        self, generators: Sequence[torch.Generator], device: torch.device, block: int = 64
    ):
        self.generators = list(generators)
        self.device = device
        self.block = block
        self.buffer: Tensor | None = None

    def _rows(self, rows: Sequence[int], shape: tuple[int, ...]) -> Tensor:
        drawn = [torch.rand(shape, generator=self.generators[r], device="cpu") for r in rows]
        return torch.stack(drawn).to(self.device)

    def start(self, n: int, width: int) -> Tensor:
        if n != len(self.generators):
            raise ValueError(f"{len(self.generators)} generators for a run of {n} samples")
        self.buffer = torch.zeros(n, self.block, 0, device=self.device)
        return self._rows(range(n), (width,))

    def step(self, iteration: int, rows: Tensor, width: int) -> Tensor:
        assert self.buffer is not None, "start() comes first"
        if iteration % self.block == 0:
            if self.buffer.shape[2] != width:
                self.buffer = torch.zeros(
                    len(self.generators), self.block, width, device=self.device
                )
            self.buffer[rows] = self._rows(rows.tolist(), (self.block, width))
        return self.buffer[rows, iteration % self.block]


class PyautoattackDraws:
    """pyautoattack's draws, in its order, from torch's global CPU RNG: one window, stencil
    orientation and (L∞) sign set per iteration for all samples. With these, ``square_search``
    is ``SquareAttack.attack_single_run``; used to show that, not to attack."""

    def __init__(self, norm: Norm, channels: int, device: torch.device):
        self.norm, self.channels, self.device = norm, channels, device

    def start(self, n: int, width: int) -> Tensor:
        if self.norm is Norm.LINF:
            return _cpu_rand(n, width).to(self.device)  # random_choice([n, c, 1, w])
        tiles = []
        for _ in range(width // (1 + self.channels)):
            flag = _cpu_rand(1)  # eta(s)'s transposition, then random_choice([n, c, 1, 1])
            tiles += [flag.expand(n, 1), _cpu_rand(n, self.channels)]
        return torch.cat(tiles, dim=1).to(self.device)

    def step(self, iteration: int, rows: Tensor, width: int) -> Tensor:
        m = rows.numel()
        if self.norm is Norm.LINF:
            shared = torch.cat([_cpu_rand(1), _cpu_rand(1), _cpu_rand(self.channels)])
            return shared.expand(m, width).to(self.device)
        windows = torch.cat([_cpu_rand(1) for _ in range(5)]).expand(m, 5)
        return torch.cat([windows, _cpu_rand(m, self.channels)], dim=1).to(self.device)


def _cpu_rand(*shape: int) -> Tensor:
    return torch.rand(shape, device="cpu")  # torch's global CPU RNG, where pyautoattack draws


def _signs(u: Tensor) -> Tensor:
    return torch.sign(2 * u - 1)  # pyautoattack's random_choice


def _position(u: Tensor, span: int) -> Tensor:
    return (0 + span * u).long()  # pyautoattack's random_int(0, span)


def _window_index(vh: Tensor, vw: Tensor, s: int, c: int) -> tuple[Tensor, ...]:
    """Advanced index of each sample's ``s × s`` window at ``(vh, vw)``: ``[m, c, s, s]``."""
    device = vh.device
    offsets = torch.arange(s, device=device)
    rows, cols = vh[:, None] + offsets, vw[:, None] + offsets
    return (
        torch.arange(vh.numel(), device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    )


def _window_mask(vh: Tensor, vw: Tensor, s: int, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """``[m, 1, h, w]``: 1 inside each sample's window, 0 elsewhere."""
    r, q = torch.arange(h, device=vh.device), torch.arange(w, device=vh.device)
    inside_r = (r >= vh[:, None]) & (r < vh[:, None] + s)
    inside_q = (q >= vw[:, None]) & (q < vw[:, None] + s)
    return (inside_r[:, :, None] & inside_q[:, None, :]).unsqueeze(1).to(dtype)


def _stencil(s: int, device: torch.device) -> Tensor:
    """pyautoattack's L2 stencil ``eta(s)`` before its random transposition, ``[s, s]``."""
    helper = square_attack_class()(None, norm="L2", eps=1.0, device=device)
    with torch_default_device():  # eta_rectangles makes a tensor on the default device
        delta = torch.zeros([s, s], device=device)
        delta[: s // 2] = helper.eta_rectangles(s // 2, s)
        delta[s // 2 :] = -1.0 * helper.eta_rectangles(s - s // 2, s)
        delta /= (delta**2).sum(dim=(0, 1), keepdim=True).sqrt()
    return delta


def _oriented(stencil: Tensor, flags: Tensor) -> Tensor:
    """``[m, 1, s, s]``: the stencil, transposed where ``flags`` (``u > 0.5``) is set."""
    return torch.where(flags[:, None, None, None], stencil.t(), stencil)


def _l2_normalize(x: Tensor) -> Tensor:
    t = (x**2).view(x.shape[0], -1).sum(-1).sqrt()
    return x / (t.view(-1, 1, 1, 1) + 1e-12)


def _l2_norm(x: Tensor) -> Tensor:
    return (x**2).view(x.shape[0], -1).sum(-1).sqrt().view(-1, 1, 1, 1)


def square_search(
    logits_fn: LogitsFn,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: Norm,
    draws: SquareDraws,
    *,
    num_queries: int = 5000,
    p_init: float = 0.8,
    rescale_schedule: bool = False,
) -> tuple[Tensor, Tensor]:
    """One run of Square on images ``x`` ``[n, C, H, W]`` in ``[0, 1]`` with labels ``y``.

    pyautoattack's ``attack_single_run`` with the margin loss, each sample drawing its own
    window (and L2 stencil orientation and second window) from ``draws``.

    Returns:
        ``(queries, x_best)``: per sample the queries used (float, 1 for the start, one per
        iteration while not fooled) and the best point found (the first that fooled it, or the
        lowest margin).
    """
    n, c, h, w = x.shape
    n_features = c * h * w
    with torch.no_grad():
        u = draws.start(n, start_width(norm, (c, h, w)))
        if norm is Norm.LINF:
            x_best = torch.clamp(x + eps * _signs(u).view(n, c, 1, w).to(x.dtype), 0.0, 1.0)
        else:
            delta_init = torch.zeros_like(x)
            tiles = _l2_tiles(h, w)
            stencil = _stencil(tiles[0][2], x.device)
            u = u.view(n, len(tiles), 1 + c)
            for t, (vh0, vw0, s0) in enumerate(tiles):
                piece = _oriented(stencil, u[:, t, 0] > 0.5) * _signs(u[:, t, 1:]).view(n, c, 1, 1)
                delta_init[:, :, vh0 : vh0 + s0, vw0 : vw0 + s0] += piece
            x_best = torch.clamp(x + _l2_normalize(delta_init) * eps, 0.0, 1.0)
        margin_min = square_margin(logits_fn, x_best, y)
        loss_min = margin_min.clone()
        queries = torch.ones(n, device=x.device)
        stencils: dict[int, Tensor] = {}
        width = draw_width(norm, c)
        # The samples still searching, and their state gathered once: pyautoattack gathers and
        # scatters it at every iteration, but its rows only change when a sample is fooled
        # (about 4 % of an L2 run's time on MNIST's LeNet-5, where most samples search to the
        # end). Every value is computed as pyautoattack does; only where it is kept differs.
        idx = (margin_min > 0.0).nonzero().flatten()
        x_curr, x_best_curr, y_curr = x[idx], x_best[idx], y[idx]
        margin_min_curr, loss_min_curr, queries_curr = margin_min[idx], loss_min[idx], queries[idx]

        def write_back(rows: Tensor, keep: Tensor | slice) -> None:
            x_best[rows] = x_best_curr[keep]
            margin_min[rows], loss_min[rows] = margin_min_curr[keep], loss_min_curr[keep]
            queries[rows] = queries_curr[keep]

        for iteration in range(num_queries):
            if idx.numel() == 0:
                break
            m = idx.numel()
            u = draws.step(iteration, idx, width)
            p = p_selection(p_init, iteration, num_queries, rescale_schedule)
            if norm is Norm.LINF:
                s = min(max(int(round(math.sqrt(p * n_features / c))), 1), min(h, w))
                vh, vw = _position(u[:, 0], h - s), _position(u[:, 1], w - s)
                mask = _window_mask(vh, vw, s, h, w, x.dtype)
                signs = _signs(u[:, 2:]).view(m, c, 1, 1).to(x.dtype)
                x_new = x_best_curr + mask * (2.0 * eps * signs)
                x_new = torch.min(torch.max(x_new, x_curr - eps), x_curr + eps)
                x_new = torch.clamp(x_new, 0.0, 1.0)
            else:
                s = max(int(round(math.sqrt(p * n_features / c))), 3)
                s = min(s + 1 if s % 2 == 0 else s, min(h, w))
                vh, vw = _position(u[:, 0], h - s), _position(u[:, 1], w - s)
                vh2, vw2 = _position(u[:, 2], h - s), _position(u[:, 3], w - s)
                delta_curr = x_best_curr - x_curr
                window = _window_index(vh, vw, s, c)
                old_window = delta_curr[window]
                norms_window_1 = (old_window**2).sum(dim=(-2, -1), keepdim=True).sqrt()
                mask_2 = _window_mask(vh2, vw2, s, h, w, x.dtype)
                norms_image = _l2_norm(delta_curr)
                mask_image = torch.max(_window_mask(vh, vw, s, h, w, x.dtype), mask_2)
                norms_windows = ((delta_curr * mask_image) ** 2).sum(dim=(-2, -1), keepdim=True)
                norms_windows = norms_windows.sqrt()
                if s not in stencils:
                    stencils[s] = _stencil(s, x.device)
                new_deltas = torch.ones([m, c, s, s], device=x.device, dtype=x.dtype)
                new_deltas *= _oriented(stencils[s], u[:, 4] > 0.5) * _signs(u[:, 5:]).view(
                    m, c, 1, 1
                )
                new_deltas += old_window / (1e-12 + norms_window_1)
                budget = torch.max(
                    (eps * torch.ones_like(new_deltas)) ** 2 - norms_image**2,
                    torch.zeros_like(new_deltas),
                )
                new_deltas = (
                    new_deltas
                    / (1e-12 + (new_deltas**2).sum(dim=(-2, -1), keepdim=True).sqrt())
                    * (budget / c + norms_windows**2).sqrt()
                )
                delta_curr = delta_curr.masked_fill(mask_2.bool(), 0.0)
                delta_curr[window] = new_deltas + 0
                x_new = torch.clamp(x_curr + _l2_normalize(delta_curr) * eps, 0.0, 1.0)
            new_margin = square_margin(logits_fn, x_new, y_curr)
            improved = (new_margin < loss_min_curr).float()
            loss_min_curr = improved * new_margin + (1.0 - improved) * loss_min_curr
            improved = torch.max(improved, (new_margin <= 0.0).float())
            margin_min_curr = improved * new_margin + (1.0 - improved) * margin_min_curr
            improved = improved.reshape([-1, 1, 1, 1])
            x_best_curr = improved * x_new + (1.0 - improved) * x_best_curr
            queries_curr += 1.0
            searching = margin_min_curr > 0.0
            if not bool(searching.all()):
                done = ~searching
                write_back(idx[done], done)
                idx = idx[searching]
                x_curr, x_best_curr, y_curr = (
                    x_curr[searching],
                    x_best_curr[searching],
                    y_curr[searching],
                )
                margin_min_curr, loss_min_curr = (
                    margin_min_curr[searching],
                    loss_min_curr[searching],
                )
                queries_curr = queries_curr[searching]
        write_back(idx, slice(None))
    return queries, x_best


def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    num_queries: int = 5000,
    p_init: float = 0.8,
    num_restarts: int = 1,
    rescale_schedule: bool = False,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    backend: str = "native",
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Square attack under L∞ or L2 for many epsilons in one call.

    Args:
        model: maps inputs ``[N, C, H, W]`` in ``[0, 1]`` to logits ``[N, classes]``.
        x: clean images ``[N, C, H, W]``; never modified.
        y: true labels ``[N]``.
        epsilons: one radius, or ascending, non-negative radii (a single number gives one
            row, K = 1).
        norm: ``"linf"`` or ``"l2"``.
        num_queries: iterations per restart (AutoAttack: 5000).
        p_init: initial fraction of pixels in a square (AutoAttack: 0.8).
        num_restarts: runs, each on the samples earlier runs did not fool.
        rescale_schedule: stretch the schedule of square sizes to ``num_queries`` (useful
            for small budgets); AutoAttack keeps the schedule of 10000 queries (False).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: must be ``(0, 1)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        backend: ``"native"`` (each sample's own draws) or ``"pyautoattack"`` (its code, one
            window per iteration for the whole batch).
        generator: a ``torch.Generator`` or an int seed (default 0).
        sample_ids: int64 ``[N]``, distinct: the samples' identities (default ``arange(N)``).
            Natively each sample draws from its own stream, so its result does not depend on
            its batch (``registry.batch_independent`` is True); pyautoattack draws per batch
            from torch's global RNG, so there it does.

    Returns:
        ``AttackResult`` with ``T = 1`` (the margin loss at the clean input and at the
        returned example; pyautoattack does not expose its iterations), ``queries`` as
        counted by pyautoattack and ``success_step`` from that count (the iteration of the
        run that fooled the sample; pyautoattack stops counting a sample once fooled).
    """
    if x.dim() != 4:
        raise ValueError(f"Square needs images [N, C, H, W], got shape {tuple(x.shape)}")
    if backend not in SQUARE_BACKENDS:
        raise ValueError(
            f"Square's backend must be one of {', '.join(SQUARE_BACKENDS)}, got {backend!r}"
        )
    if num_queries < 1 or num_restarts < 1 or not 0 < p_init <= 1:
        raise ValueError(
            "Square needs num_queries >= 1, num_restarts >= 1 and 0 < p_init <= 1, got "
            f"{num_queries}, {num_restarts}, {p_init}"
        )
    call = prepare(
        model, x, y, epsilons, (norm, bounds), (generator, sample_ids), unit_box="Square"
    )
    config = call.config
    evaluator = config.evaluator

    square_class = square_attack_class()

    def library_run(batch: Batch) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        square_attack = square_class(
            evaluator.logits,
            norm=pyautoattack_norm(config.norm),
            n_queries=num_queries,
            eps=float(batch.eps[0]),
            p_init=p_init,
            n_restarts=1,
            loss="margin",
            resc_schedule=rescale_schedule,
            device=x.device,
        )
        square_attack.init_hyperparam(batch.x0)

        def run(todo: Tensor) -> tuple[Tensor, Tensor]:
            # pyautoattack draws its noise on the default device and then moves it
            # (``torch.randn(x.shape).to(self.device)``), so it runs with torch's own default.
            with seeded_global_rng(draw_seed(config.generator), x.device), torch_default_device():
                return square_attack.attack_single_run(batch.x0[todo], batch.y[todo])

        return run

    def native_run(batch: Batch) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        streams = config.streams(batch.index, epsilon_stream(batch.k))

        def run(todo: Tensor) -> tuple[Tensor, Tensor]:
            # A sample in a later run searched through every iteration of the earlier ones,
            # so its generator is at the same place whatever the other samples did.
            draws = SampleDraws([streams[i] for i in todo.tolist()], x.device)
            return square_search(
                evaluator.logits,
                batch.x0[todo],
                batch.y[todo],
                float(batch.eps[0]),
                config.norm,
                draws,
                num_queries=num_queries,
                p_init=p_init,
                rescale_schedule=rescale_schedule,
            )

        return run

    def attack(batch: Batch) -> BatchResult:
        run = native_run(batch) if backend == "native" else library_run(batch)
        adversarial = batch.x0.clone()
        queries = torch.zeros_like(batch.y)
        # pyautoattack counts one query for the start point and one per iteration until a
        # sample is fooled, so a fooled sample's count minus one is the iteration of its run.
        last_run_queries = torch.zeros_like(batch.y)
        todo = torch.arange(batch.y.numel(), device=x.device)
        for restart in range(num_restarts):
            if restart > 0:
                logits = evaluator.logits(adversarial[todo])
                todo = todo[~fooled(logits, batch.y[todo])]
                if todo.numel() == 0:
                    break
            used, found = run(todo)
            adversarial[todo] = found
            queries[todo] += used.long()
            last_run_queries[todo] = used.long()
        logits = evaluator.logits(adversarial)
        broken = fooled(logits, batch.y)
        trace = torch.stack(
            [-judged_margin(batch.clean_logits, batch.y), -judged_margin(logits, batch.y)]
        )
        return BatchResult(
            adversarial=adversarial,
            logits=logits,
            last_success=broken,
            loss_trace=trace,
            queries=queries,
            success_step=torch.where(broken, last_run_queries - 1, -1),
        )

    return call.run(
        "square",
        attack,
        engine=(nested, batch_size, stochastic),
        trace_length=2,
        objective="cw",
        params={
            "num_queries": num_queries,
            "p_init": p_init,
            "num_restarts": num_restarts,
            "rescale_schedule": rescale_schedule,
            "nested": nested,
            "stochastic": stochastic,
            "backend": backend,
        },
        backend=backend,
        gradients=False,
    )
