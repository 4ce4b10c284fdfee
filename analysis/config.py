"""What an audit runs: the attack suite (preset, TOML file, flags) and the flatness budget.

A suite file is TOML::

    preset = "standard"            # optional starting point (default: standard)
    [epsilons]                     # per norm; replaces the preset's
    linf = [0.1]
    l2 = [0.5]
    [[attacks]]                    # replaces the preset's list when given
    kind = "pgd"                   # a kind of attacks.registry: fgsm, pgd, pgd-t, square, ...
    label = "pgd-ce"
    num_steps = 50
    rel_step_size = 0.05
    [sweep]                        # the sweep's keys; attack names a label above
    attack = "pgd-ce"
    num_points = 8
    max_factor = 4.0
    independent_samples = 100
    [options]
    skip_broken = true
    eot_samples = 1

A file that lists its own ``[[attacks]]`` without a ``[sweep]`` table sweeps its first
iterative attack (``pgd`` or ``apgd``, in file order) with the preset's sweep settings, and has
no sweep when it lists no iterative attack; the preset's own sweep attack is never kept behind
the file's back.

Every key, attack kind, parameter name, type and value is checked against the attack
registry when the suite is built, before any model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from analysis.batching import FLATNESS_BATCH_LIMIT
from attacks import (
    BACKENDS,
    AttackSpec,
    Family,
    Norm,
    SuiteConfig,
    SweepConfig,
    preset,
    registry,
)
from attacks.presets import STANDARD_EPSILONS, SUITE_OPTIONS, SWEEP_PARAMS
from attacks.registry import ParameterTypeError, check_keys
from core.boundary import load_toml
from flatness import FlatnessConfig

__all__ = [
    "PRESETS",
    "COST_WARNING_FACTOR",
    "DEFAULT_BATCH_SIZE",
    "PER_NORM_SYNTAX",
    "AuditConfig",
    "BareEpsilons",
    "build_suite",
    "check_suite",
    "cost_warning",
    "passes_per_sample",
    "active_flatness_config",
    "flatness_config",
    "parse_epsilons",
]

PRESETS = ("quick", "standard", "thesis", "thorough")
DEFAULT_BATCH_SIZE = 500  # samples per batch unless --batch-size or a suite file says otherwise
EOT_SAMPLES = 8  # forward passes per gradient when the model turns out to be stochastic


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit needs besides the model and data.

    Attributes:
        suite: the attack suite.
        flatness: the flatness estimators, or None to skip them.
        num_samples: evaluation samples (None: the whole test split).
        flatness_samples: samples the flatness estimators use (the first of the evaluation set).
        batch_size: the batch every attack works on (its random draws are per batch) and the
            probes and activation statistics use; it replaces the suite's own.
        model_batch_size: samples the model evaluates at once (None: the largest that fits,
            measured; see ``analysis.batching``); it bounds memory and changes no result.
        seed: the seed of every random choice.
        examples_per_attack: adversarial examples kept per attack and epsilon.
    """

    suite: SuiteConfig
    flatness: FlatnessConfig | None
    num_samples: int | None = 1000
    flatness_samples: int = 500
    batch_size: int = DEFAULT_BATCH_SIZE
    model_batch_size: int | None = None
    seed: int = 0
    examples_per_attack: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite.to_dict(),
            "flatness": None
            if self.flatness is None
            else {
                "measures": [str(m) for m in self.flatness.measures],
                "batch_size": self.flatness.batch_size,
                "mode": str(self.flatness.mode),
                "options": self.flatness.options,
            },
            "num_samples": self.num_samples,
            "flatness_samples": self.flatness_samples,
            "batch_size": self.batch_size,
            "model_batch_size": self.model_batch_size,
            "seed": self.seed,
            "examples_per_attack": self.examples_per_attack,
        }


PER_NORM_SYNTAX = "linf=8/255;l2=0.5"
"""How ``--epsilons`` gives each norm its own epsilons."""


