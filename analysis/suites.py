"""The attack suite of an audit: a preset or a TOML suite file, narrowed and adjusted by flags.

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

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from analysis.epsilons import PER_NORM_SYNTAX, BareEpsilons, ascending_epsilons, parse_epsilon
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

PRESETS = ("quick", "standard", "thesis", "thorough")
DEFAULT_BATCH_SIZE = 500
"""The attacks' batch (``SuiteConfig.batch_size``) unless a suite file or the caller's
``SuiteConfig`` sets one; ``--batch-size`` is the model's chunk instead (``analysis.config``)."""


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
                parsed.append(parse_epsilon(value))
                continue
        except ValueError:
            pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterTypeError(
                f'{where}: expected a list of numbers or fractions (0.5, "8/255"), got {values!r}'
            )
        parsed.append(float(value))
    return ascending_epsilons(tuple(parsed), where)


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
