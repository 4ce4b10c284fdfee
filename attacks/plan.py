"""A suite's stages as data: what runs, on which samples, in which order.

``plan_suite`` turns a ``SuiteConfig`` (and the shape of one sample, which sets the unbounded
epsilon of each norm and so the sweep's epsilons) into a ``Plan``: a tuple of ``Stage``
records in the order the executor (``attacks.execute``) runs them. Per norm:

1. the sweep (when configured): the swept attack at every sweep epsilon, nested, on every
   sample;
2. once, after the first norm's sweep (first when there is none): the clean pass, which
   finds the clean-correct samples;
3. the main list, attack by attack, each at every epsilon of the norm in ascending order: on
   the samples every earlier attack left robust at that epsilon (``"robust"``), or on every
   clean-correct sample for an attack with ``peer_of`` or a suite without ``skip_broken``. A
   stage of the swept attack at an epsilon of the sweep takes the sweep's row at that epsilon
   (``sweep_row``) when the sweep completed, and runs itself when it did not;
4. the independent sweep (when a sweep is configured): every sweep epsilon afresh (not
   nested) on a random subsample, only when the sweep completed.

Random draws follow the plan's order: each stage that runs on at least one sample draws one
child generator from the suite's generator (``torchutil.child_generator``), the independent
sweep drawing its subsample just before its own; a stage with no samples to run, one that
takes the sweep's row and the clean pass draw nothing. Whether a stage has samples depends on
what the earlier ones found, so the draws are made as the plan runs, in its order.

Every stage but the clean pass is one step of the progress total (``Plan.total``), and one
unit of the resume memo, under its ``unit`` name. How a stage's samples are shared out
between processes and batches (``split``) is also fixed here, by the attack's kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from attacks import registry
from attacks.presets import AttackSpec, SuiteConfig
from attacks.threat import Norm, geometry

__all__ = ["NormPlan", "Plan", "Role", "Samples", "Split", "Stage", "plan_suite"]

Role = Literal["sweep", "clean", "attack", "independent-sweep"]
"""What a stage is: a norm's sweep, the clean pass, one attack of the main list at one
epsilon, or a norm's independent sweep."""

Samples = Literal["every", "clean-correct", "robust", "subsample"]
"""Which samples a stage runs on: all of them, the clean-correct ones, those every earlier
attack of the main list left robust at the stage's epsilon, or a random subsample."""

Split = Literal["samples", "batches"]
"""How a stage's samples are shared out: as one call split between processes (an attack
whose per-sample outcomes do not depend on the batch, ``registry.batch_independent``), or
batch by batch, each batch with its own generator drawn from the stage's."""


@dataclass(frozen=True)
class Stage:
    """One step of a suite.

    Attributes:
        role: see ``Role``.
        norm: the norm; None for the clean pass, which serves every norm.
        attack: the attack it runs; None for the clean pass.
        epsilons: the radii of its run: the sweep's, or the one epsilon of a main-list stage.
        samples: see ``Samples``.
        unit: its name in the resume memo; None for the clean pass, which is never kept.
        label: its name in the progress report.
        row: the position of a main-list stage's epsilon among the norm's epsilons, else 0.
        sweep_row: the row of the norm's sweep a main-list stage takes when the sweep
            completed (the swept attack at an epsilon of the sweep), else None.
        nested: a sample broken at a smaller epsilon keeps that example at larger ones (False
            for the independent sweep).
        subsample: the size of the independent sweep's subsample (the executor takes every
            sample when there are fewer), else 0.
        split: see ``Split``.
    """

    role: Role
    norm: Norm | None
    attack: AttackSpec | None
    epsilons: tuple[float, ...]
    samples: Samples
    unit: str | None
    label: str
    row: int = 0
    sweep_row: int | None = None
    nested: bool = True
    subsample: int = 0
    split: Split = "batches"

    @property
    def reported(self) -> bool:
        """Whether the stage is a step of the progress total (all but the clean pass)."""
        return self.role != "clean"


@dataclass(frozen=True)
class NormPlan:
    """What a suite runs under one norm besides its stages.

    Attributes:
        norm: the norm.
        epsilons: the suite's ascending epsilons under it.
        sweep_epsilons: the sweep's ascending epsilons (empty without a sweep).
        unbounded_epsilon: the epsilon whose ball covers the whole box.
    """

    norm: Norm
    epsilons: tuple[float, ...]
    sweep_epsilons: tuple[float, ...]
    unbounded_epsilon: float


@dataclass(frozen=True)
class Plan:
    """A suite's stages in the order they run, and its norms in that order."""

    norms: tuple[NormPlan, ...]
    stages: tuple[Stage, ...]

    @property
    def total(self) -> int:
        """The number of steps the progress report counts."""
        return sum(stage.reported for stage in self.stages)

    @property
    def units(self) -> tuple[str, ...]:
        """The resume memo's units, in order."""
        return tuple(stage.unit for stage in self.stages if stage.unit is not None)


def _split(spec: AttackSpec) -> Split:
    return "samples" if registry.batch_independent(spec.kind, spec.params) else "batches"


def plan_suite(config: SuiteConfig, sample_shape: Sequence[int]) -> Plan:
    """The stages of ``config`` on samples of shape ``sample_shape`` (see the module's
    docstring); the same arguments give the same plan."""
    norms: list[NormPlan] = []
    stages: list[Stage] = []
    clean = Stage("clean", None, None, (), "every", None, "clean")
    for raw in config.norms:
        norm = Norm.parse(raw)
        epsilons = tuple(config.epsilons[norm])
        unbounded = geometry(norm).unbounded_epsilon(sample_shape, config.bounds)
        sweep = config.sweep
        sweep_epsilons = () if sweep is None else sweep.epsilons(epsilons[0], unbounded)
        norms.append(NormPlan(norm, epsilons, sweep_epsilons, unbounded))
        if sweep is not None:
            label = sweep.attack.label
            stages.append(
                Stage(
                    "sweep",
                    norm,
                    sweep.attack,
                    sweep_epsilons,
                    "every",
                    f"{norm.value}-sweep-{label}",
                    f"{norm.value} sweep {label}",
                    split=_split(sweep.attack),
                )
            )
        if not norms[1:]:
            stages.append(clean)
        for spec in config.attacks:
            peer = spec.peer_of is not None
            samples: Samples = "robust" if config.skip_broken and not peer else "clean-correct"
            for row, eps in enumerate(epsilons):
                shared = sweep is not None and spec == sweep.attack and eps in sweep_epsilons
                stages.append(
                    Stage(
                        "attack",
                        norm,
                        spec,
                        (eps,),
                        samples,
                        f"{norm.value}-{spec.label}-eps={eps!r}",
                        f"{norm.value} eps={eps:.4g} {spec.label}",
                        row=row,
                        sweep_row=sweep_epsilons.index(eps) if shared else None,
                        split=_split(spec),
                    )
                )
        if sweep is not None:
            label = sweep.attack.label
            stages.append(
                Stage(
                    "independent-sweep",
                    norm,
                    sweep.attack,
                    sweep_epsilons,
                    "subsample",
                    f"{norm.value}-independent-sweep-{label}",
                    f"{norm.value} independent sweep",
                    nested=False,
                    subsample=sweep.independent_samples,
                    split=_split(sweep.attack),
                )
            )
    if not norms:
        stages.append(clean)
    return Plan(tuple(norms), tuple(stages))
