"""Suites of attacks: what to run, at which epsilons, in which order, with which sweep.

Presets:

- ``quick``: small budgets for tests and CI (PGD 10 steps, Square 200 queries).
- ``standard``: dataset-aware epsilons, PGD-CE, PGD-T and PGD on the margin loss (``pgd-cw``,
  run on every sample as PGD-CE's peer) with 100 steps of 0.1 epsilon, FGSM, random noise and
  Square with 5000 queries (p_init 0.8), and a sweep. Steps of 0.1 epsilon,
  not Madry et al.'s 2.5 epsilon / steps: with 0.025 epsilon, 100 steps leave PGD-CE
  unconverged (on the digits dropout MLP, L2 robust accuracy 0.393 after 100 steps, 0.336 after
  400; on the MNIST LeNet-5, 0.178 against 0.142), while 100 steps of 0.1 reach 0.336 and 0.142.
  Last, ``apgd-t``: AutoAttack's APGD-T (pyautoattack's code: the targeted DLR loss toward
  each of the 9 most likely wrong classes in turn, 100 steps with its adaptive step size and
  momentum), on the samples every other attack left robust. Fixed-step PGD with the same
  plan (``pgd-t`` with ``target_mode="top"``) was not enough: on a PGD-trained MNIST CNN
  (L∞ 0.3, 1000 test images) it left 26 samples robust that AutoAttack's APGD-T broke, while
  APGD-T on the suite's survivors broke 30 of 264 against 4 for fixed-step PGD with the same
  loss and targets, at the same cost (see ``benchmarks/bench_autoattack.py``).
- ``thesis``: the NormOut thesis' setting: L∞ 8/255 with PGD step 3/255 for 10 iterations;
  L2 0.5 with the same relative step (3/8 of epsilon).
- ``thorough``: ``standard`` plus margin-loss PGD with 5 restarts, APGD-CE and standard
  AutoAttack.

Standard epsilons (pixels in [0, 1]): MNIST L∞ 0.3 / L2 2.0 and CIFAR-10 L∞ 8/255 / L2 0.5, as
in the literature. For the 8×8 digits, with 17 grey levels, L∞ 0.1 (1.6 grey levels) and
L2 0.5 (a root-mean-square change of 1/16 per pixel, close to MNIST's 2.0 over 784 pixels,
0.071 per pixel).

Attacks run in order, each only on the samples every earlier attack left robust (AutoAttack's
worst case): the white-box iterative attacks first, then FGSM, random noise and Square, so a
weaker or gradient-free attack that breaks what PGD could not shows up as such; the
multi-target APGD-T closes the list, where few samples remain for its many runs. An attack with
``peer_of`` (the margin-loss PGD) runs on every clean-correct sample instead, so that it can be
compared with its peer sample by sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from attacks.registry import Param, ParameterTypeError, get
from attacks.result import plain
from attacks.threat import Bounds, Norm, check_epsilons

STANDARD_EPSILONS: dict[str, dict[Norm, float]] = {
    "mnist": {Norm.LINF: 0.3, Norm.L2: 2.0},
    "cifar10": {Norm.LINF: 8 / 255, Norm.L2: 0.5},
    "digits": {Norm.LINF: 0.1, Norm.L2: 0.5},
}
THESIS_EPSILONS: dict[Norm, float] = {Norm.LINF: 8 / 255, Norm.L2: 0.5}


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite.

    The kind, every parameter name and every value are checked against the attack registry
    (``attacks.registry``) when the spec is built, so a bad suite fails before any work.

    Attributes:
        kind: the attack's kind in ``attacks.registry`` (``"fgsm"``, ``"pgd"``, ``"pgd-t"``,
            ``"square"``, ``"noise"``, ``"apgd"``, ``"autoattack"``).
        label: unique name in the suite's results, e.g. ``"pgd-ce"``.
        params: keyword arguments of the attack function (numbers, strings, booleans).
        peer_of: the label of an earlier attack this one is compared with sample by sample
            (e.g. PGD on the margin loss against PGD-CE); such an attack runs on every
            clean-correct sample, not only on those the earlier attacks left robust.

    Raises:
        ValueError: for an unknown kind, an unknown parameter or a value out of range.
        ParameterTypeError: (a ``TypeError`` and a ``ValueError``) for a value of the wrong
            type.
    """

    kind: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    peer_of: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ParameterTypeError(
                f"an attack's label must be a non-empty string, got {self.label!r}"
            )
        try:
            attack = get(self.kind)
        except ValueError as err:
            raise ValueError(f"attack {self.label!r}: {err}") from None
        attack.check(self.params, context=f"attack {self.label!r} ({self.kind})")
        if self.peer_of is not None and not isinstance(self.peer_of, str):
            raise ParameterTypeError(
                f"attack {self.label!r}: peer_of must be an attack label, got {self.peer_of!r}"
            )


