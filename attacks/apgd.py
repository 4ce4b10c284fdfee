"""APGD-CE, APGD-T and standard AutoAttack through pyautoattack, for a thorough suite.

These are the AutoAttack authors' implementations, called per epsilon on the samples still
correctly classified. Their examples are judged here like every other attack's.

APGD runs pyautoattack's ``attack_single_run`` (the whole iteration: step-size schedule,
momentum, checkpoints) in the loop of its ``perturb`` (restarts on the samples not yet fooled;
for APGD-T, each target class in turn, the ``t``-th most likely wrong class at the clean
input), written out in ``_perturb`` so that the one random thing, the start point of each
run, is the sample's own: it comes from the sample's stream (``attacks.engine``), drawn as
pyautoattack draws it (L∞: ``x + eps * t / max|t|`` with ``t`` uniform in ``[-1, 1]``; L2:
``x + eps * t / ||t||`` with ``t`` standard normal), one start per run the sample takes part
in, in order. Every other step of APGD is per sample, so a sample's result does not depend on
its batch. AutoAttack runs pyautoattack's own evaluation, seeded per batch. pyautoattack
draws from torch's global RNG as well; it runs under a forked RNG, so the caller's global
state is untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attacks.call import library_batch, library_seed, prepare, pyautoattack_norm
from attacks.engine import Batch, BatchResult, epsilon_stream
from attacks.result import AttackResult
from attacks.threat import Bounds, Epsilons, Norm, RandomSource, normal, uniform

APGD_LOSSES = ("ce", "dlr")

StartFn = Callable[[Tensor, Tensor], "Tensor | None"]
"""``(x, rows) -> start``: the start points of one run for the clean inputs ``x`` of the
batch's rows ``rows``; None lets pyautoattack draw them from the global RNG."""


def apgd_start(x: Tensor, eps: float, norm: Norm, source: RandomSource) -> Tensor:
    """pyautoattack's APGD start around ``x`` (before its clamp to ``[0, 1]``), drawn from
    ``source`` (a generator or one per sample): L∞ ``x + eps * t / (max|t| + 1e-12)`` with
    ``t`` uniform in ``[-1, 1]``, L2 ``x + eps * t / (||t|| + 1e-12)`` with ``t`` normal."""
    if norm is Norm.LINF:
        t = 2 * uniform(x.shape, x, source) - 1
        scale = t.abs().view(x.shape[0], -1).max(1)[0]
    else:
        t = normal(x.shape, x, source)
        scale = (t**2).view(x.shape[0], -1).sum(-1).sqrt()
    return x + eps * torch.ones_like(x) * (t / (scale.view(-1, *([1] * (x.dim() - 1))) + 1e-12))


def _perturb(runner: Any, x: Tensor, y: Tensor, start: StartFn) -> Tensor:
    """pyautoattack's ``APGDAttack.perturb`` (``APGDAttack_targeted.perturb`` for a targeted
    runner) with each run's start from ``start``. With None from ``start``, the global RNG
    seeded with ``runner.seed`` first and a model that draws nothing, it returns what
    ``perturb`` returns, bit for bit."""
    runner.init_hyperparam(x)
    x = x.detach().clone().float().to(runner.device)
    y = y.detach().clone().long().to(runner.device)
    acc = runner.model(x).max(1)[1] == y
    adversarial = x.clone()
    targeted = runner.loss == "dlr-targeted"
    targets = range(2, runner.n_target_classes + 2) if targeted else [None]
    for target in targets:
        for _ in range(runner.n_restarts):
            rows = acc.nonzero().flatten()
            if rows.numel() == 0:
                return adversarial
            x_run, y_run = x[rows].clone(), y[rows].clone()
            if target is not None:
                runner.y_target = runner.model(x_run).sort(dim=1)[1][:, -target]
            _, acc_run, _, adv_run = runner.attack_single_run(
                x_run, y_run, x_init=start(x_run, rows)
            )
            broken = (acc_run == 0).nonzero().flatten()
            acc[rows[broken]] = False
            adversarial[rows[broken]] = adv_run[broken].clone()
    return adversarial


def apgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    loss: str = "ce",
    targeted: bool = False,
    num_steps: int = 100,
    num_restarts: int = 1,
    num_target_classes: int = 9,
    nested: bool = True,
    eot_samples: int = 1,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """APGD (Croce and Hein, 2020): untargeted on CE or DLR, or targeted on DLR (APGD-T).

    Args:
        model: maps inputs ``[N, ...]`` in ``[0, 1]`` to logits ``[N, C]``; float32.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        epsilons: one radius, or ascending, non-negative radii (a single number gives one
            row, K = 1).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"dlr"`` (untargeted); APGD-T always uses targeted DLR.
        targeted: run APGD-T over the ``num_target_classes`` most likely wrong classes.
        num_steps: iterations per run.
        num_restarts: runs (per target for APGD-T).
        num_target_classes: targets tried by APGD-T (at most ``C - 1``).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        eot_samples: forward passes whose gradients are averaged at every step (EOT, for a
            stochastic model): pyautoattack's ``eot_iter``, 20 in AutoAttack's ``rand``
            version. The engine judges the examples by one pass, as every attack's.
        bounds: must be ``(0, 1)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        generator: a ``torch.Generator`` or an int seed (default 0).
        sample_ids: int64 ``[N]``, distinct: the samples' identities (default ``arange(N)``);
            each sample's start points come from its own stream, so its result does not
            depend on its batch (``registry.batch_independent`` is True).

    Returns:
        ``AttackResult`` with ``T = 0`` (the final margin loss only); ``success_step`` is
        ``STEP_UNKNOWN`` (-2) for every broken sample, as pyautoattack returns only the
        examples.
    """
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    if loss not in APGD_LOSSES:
        raise ValueError(f"APGD loss must be one of {', '.join(APGD_LOSSES)}, got {loss!r}")
    call = prepare(
        model,
        x,
        y,
        epsilons,
        (norm, bounds),
        (generator, sample_ids),
        eot_samples=eot_samples,
        unit_box="APGD",
    )
    config = call.config

    def attack(batch: Batch) -> BatchResult:
        wrapper, seed = library_seed(config)
        common = {
            "n_iter": num_steps,
            "norm": pyautoattack_norm(config.norm),
            "eps": float(batch.eps[0]),
            "n_restarts": num_restarts,
            "eot_iter": eot_samples,
            "seed": seed,
            "device": x.device,
        }
        if targeted:
            classes = min(num_target_classes, batch.clean_logits.shape[1] - 1)
            runner = APGDAttack_targeted(wrapper, n_target_classes=classes, **common)
        else:
            runner = APGDAttack(wrapper, loss=loss, **common)
        streams = config.streams(batch.index, epsilon_stream(batch.k))
        eps = float(batch.eps[0])

        def start(x_run: Tensor, rows: Tensor) -> Tensor:
            # A sample's generator is drawn from only in the runs it takes part in, which are
            # all the runs up to the one that fools it: its starts are the same in any batch.
            sources = [streams[i] for i in rows.tolist()]
            return apgd_start(x_run, eps, config.norm, sources)

        def perturb() -> Tensor:
            torch.manual_seed(seed)
            return _perturb(runner, batch.x0, batch.y, start)

        return library_batch(config, batch, perturb)

    name = "apgd-t" if targeted else f"apgd-{loss}"
    return call.run_library(
        name,
        attack,
        engine=(nested, batch_size, stochastic),
        params={
            "loss": "dlr" if targeted else loss,
            "targeted": targeted,
            "num_steps": num_steps,
            "num_restarts": num_restarts,
            "num_target_classes": num_target_classes,
            "nested": nested,
            "eot_samples": eot_samples,
        },
    )


def autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Epsilons,
    *,
    norm: Norm | str = Norm.LINF,
    version: str = "standard",
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) at each epsilon.

    Args:
        version: pyautoattack's version, ``"standard"`` (or ``"plus"``, ``"rand"``).
        Other arguments: as for ``apgd``.

    Returns:
        ``AttackResult`` with ``T = 0`` and ``success_step`` unknown (-2) where broken.
    """
    from pyautoattack import AutoAttack

    call = prepare(
        model, x, y, epsilons, (norm, bounds), (generator, sample_ids), unit_box="AutoAttack"
    )
    config = call.config

    def attack(batch: Batch) -> BatchResult:
        wrapper, seed = library_seed(config)
        runner = AutoAttack(
            wrapper,
            norm=pyautoattack_norm(config.norm),  # type: ignore[arg-type]
            eps=float(batch.eps[0]),
            seed=seed,
            version=version,  # type: ignore[arg-type]
            device=x.device,
        )
        runner.logger.setLevel(logging.WARNING)

        def evaluate() -> Tensor:
            found, _ = runner.run_standard_evaluation(batch.x0, batch.y, batch_size=batch.y.numel())
            return found

        return library_batch(config, batch, evaluate)

    return call.run_library(
        "autoattack",
        attack,
        engine=(nested, batch_size, stochastic),
        params={"version": version, "nested": nested},
    )