class BareEpsilons(tuple[float, ...]):
    """Epsilons given without a norm (``--epsilons 8/255``): the values, equal to their plain
    tuple, and ``text``, what was typed, for a message about them to echo (``8/255``, not
    ``0.0313725``)."""

    text: str

    def __new__(cls, values: tuple[float, ...], text: str) -> BareEpsilons:
        bare = super().__new__(cls, values)
        bare.text = text
        return bare


def parse_epsilons(text: str) -> dict[Norm, tuple[float, ...]] | tuple[float, ...]:
    """``linf=8/255;l2=0.5`` (per norm), or ``0.1,0.2`` without a norm (only for a run of one
    norm: ``build_suite`` refuses it for more; the tuple is a ``BareEpsilons`` that keeps the
    text). Each epsilon is a decimal number (``0.5``, ``1e-3``) or a fraction of two
    (``8/255``); nothing is evaluated."""
    if "=" not in text:
        return BareEpsilons(_numbers(text, "--epsilons"), text.strip())
    out: dict[Norm, tuple[float, ...]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, values = part.partition("=")
        out[Norm.parse(name.strip())] = _numbers(values, f"--epsilons {name.strip()}")
    return out


def _number(text: str) -> float:
    """``0.5``, ``1e-3`` or ``8/255`` as a float (ValueError otherwise)."""
    numerator, slash, denominator = text.strip().partition("/")
    if not slash:
        return float(numerator)
    if "/" in denominator:
        raise ValueError(text)
    top, bottom = float(numerator), float(denominator)
    if not bottom > 0 or not math.isfinite(bottom):
        raise ValueError(text)
    return top / bottom


def _numbers(text: str, origin: str) -> tuple[float, ...]:
    try:
        values = tuple(_number(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"{origin} must be comma-separated numbers or fractions (0.5, 1e-3, 8/255), got "
            f"{text!r}"
        ) from None
    return _ascending(values, origin)


def _ascending(values: tuple[float, ...], origin: str) -> tuple[float, ...]:
    if not values:
        raise ValueError(f"{origin} is empty; give at least one epsilon")
    if any(not v > 0 or not math.isfinite(v) for v in values) or list(values) != sorted(values):
        raise ValueError(
            f"{origin}: epsilons must be positive, finite and ascending, got {list(values)} "
            "(epsilon 0 is the clean accuracy, which the audit reports anyway)"
        )
    return values


_FILE_KEYS = ("name", "preset", "epsilons", "attacks", "sweep", "options")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParameterTypeError(f"{where} must be a table, got {value!r}")
    return dict(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ParameterTypeError(f"{where} must be a string, got {value!r}")
    return value


def _file_epsilons(values: Any, where: str) -> tuple[float, ...]:
    """Numbers, or fractions as strings (``"8/255"``): TOML has no fractions."""
    items = values if isinstance(values, list) else [values]
    parsed = []
    for value in items:
        try:
            if isinstance(value, str) and "/" in value:
                parsed.append(_number(value))
                continue
        except ValueError:
            pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterTypeError(
                f'{where}: expected a list of numbers or fractions (0.5, "8/255"), got {values!r}'
            )
        parsed.append(float(value))
    return _ascending(tuple(parsed), where)


def _suite_from_file(path: Path, dataset: str | None) -> tuple[SuiteConfig, bool]:
    """The suite of a file, and whether the file sets ``[options] batch_size``."""
    data = load_toml(path, "suite", ValueError)
    try:
        suite = _suite_from_data(data, dataset, path.stem)
    except ParameterTypeError as err:
        raise ParameterTypeError(f"suite file {path}: {err}") from None
    except ValueError as err:
        raise ValueError(f"suite file {path}: {err}") from None
    options = data.get("options", {})
    return suite, "batch_size" in options


def _suite_from_data(data: dict[str, Any], dataset: str | None, stem: str) -> SuiteConfig:
    """A suite from a parsed suite file; every key, kind, parameter and value is checked."""
    check_keys(data, _FILE_KEYS, "top-level key")
    base = data.get("preset", "standard")
    if base not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {base!r}")
    suite = _preset_any(base, dataset) if "epsilons" in data else preset(base, dataset)
    changes: dict[str, Any] = {"name": _string(data.get("name", stem), "name")}
    if "epsilons" in data:
        changes["epsilons"] = {
            Norm.parse(k): _file_epsilons(v, f"epsilons.{k}")
            for k, v in _table(data["epsilons"], "[epsilons]").items()
        }
    if "attacks" in data:
        items = data["attacks"]
        if not isinstance(items, list) or not items:
            raise ParameterTypeError(
                f"attacks must be one or more [[attacks]] tables, got {items!r}"
            )
        specs = []
        for number, item in enumerate(items, start=1):
            params = _table(item, f"[[attacks]] #{number}")
            if "kind" not in params:
                raise ValueError(
                    f"[[attacks]] #{number} has no kind; known kinds: "
                    f"{', '.join(registry.list_attacks())}"
                )
            kind = params.pop("kind")
            label = params.pop("label", kind)
            peer_of = params.pop("peer_of", None)
            specs.append(AttackSpec(kind, label, params, peer_of))
        changes["attacks"] = tuple(specs)
    attacks = changes.get("attacks", suite.attacks)
    if "sweep" in data:
        sweep = _table(data["sweep"], "[sweep]")
        check_keys(sweep, ("attack", *SWEEP_PARAMS), "[sweep] key")
        label = sweep.pop("attack", None)
        match = [s for s in attacks if s.label == label]
        if not match:
            raise ValueError(
                "sweep.attack must name an attack label "
                f"({', '.join(s.label for s in attacks)}), got {label!r}"
            )
        changes["sweep"] = SweepConfig(match[0], **sweep)
    elif "attacks" in data:
        changes["sweep"] = _sweep_of(changes["attacks"], suite.sweep)
    options = _table(data.get("options", {}), "[options]")
    check_keys(options, SUITE_OPTIONS, "[options] key")
    return suite.with_options(**changes, **options)


def _sweep_of(attacks: Sequence[AttackSpec], base: SweepConfig | None) -> SweepConfig | None:
    """The sweep of a file that lists its own attacks without a ``[sweep]`` table.

    The sweep follows the file's first iterative attack (``pgd``, ``apgd``), with the preset's
    sweep settings, so that it sweeps an attack the file asked for and shares its runs; with
    no iterative attack in the file there is no sweep.
    """
    iterative = [s for s in attacks if registry.get(s.kind).family is Family.ITERATIVE]
    if not iterative:
        return None
    if base is None:
        return SweepConfig(iterative[0])
    return replace(base, attack=iterative[0])


def _preset_any(name: str, dataset: str | None) -> SuiteConfig:
    """A preset even for a dataset without standard epsilons (the file supplies them)."""
    try:
        return preset(name, dataset)
    except ValueError:
        return preset(name, "cifar10")


def build_suite(
    preset_name: str,
    dataset: str | None,
    *,
    suite_file: Path | None = None,
    norms: Sequence[str] | None = None,
    epsilons: Mapping[Norm, tuple[float, ...]] | tuple[float, ...] | None = None,
    attacks: Sequence[str] | None = None,
    backend: str | None = None,
    batch_size: int | None = None,
) -> SuiteConfig:
    """The suite from a preset or a TOML file, narrowed and adjusted by flags.

    Args:
        preset_name: ``--preset``.
        dataset: the checkpoint's dataset (chooses a preset's epsilons).
        suite_file: ``--suite``; its settings replace the preset's.
        norms, epsilons, attacks, backend: the flags of the same names.
        batch_size: the attacks' batch. An explicit value wins; without it a suite file's
            ``[options] batch_size`` applies, else ``DEFAULT_BATCH_SIZE``.
    """
    if preset_name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset_name!r}")
    file_batch_size = False
    if suite_file is not None:
        suite, file_batch_size = _suite_from_file(suite_file, dataset)
    elif epsilons is not None:
        suite = _preset_any(preset_name, dataset)
    else:
        suite = preset(preset_name, dataset)
    if batch_size is not None:
        suite = suite.with_options(batch_size=batch_size)
    elif not file_batch_size:
        suite = suite.with_options(batch_size=DEFAULT_BATCH_SIZE)
    if epsilons is not None:
        if isinstance(epsilons, tuple):
            # One list for both norms would give an L2 radius the size of an L∞ one (0.03
            # under L2 is a hundredth of the usual budget): the norm must be said.
            run = [Norm.parse(n) for n in norms] if norms else list(suite.norms)
            if len(set(run)) > 1:
                # As typed, where it was typed (8/255, not 0.0313725).
                shown = (
                    epsilons.text
                    if isinstance(epsilons, BareEpsilons)
                    else ",".join(f"{e:g}" for e in epsilons)
                )
                raise ValueError(
                    f"--epsilons {shown} names no norm, but the run has "
                    f"{' and '.join(n.value for n in dict.fromkeys(run))}, whose epsilons differ "
                    f"in scale; give each its own (--epsilons '{PER_NORM_SYNTAX}') or pick one "
                    "norm with --norms"
                )
            epsilons = {norm: tuple(epsilons) for norm in run}
        suite = suite.with_options(epsilons=dict(epsilons))
    for flag, given in (("--norms", norms), ("--attacks", attacks)):
        if given is not None and not given:
            raise ValueError(
                f"{flag} is empty: it would run no attack and report the clean accuracy as "
                f"robust accuracy; name at least one, or leave {flag} out for all of the suite"
            )
    if norms is not None:
        wanted = [Norm.parse(n) for n in norms]
        missing = [n.value for n in wanted if n not in suite.epsilons]
        if missing:
            raise ValueError(
                f"--norms {','.join(missing)}: the suite has no epsilons for it; give --epsilons"
            )
        suite = suite.with_options(epsilons={n: suite.epsilons[n] for n in wanted})
    if attacks is not None:
        labels = [s.label for s in suite.attacks]
        unknown = [a for a in attacks if a not in labels]
        if unknown:
            raise ValueError(
                f"--attacks {','.join(unknown)}: not in the suite; known: {', '.join(labels)}"
            )
        kept = tuple(
            s if s.peer_of in (None, *attacks) else replace(s, peer_of=None)
            for s in suite.attacks
            if s.label in attacks
        )
        sweep = suite.sweep if suite.sweep and suite.sweep.attack.label in attacks else None
        suite = suite.with_options(attacks=kept, sweep=sweep)
    if backend is not None:
        suite = _with_backend(suite, backend)
    return suite


def _with_backend(suite: SuiteConfig, backend: str) -> SuiteConfig:
    """The suite with ``backend`` for every attack it can compute with the attack's settings."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")

    def switched(spec: AttackSpec) -> AttackSpec:
        attack = registry.get(spec.kind)
        params = {**spec.params, "backend": backend}
        if backend not in attack.backends or not attack.allows(params):
            return spec
        return replace(spec, params=params)

    specs = tuple(switched(s) for s in suite.attacks)
    if not any(s.params.get("backend") == backend for s in specs) and backend != "native":
        computable = ", ".join(registry.list_attacks(backend=backend))
        raise ValueError(
            f"--backend {backend}: no attack of the suite can be computed by it; it computes "
            f"{computable} with loss='ce' and no EOT"
        )
    sweep = suite.sweep
    if sweep is not None:
        by_label = {s.label: s for s in specs}
        sweep = replace(sweep, attack=by_label.get(sweep.attack.label, switched(sweep.attack)))
    return suite.with_options(attacks=specs, sweep=sweep)


def check_suite(
    preset_name: str,
    *,
    suite_file: Path | None = None,
    norms: Sequence[str] | None = None,
    epsilons: Mapping[Norm, tuple[float, ...]] | tuple[float, ...] | None = None,
    attacks: Sequence[str] | None = None,
    backend: str | None = None,
    batch_size: int | None = None,
) -> None:
    """Raise for a bad preset, suite file or suite flag before any checkpoint is loaded.

    Arguments as for ``build_suite``. The dataset only chooses a preset's epsilons, and every
    dataset with standard epsilons has them for every norm, so building the suite for any of
    them checks everything else: every key, attack kind, parameter name, type and value.

    Raises:
        ValueError: what ``build_suite`` raises.
    """
    build_suite(
        preset_name,
        next(iter(STANDARD_EPSILONS)),
        suite_file=suite_file,
        norms=norms,
        epsilons=epsilons,
        attacks=attacks,
        backend=backend,
        batch_size=batch_size,
    )


COST_WARNING_FACTOR = 20.0
"""A suite that may take more than this many times the standard preset's forward passes per
sample runs with a warning that says how many (`cost_warning`)."""

# pyautoattack's ensembles, in forward (and backward) passes of one sample: standard is APGD-CE
# (100 steps), APGD-T and FAB-T (9 targets of 100 steps) and Square (5,000 queries); plus
# adds five restarts of APGD-CE, APGD-DLR and FAB; rand is APGD-CE and APGD-DLR with 20 EOT
# draws per step.
_AUTOATTACK_PASSES = {"standard": 6_900.0, "plus": 8_300.0, "rand": 4_000.0}


def _attack_passes(spec: AttackSpec, num_classes: int, eot_samples: int) -> float:
    """The most forward passes (with their backward passes) of one sample that one run of
    ``spec`` at one epsilon takes: every step, restart, target, query and EOT draw."""
    attack = registry.get(spec.kind)
    params = {**attack.defaults, **spec.params}
    # The suite's EOT draws, unless the attack sets its own (as the suite passes them).
    draws = spec.params.get("eot_samples", eot_samples) if attack.eot else 1
    if params.get("backend", "native") != "native":
        draws = 1  # the reference libraries compute one gradient per step
    wrong = max(num_classes - 1, 1)
    if spec.kind == "fgsm":
        return float(draws)
    if spec.kind in ("pgd", "pgd-t"):
        targets = 1
        if params.get("target_mode") == "all":
            targets = wrong
        elif params.get("target_mode") == "top":
            targets = min(params.get("num_target_classes") or wrong, wrong)
        return float(params["num_steps"] * params["num_restarts"] * draws * targets)
    if spec.kind == "apgd":
        targets = min(params["num_target_classes"], wrong) if params["targeted"] else 1
        return float(params["num_steps"] * params["num_restarts"] * targets * draws)
    if spec.kind == "fab":
        targets = min(params["num_target_classes"], wrong) if params["targeted"] else 1
        return float(params["num_steps"] * params["num_restarts"] * targets)
    if spec.kind == "square":
        return float(params["num_queries"] * params["num_restarts"])
    if spec.kind == "noise":
        return float(params["num_draws"])
    if spec.kind == "autoattack":
        return _AUTOATTACK_PASSES[params["version"]]
    raise ValueError(f"no cost estimate for attack kind {spec.kind!r}")


def passes_per_sample(suite: SuiteConfig, num_classes: int, num_samples: int) -> dict[str, float]:
    """The most forward passes (each with its backward pass for a gradient attack) of one
    evaluated sample that each attack of ``suite`` and its sweep may take.

    The worst case: every sample attacked at every epsilon of every norm by every attack, for
    all its steps, restarts, targets, queries and EOT draws. Early stopping and the worst case
    over attacks (a broken sample is not attacked again) only save.

    Args:
        suite: the suite.
        num_classes: the model's classes (the targets of a targeted attack).
        num_samples: the evaluation samples (the independent sweep attacks a subsample).

    Returns:
        Per attack label (and ``"sweep"``), passes per evaluated sample.
    """
    per_norm = {norm: len(values) for norm, values in suite.epsilons.items()}
    runs = sum(per_norm.values())
    costs = {
        spec.label: runs * _attack_passes(spec, num_classes, suite.eot_samples)
        for spec in suite.attacks
    }
    if suite.sweep is not None:
        points = suite.sweep.num_points + int(suite.sweep.unbounded)
        share = min(suite.sweep.independent_samples, num_samples) / max(num_samples, 1)
        one = _attack_passes(suite.sweep.attack, num_classes, suite.eot_samples)
        costs["sweep"] = len(per_norm) * points * one * (1 + share)
    return costs


def cost_warning(suite: SuiteConfig, num_classes: int, num_samples: int) -> str | None:
    """A warning for a suite that may take more than ``COST_WARNING_FACTOR`` times the
    standard preset's passes per sample (None otherwise), with the estimate: the suite's
    values are each within their bounds, but together they may run for days."""
    costs = passes_per_sample(suite, num_classes, num_samples)
    standard = sum(
        passes_per_sample(preset("standard", "cifar10"), num_classes, num_samples).values()
    )
    total = sum(costs.values())
    factor = total / standard
    if factor <= COST_WARNING_FACTOR:
        return None
    largest = max(costs, key=costs.__getitem__)
    return (
        f"the suite may take up to {total:,.0f} passes of the model per sample (a forward "
        f"pass, and a backward one for a gradient attack), {total * num_samples:,.0f} for "
        f"the {num_samples} samples (most in {largest}: {costs[largest]:,.0f} per sample): "
        f"{factor:,.0f} times the standard preset's {standard:,.0f}, so expect it to run up to "
        f"{factor:,.0f} times as long"
    )


ACTIVE_MEASURES = ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace")
"""The flatness measures repeated with the dropout-family layers active."""


def active_flatness_config(config: FlatnessConfig) -> FlatnessConfig:
    """``config``'s Fisher-Rao norms and Hessian trace, with the dropout-family layers active.

    Train mode with batch norm frozen (``flatness.Mode.TRAIN``), with the same targets and
    budgets as in eval mode. One dropout draw per sample and draw: the estimators average over
    their draws (each a mini-batch with its own dropout draws and probes), so the dropout is
    Monte-Carlo averaged and its spread is part of the standard error.
    """
    measures = tuple(m for m in ACTIVE_MEASURES if m in {str(n) for n in config.measures})
    return FlatnessConfig(
        measures=measures,
        batch_size=config.batch_size,
        mode="train",
        num_mc_samples=1,
        options={m: config.options[m] for m in measures if m in config.options},
    )


MINIBATCH_SIZE = 64
"""Samples per draw of the doubly stochastic estimators (the Fisher-Rao norms, the Hessian
trace): a fresh mini-batch for every observation instead of a pass over all flatness samples."""


def flatness_config(preset_name: str, batch_size: int) -> FlatnessConfig:
    """Flatness estimators matched to the attack preset, each with a target precision and a
    budget (it stops at whichever comes first, and says which).

    The Fisher-Rao norms and the Hessian trace draw a fresh mini-batch of ``MINIBATCH_SIZE``
    samples per observation (doubly stochastic), to a relative standard error of 2 % (5 % in
    ``quick``) or their budget. The top eigenvalues run Lanczos on all flatness samples until
    their residual bounds are below 10⁻³ of the values. The spectral density and the loss
    landscapes are pictures: they use samples of their own (64 to 128 samples; every point
    or step is a pass over them). The same budgets apply with the dropout-family layers
    active (``active_flatness_config``).
    """
    quick = preset_name == "quick"
    drawn = {"minibatch_size": MINIBATCH_SIZE, "rel_tol": 0.05 if quick else 0.02}
    return FlatnessConfig(
        measures=(
            "fisher_rao_empirical",
            "fisher_rao_model",
            "hessian_trace",
            "hessian_eigenvalues",
            "spectral_density",
            "landscape_1d",
            "landscape_2d",
            "epsilon_sharpness",
        ),
        batch_size=min(batch_size, FLATNESS_BATCH_LIMIT),
        options={
            "fisher_rao_empirical": {**drawn, "max_draws": 8 if quick else 16},
            "fisher_rao_model": {**drawn, "max_draws": 8 if quick else 16},
            "hessian_trace": {**drawn, "max_probes": 40 if quick else 100},
            "hessian_eigenvalues": {
                "num_eigenvalues": 3,
                "rel_tol": 1e-3,
                "max_iterations": 20 if quick else 60,
            },
            "spectral_density": {
                "max_runs": 2 if quick else 3,
                "min_runs": 2,
                "rel_tol": 0.05,
                "num_steps": 20 if quick else 40,
                "num_grid_points": 200,
                "sample_size": 64,
            },
            "landscape_1d": {"num_points": 11 if quick else 21, "sample_size": 128},
            "landscape_2d": {"num_points": 7 if quick else 15, "sample_size": 64},
            "epsilon_sharpness": {"num_steps": 5 if quick else 10},
        },
    )