# More samples than any test split holds (ImageNet's validation set, the largest common one,
# holds 50,000): a value this large asks for the whole evaluation set, which bounds it anyway.
_ALL_SAMPLES = 1_000_000

SWEEP_PARAMS: dict[str, Param] = {
    "num_points": Param(
        int,
        minimum=1,
        maximum=1_000,
        why="each point is one more run of the swept attack on the samples still robust, and "
        "the result keeps a row of per-sample outcomes per point; 1,000 points are 125 times "
        "the standard preset's 8",
    ),
    "max_factor": Param(float, minimum=0, exclusive_minimum=True),
    "unbounded": Param(bool),
    "independent_samples": Param(
        int,
        minimum=0,
        maximum=_ALL_SAMPLES,
        why="a subsample of the evaluation set, so never more samples than a test split holds",
    ),
}
"""The settings of a sweep besides its attack, with their types and ranges."""

SUITE_OPTIONS: dict[str, Param] = {
    "batch_size": Param(
        int,
        minimum=1,
        maximum=_ALL_SAMPLES,
        optional=True,
        why="samples attacked together, so never more than a test split holds",
    ),
    "skip_broken": Param(bool),
    "stochastic": Param(bool),
    "eot_samples": Param(
        int,
        minimum=1,
        maximum=10_000,
        why="each gradient averages this many forward and backward passes of every attacked "
        "sample; the audit's own EOT takes 8",
    ),
}
"""The settings of a suite that a suite file's ``[options]`` table may change."""


@dataclass(frozen=True)
class SweepConfig:
    """An epsilon sweep of one attack.

    The sweep is run twice: on every sample with nested epsilons (a sample broken at a
    smaller epsilon is not attacked again at larger ones), and as independent per-epsilon
    runs on a random subsample of ``independent_samples``, so that non-monotonic accuracy
    stays visible. The independent runs stop a sample once it is broken at that epsilon (the
    attack's ``early_stop``, on by default): the per-sample outcomes are those of running
    every step, at a fraction of the cost. Silent successes (an intermediate iterate fools
    the model, the last does not) are then not observable; set ``early_stop = false`` on the
    swept attack to see them, at the cost of every step on every sample.

    Attributes:
        attack: the swept attack.
        num_points: epsilons ``max_factor * eps * i / num_points`` for ``i = 1..num_points``.
        max_factor: the largest epsilon as a multiple of the suite's epsilon.
        unbounded: add the unbounded epsilon (the whole box under L∞, a radius beyond the box
            diameter under L2) when it exceeds the largest one.
        independent_samples: size of the subsample for independent runs (0: none).
    """

    attack: AttackSpec
    num_points: int = 8
    max_factor: float = 4.0
    unbounded: bool = True
    independent_samples: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.attack, AttackSpec):
            raise ParameterTypeError(f"a sweep's attack is an AttackSpec, got {self.attack!r}")
        for name, param in SWEEP_PARAMS.items():
            param.check(f"sweep {name}", getattr(self, name))

    def epsilons(self, epsilon: float, unbounded_epsilon: float) -> tuple[float, ...]:
        """The ascending sweep epsilons around the suite's ``epsilon``."""
        # The factor first, so that a factor of exactly 1 gives the suite's epsilon bit for
        # bit and the sweep can share that run with the main list.
        factors = [self.max_factor * i / self.num_points for i in range(1, self.num_points + 1)]
        values = [epsilon * factor for factor in factors]
        if self.unbounded and unbounded_epsilon > values[-1]:
            values.append(unbounded_epsilon)
        return check_epsilons(values)


