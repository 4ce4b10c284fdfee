"""One stage of a suite on its samples: the calls it is made of, across processes.

``run_stage`` runs a stage's attack (``run_attack_spec``) on its samples and returns one
outcome: the attack's result over those samples in their order, or, when a call raised, no
result with a status and a message (``"not-applicable"`` for a missing input gradient,
``"failed"`` with the error's type and text for anything else). The samples are split into
calls that do not depend on the number of processes (``pieces``); under torch.distributed
each process runs its share and the outcomes are gathered, so every process holds the stage's
whole outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attacks import registry
from attacks.evaluator import NO_INPUT_GRADIENT, NoInputGradient
from attacks.losses import margin as logit_margin
from attacks.plan import Stage
from attacks.presets import AttackSpec, SuiteConfig
from attacks.result import PER_SAMPLE_TABLES, AttackResult, combine
from attacks.tables import cat, tables_of, take
from attacks.threat import Norm
from core.attackrecords import FAILED, NOT_APPLICABLE, OK, AttackStatus
from torchutil import (
    distributed,
    draw_seeds,
    forked_global_rng,
    make_generator,
    model_mode,
    to_device,
)

__all__ = [
    "StageRun",
    "concatenate",
    "dealt",
    "expected_cost_order",
    "pieces",
    "run_attack_spec",
    "run_stage",
]

StageRun = tuple[AttackResult | None, AttackStatus, str]
"""What a stage gave: its result (None when it raised), status and message (empty when
``"ok"``); kept as it is by the resume memo."""


def run_attack_spec(
    spec: AttackSpec,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm,
    config: SuiteConfig,
    generator: torch.Generator,
    **overrides: Any,
) -> AttackResult:
    """Call the attack of ``spec`` with the suite's common settings.

    Args:
        spec: the attack (its kind and parameters were checked when it was built).
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: inputs ``[N, ...]``.
        y: labels ``[N]``.
        epsilons: ascending radii.
        norm: the norm.
        config: the suite, for its bounds, batch size, mode and EOT samples (the latter for
            kinds that support EOT, on the native backend).
        generator: the stage's generator.
        overrides: settings the suite imposes on this run (e.g. ``nested=False`` for the
            independent sweep), applied where the kind takes them.
    """
    attack = registry.get(spec.kind)
    kwargs: dict[str, Any] = {
        "norm": norm,
        "bounds": config.bounds,
        "batch_size": config.batch_size,
        "stochastic": config.stochastic,
        "generator": generator,
        **spec.params,
        **{name: value for name, value in overrides.items() if name in attack.accepts},
    }
    # The reference libraries behind a ``backend`` compute one gradient per step; the native
    # loops and APGD (pyautoattack's own EOT) average over the suite's passes.
    if attack.eot and kwargs.get("backend", "native") == "native":
        kwargs.setdefault("eot_samples", config.eot_samples)
    return attack.function(model, x, y, epsilons, **kwargs)


def _call(
    spec: AttackSpec,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    **kwargs: Any,
) -> StageRun:
    try:
        result = run_attack_spec(spec, model, x, y, epsilons, **kwargs)
    except NoInputGradient:
        return None, NOT_APPLICABLE, NO_INPUT_GRADIENT
    except Exception as err:  # noqa: BLE001 - any failure of one attack is a finding
        return None, FAILED, f"{type(err).__name__}: {err}".strip()
    return result, OK, ""


def expected_cost_order(model: nn.Module, x: Tensor, y: Tensor, config: SuiteConfig) -> Tensor:
    """``[N]`` sample positions from the one expected cheapest to attack to the dearest.

    An attack stops a sample once it is broken, so a sample's cost grows with its distance
    from the decision boundary, of which the clean margin (true logit less the largest other)
    is the proxy: on the MNIST LeNet-5 zoo model the PGD-CE sweep's queries per sample rise
    from 9 on the tenth with the smallest margins to 155 on the tenth with the largest. Used
    only to share a stage's samples out between processes (``pieces``); a sample's outcome
    never depends on it. The clean pass is shared out by batch between processes, draws
    nothing from the global RNG and does not count as the model's evaluations.
    """
    step = config.batch_size or max(x.shape[0], 1)

    def margins(number: int) -> Tensor:
        batch = slice(number * step, (number + 1) * step)
        logits = model(x[batch]).float()
        return logit_margin(logits, y[batch]).nan_to_num(nan=float("-inf")).cpu()

    with forked_global_rng(x.device), model_mode(model, train=config.stochastic), torch.no_grad():
        parts = distributed.shared_map(-(-x.shape[0] // step), margins)
    return torch.cat(parts).argsort(stable=True).to(x.device)


def dealt(index: Tensor, order: Tensor, world: int) -> list[Tensor]:
    """``index`` in ``world`` parts of alike expected cost: its samples ranked by ``order``
    (see ``expected_cost_order``) and dealt out back and forth (0, 1, 1, 0, 0, 1, ... for two),
    so that every part takes one of each ``world`` consecutive ranks; each part in ``index``'s
    order."""
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(order.numel(), device=order.device)
    ranked = index[rank_of[index].argsort(stable=True)]
    turn = torch.arange(ranked.numel(), device=index.device)
    lap, seat = turn // world, turn % world
    owner = torch.where(lap % 2 == 0, seat, world - 1 - seat)
    return [ranked[owner == part].sort().values for part in range(world)]


def pieces(
    stage: Stage,
    index: Tensor,
    batch_size: int | None,
    generator: torch.Generator,
    order: Tensor | None = None,
) -> list[tuple[Tensor, torch.Generator]]:
    """The calls ``stage`` on samples ``index`` is made of, each with its generator.

    An attack whose per-sample results do not depend on the batch (``stage.split`` is
    ``"samples"``: each sample draws from its own stream) is one call, split between
    processes into parts of alike expected cost when ``order`` ranks the samples by it (see
    ``dealt``; else evenly, in order), each part with the stage's generator. Any other draws
    per batch from torch's global RNG inside a library; it is called per batch of
    ``batch_size`` samples of ``index``, each batch with its own generator seeded from the
    stage's (one batch: the stage's generator itself), and the batches are shared out between
    processes. Either way each sample's outcome is the same whatever the number of processes,
    so the stage's result is too.
    """
    world = distributed.world_size()
    if stage.split == "samples":
        if world == 1:
            return [(index, generator)]
        parts = list(index.tensor_split(world)) if order is None else dealt(index, order, world)
        return [(part, generator) for part in parts]
    step = batch_size or max(index.numel(), 1)
    batches = list(index.split(step))
    if len(batches) <= 1:
        return [(index, generator)]
    seeds = draw_seeds(generator, len(batches))
    return [
        (batch, make_generator(seed, generator.device))
        for batch, seed in zip(batches, seeds, strict=True)
    ]


def run_stage(
    stage: Stage,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    index: Tensor,
    config: SuiteConfig,
    generator: torch.Generator,
    order: Tensor | None = None,
) -> StageRun:
    """The outcome of ``stage`` on samples ``index`` of ``x`` (see the module's docstring);
    ``order`` ranks the samples by expected cost (``expected_cost_order``), or is None."""
    spec = stage.attack
    if spec is None or stage.norm is None:
        raise ValueError(f"stage {stage.label!r} runs no attack")
    # The independent sweep's epsilons are independent runs; any other run keeps the kind's
    # own setting.
    overrides: dict[str, Any] = {} if stage.nested else {"nested": False}
    calls = pieces(stage, index, config.batch_size, generator, order)
    rank, world = distributed.rank(), distributed.world_size()
    mine: dict[int, StageRun] = {}
    for number, (part, piece_generator) in enumerate(calls):
        if number % world != rank or part.numel() == 0:
            continue
        mine[number] = _call(
            spec,
            model,
            x[part],
            y[part],
            stage.epsilons,
            norm=stage.norm,
            config=config,
            generator=piece_generator,
            sample_ids=part,
            **overrides,
        )
    if world > 1:
        every: dict[int, StageRun] = {}
        for gathered in distributed.all_gather_objects(to_device(mine, "cpu")):
            every.update(gathered)
        mine = to_device(every, x.device)
    numbers = sorted(mine)
    ordered = [mine[n] for n in numbers]
    failed = next((run for run in ordered if run[0] is None), None)
    if failed is not None:
        return failed
    results = [result for result, _, _ in ordered if result is not None]
    if len(results) == 1:
        return results[0], OK, ""
    # The parts' samples side by side, and where each of ``index``'s samples is among them.
    placed = torch.cat([calls[n][0] for n in numbers])
    column = torch.full((x.shape[0],), -1, dtype=torch.long, device=placed.device)
    column[placed] = torch.arange(placed.numel(), device=placed.device)
    return concatenate(results, generator.initial_seed(), column[index]), OK, ""


def concatenate(results: list[AttackResult], seed: int, take_index: Tensor) -> AttackResult:
    """One result over the samples of ``results`` side by side (calls of one stage), its
    columns ``take_index`` of them (the stage's samples in its order)."""
    tables = take(
        cat([tables_of(r, PER_SAMPLE_TABLES) for r in results], PER_SAMPLE_TABLES),
        take_index,
        PER_SAMPLE_TABLES,
    )
    return combine(results, tables, seed=seed)