@dataclass(frozen=True)
class SuiteConfig:
    """A whole evaluation.

    Attributes:
        name: the preset's name (or the caller's).
        epsilons: per norm, the ascending epsilons every attack runs at.
        attacks: run in this order.
        sweep: the epsilon sweep, or None.
        bounds: the input box.
        batch_size: samples per batch, the attacks' batch: each attack works on this many
            samples together and its random draws are per batch, so it is part of the result
            (a model may still evaluate them in smaller chunks, ``attacks.ChunkedModel``);
            None for all at once.
        skip_broken: attack only samples every earlier attack left robust (worst case over
            attacks); False runs every attack on every clean-correct sample.
        stochastic: evaluate the model in train mode (batch norm excepted).
        eot_samples: forward passes averaged per gradient (EOT) for gradient attacks.
    """

    name: str
    epsilons: Mapping[Norm, tuple[float, ...]]
    attacks: tuple[AttackSpec, ...]
    sweep: SweepConfig | None = None
    bounds: Bounds = Bounds()
    batch_size: int | None = 1000
    skip_broken: bool = True
    stochastic: bool = False
    eot_samples: int = 1

    def __post_init__(self) -> None:
        for name, param in SUITE_OPTIONS.items():
            param.check(name, getattr(self, name))
        labels = [spec.label for spec in self.attacks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"attack labels must be unique, got {labels}")
        for i, spec in enumerate(self.attacks):
            if spec.peer_of is not None and spec.peer_of not in labels[:i]:
                raise ValueError(
                    f"attack {spec.label!r}: peer_of must name an earlier attack "
                    f"({', '.join(labels[:i]) or 'none'}), got {spec.peer_of!r}"
                )
        for norm, values in self.epsilons.items():
            Norm.parse(norm)
            check_epsilons(values)

    @property
    def norms(self) -> tuple[Norm, ...]:
        return tuple(self.epsilons)

    def with_options(self, **changes: Any) -> SuiteConfig:
        """A copy with some fields changed, e.g. ``config.with_options(stochastic=True)``."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "name": self.name,
                "epsilons": {norm.value: list(values) for norm, values in self.epsilons.items()},
                "attacks": [
                    {"kind": s.kind, "label": s.label, "params": s.params}
                    | ({"peer_of": s.peer_of} if s.peer_of else {})
                    for s in self.attacks
                ],
                "sweep": None
                if self.sweep is None
                else {
                    "attack": {
                        "kind": self.sweep.attack.kind,
                        "label": self.sweep.attack.label,
                        "params": self.sweep.attack.params,
                    },
                    "num_points": self.sweep.num_points,
                    "max_factor": self.sweep.max_factor,
                    "unbounded": self.sweep.unbounded,
                    "independent_samples": self.sweep.independent_samples,
                },
                "bounds": [self.bounds.lower, self.bounds.upper],
                "batch_size": self.batch_size,
                "skip_broken": self.skip_broken,
                "stochastic": self.stochastic,
                "eot_samples": self.eot_samples,
            }
        )


def _suite(
    name: str,
    epsilons: Mapping[Norm, float],
    *,
    num_steps: int,
    rel_step_size: float,
    num_queries: int,
    num_draws: int,
    sweep_points: int,
    independent_samples: int,
    rescale_schedule: bool,
    top_targets: int = 0,
) -> SuiteConfig:
    pgd_params = {"num_steps": num_steps, "rel_step_size": rel_step_size, "random_start": True}
    pgd_ce = AttackSpec("pgd", "pgd-ce", dict(pgd_params))
    square = AttackSpec(
        "square",
        "square",
        {"num_queries": num_queries, "p_init": 0.8, "rescale_schedule": rescale_schedule},
    )
    closing: tuple[AttackSpec, ...] = (square,)
    if top_targets:
        # FAB-T before Square, as AutoAttack's standard version runs them: AutoAttack's
        # minimum-norm attack, toward each of the most likely wrong classes in turn. Its steps
        # are not bounded by epsilon and follow the linearised decision boundary, so it breaks
        # points where the fixed-step loss attacks stall (an MNIST network trained against
        # L∞ 0.3, attacked at L2 2.0), and at a fraction of Square's cost per sample: run
        # first, it leaves Square far fewer samples (benchmarks/bench_fab_order.py: on that
        # network at L2, 68 s against 93 s for the two in the other order, the same samples
        # robust at the end; at L∞, where neither breaks much, 306 s against 312 s).
        # Last, on the few samples every other attack left robust, so its many runs cost
        # little: AutoAttack's APGD-T toward each of the most likely wrong classes in turn,
        # which breaks points that no single-target or untargeted attack of this list breaks
        # (its adaptive step finds what fixed-step PGD toward the same targets does not).
        closing = (
            AttackSpec(
                "fab",
                "fab-t",
                {"targeted": True, "num_target_classes": top_targets, "num_steps": num_steps},
            ),
            square,
            AttackSpec(
                "apgd",
                "apgd-t",
                {"targeted": True, "num_target_classes": top_targets, "num_steps": num_steps},
            ),
        )
    attacks = (
        pgd_ce,
        AttackSpec("pgd-t", "pgd-t", {**pgd_params, "target_mode": "random"}),
        # The margin loss cannot be starved by a saturated softmax: run on every sample and
        # compared with PGD-CE sample by sample (AutoAttack's reason for its DLR loss).
        AttackSpec("pgd", "pgd-cw", {**pgd_params, "loss": "cw"}, peer_of="pgd-ce"),
        AttackSpec("fgsm", "fgsm"),
        AttackSpec("noise", "noise", {"num_draws": num_draws}),
        *closing,
    )
    return SuiteConfig(
        name=name,
        epsilons={norm: (value,) for norm, value in epsilons.items()},
        attacks=attacks,
        sweep=SweepConfig(pgd_ce, num_points=sweep_points, independent_samples=independent_samples),
    )


EOT_APGD_SAMPLES = 20
"""Forward passes averaged per gradient step by the EOT APGD attacks of a stochastic model:
AutoAttack's ``rand`` version (``eot_iter=20``)."""


def for_stochastic_model(config: SuiteConfig, eot_samples: int) -> SuiteConfig:
    """The suite for a model whose outputs are random (its forward passes differ).

    Every attack that takes ``eot_samples`` averages its gradients over ``eot_samples``
    passes (unless the suite already asks for EOT), and AutoAttack's ``rand`` version closes
    the chain: APGD on the cross-entropy (``eot-apgd-ce``) and on the DLR loss
    (``eot-apgd-dlr``), each averaging ``EOT_APGD_SAMPLES`` passes per step, with the suite's
    PGD step count (100 in ``standard``), on the samples every other attack left robust.
    Fixed-step PGD with EOT over 8 passes is weaker against a random model than AutoAttack's
    EOT APGD: on an MNIST model that picks one of three networks at random on every call, L2
    2.0, it left robust samples that AutoAttack's ``rand`` version broke. A suite without a
    gradient attack (only Square, say) gets no gradient attack added; one that already holds
    APGD with that loss and at least as many passes keeps it.

    Args:
        config: the suite as configured.
        eot_samples: passes per gradient for the other attacks (the audit's 8).

    Returns:
        the suite to run on the stochastic model.
    """
    if config.eot_samples == 1:
        config = config.with_options(eot_samples=eot_samples)
    attacks = list(config.attacks)
    if not any(get(spec.kind).family.gradient for spec in attacks):
        return config
    steps = next((s.params["num_steps"] for s in attacks if "num_steps" in s.params), 100)
    labels = {spec.label for spec in attacks}
    for loss in ("ce", "dlr"):
        label = f"eot-apgd-{loss}"
        present = any(
            spec.kind == "apgd"
            and spec.params.get("loss", "ce") == loss
            and not spec.params.get("targeted", False)
            and spec.params.get("eot_samples", 1) >= EOT_APGD_SAMPLES
            for spec in attacks
        )
        if not present and label not in labels:
            params = {"loss": loss, "num_steps": steps, "eot_samples": EOT_APGD_SAMPLES}
            attacks.append(AttackSpec("apgd", label, params))
    return config.with_options(attacks=tuple(attacks))


def _standard_epsilons(dataset: str | None) -> dict[Norm, float]:
    if dataset is None or dataset.lower() not in STANDARD_EPSILONS:
        known = ", ".join(sorted(STANDARD_EPSILONS))
        raise ValueError(
            f"the preset needs a dataset with standard epsilons ({known}), got {dataset!r}; "
            "pass dataset=... or build a SuiteConfig with explicit epsilons"
        )
    return STANDARD_EPSILONS[dataset.lower()]


def preset(name: str, dataset: str | None = None) -> SuiteConfig:
    """The suite called ``name``: ``"quick"``, ``"standard"``, ``"thesis"`` or ``"thorough"``.

    Args:
        name: the preset.
        dataset: ``"mnist"``, ``"cifar10"`` or ``"digits"``; needed by ``standard``,
            ``thorough`` and ``quick`` (epsilons), ignored by ``thesis``.

    Raises:
        ValueError: for an unknown preset or a dataset without standard epsilons.
    """
    if name == "thesis":
        return _suite(
            "thesis",
            THESIS_EPSILONS,
            num_steps=10,
            rel_step_size=3 / 8,
            num_queries=5000,
            num_draws=100,
            sweep_points=8,
            independent_samples=100,
            rescale_schedule=False,
        )
    if name == "quick":
        return _suite(
            "quick",
            _standard_epsilons(dataset),
            num_steps=10,
            rel_step_size=0.25,
            num_queries=200,
            num_draws=20,
            sweep_points=4,
            independent_samples=16,
            rescale_schedule=True,
        )
    if name in ("standard", "thorough"):
        config = _suite(
            name,
            _standard_epsilons(dataset),
            num_steps=100,
            rel_step_size=0.1,
            num_queries=5000,
            num_draws=100,
            sweep_points=8,
            independent_samples=100,
            rescale_schedule=False,
            top_targets=9,
        )
        if name == "standard":
            return config
        extra = (
            AttackSpec(
                "pgd",
                "pgd-cw-restarts",
                {"num_steps": 100, "rel_step_size": 0.1, "num_restarts": 5, "loss": "cw"},
            ),
            AttackSpec("apgd", "apgd-ce", {"loss": "ce", "num_steps": 100}),
            AttackSpec("autoattack", "autoattack", {"version": "standard"}),
        )
        return config.with_options(attacks=config.attacks + extra)
    known = "quick, standard, thesis, thorough"
    raise ValueError(f"preset must be one of {known}, got {name!r}")
