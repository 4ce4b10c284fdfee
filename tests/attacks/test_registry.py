"""The attack registry: one entry per kind, read from the functions' signatures, and its checks."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
import torch

from attacks import (
    ATTACKS,
    AttackSpec,
    Family,
    Norm,
    SuiteConfig,
    SweepConfig,
    apgd,
    autoattack,
    fab,
    fgsm,
    list_attacks,
    pgd,
    pgd_targeted,
    random_noise,
    registry,
    run_suite,
    square,
)
from attacks.registry import SUITE_ARGUMENTS, Param, ParameterTypeError
from attacks.suite import run_attack_spec

# Written down from the papers and the functions' documentation, not read from the registry.
EXPECTED = {
    "fgsm": (fgsm, "one-step", ("native", "cleverhans", "torchattacks"), True),
    "pgd": (pgd, "iterative", ("native", "cleverhans", "torchattacks"), True),
    "pgd-t": (pgd_targeted, "targeted", ("native", "cleverhans", "torchattacks"), True),
    "square": (square, "black-box", ("native", "pyautoattack"), False),
    "noise": (random_noise, "random", ("native",), False),
    "apgd": (apgd, "iterative", ("pyautoattack",), True),
    "fab": (fab, "minimum-norm", ("pyautoattack",), False),
    "autoattack": (autoattack, "ensemble", ("pyautoattack",), False),
}


def test_every_kind_is_registered_once_with_its_function_family_backends_and_eot() -> None:
    assert list_attacks() == list(EXPECTED)
    assert dict(ATTACKS) == {kind: function for kind, (function, *_) in EXPECTED.items()}
    for kind, (function, family, backends, eot) in EXPECTED.items():
        attack = registry.get(kind)
        assert (attack.function, attack.family.value, attack.backends, attack.eot) == (
            function,
            family,
            backends,
            eot,
        ), kind


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_parameters_are_the_signature_with_declared_types(kind: str) -> None:
    attack = registry.get(kind)
    signature = inspect.signature(attack.function)
    keyword_only = {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in SUITE_ARGUMENTS
    }
    assert list(attack.params) == list(keyword_only)
    assert dict(attack.defaults) == keyword_only
    assert set(SUITE_ARGUMENTS) <= set(signature.parameters)
    hints = typing.get_type_hints(attack.function)
    for name, param in attack.params.items():
        hint = hints[name]
        args = set(typing.get_args(hint))
        assert (type(None) in args) is param.optional, name
        if typing.get_origin(hint) is typing.Literal:
            assert param.value_type is str and set(param.choices or ()) == args, name
        else:
            assert param.value_type is hint or param.value_type in args, (name, hint)
        param.check(name, attack.defaults[name])


def test_kind_lists_by_family_and_capability() -> None:
    assert list_attacks(Family.ONE_STEP) == ["fgsm"]
    assert list_attacks("iterative") == ["pgd", "apgd"]
    assert list_attacks([Family.TARGETED, "black-box"]) == ["pgd-t", "square"]
    assert list_attacks(gradient=True) == ["fgsm", "pgd", "pgd-t", "apgd", "fab"]
    assert list_attacks("minimum-norm") == ["fab"]
    assert list_attacks(gradient=False) == ["square", "noise", "autoattack"]
    assert list_attacks(backend="torchattacks") == ["fgsm", "pgd", "pgd-t"]
    assert list_attacks(eot=True) == ["fgsm", "pgd", "pgd-t", "apgd"]
    with pytest.raises(ValueError, match="attack family must be one of"):
        list_attacks("gradient")


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as caught:
        registry.get("pdg")
    message = str(caught.value)
    assert "did you mean 'pgd'" in message
    assert "known kinds: fgsm, pgd, pgd-t, square, noise, apgd, fab, autoattack" in message


@pytest.mark.parametrize(
    ("kind", "params", "error", "message"),
    [
        ("pgd", {"num_step": 5}, ValueError, "'num_step' (did you mean 'num_steps'?); pgd takes"),
        ("square", {"num_querys": 5}, ValueError, "did you mean 'num_queries'"),
        ("noise", {"seed": 5}, ValueError, "unknown parameter 'seed'; noise takes: num_draws"),
        ("pgd", {"stochastic": True}, ValueError, "set by the suite's [options]"),
        (
            "pgd",
            {"num_steps": "5"},
            ParameterTypeError,
            "expected int in [1, 100000], got '5' (str)",
        ),
        (
            "pgd",
            {"num_steps": 5.0},
            ParameterTypeError,
            "expected int in [1, 100000], got 5.0 (float)",
        ),
        (
            "pgd",
            {"num_steps": True},
            ParameterTypeError,
            "expected int in [1, 100000], got True (bool)",
        ),
        ("pgd", {"num_steps": 0}, ValueError, "num_steps: expected int in [1, 100000], got 0"),
        (
            "pgd",
            {"num_steps": 10**12},
            ValueError,
            "num_steps: expected int in [1, 100000], got 1000000000000 (each step is a forward "
            "and backward pass of every attacked sample; 100,000 steps are 1,000 times the "
            "standard preset's 100)",
        ),
        ("pgd", {"num_restarts": 10**12}, ValueError, "in [1, 1000], got 1000000000000 (each"),
        ("pgd-t", {"eot_samples": 10**12}, ValueError, "in [1, 10000], got 1000000000000 (each"),
        ("pgd-t", {"num_target_classes": 10**12}, ValueError, "in [1, 1000] or None, got 10000"),
        ("square", {"num_queries": 10**12}, ValueError, "in [1, 1000000], got 1000000000000 ("),
        ("noise", {"num_draws": 10**12}, ValueError, "in [1, 100000], got 1000000000000 (each"),
        ("apgd", {"num_steps": 10**12}, ValueError, "num_steps: expected int in [1, 100000]"),
        ("pgd", {"rel_step_size": -0.1}, ValueError, "expected float > 0 or None, got -0.1"),
        ("pgd", {"rel_step_size": float("nan")}, ValueError, "got nan"),
        ("pgd", {"random_start": 1}, ParameterTypeError, "expected bool, got 1 (int)"),
        ("pgd", {"loss": "hinge"}, ValueError, "expected one of 'ce', 'cw', 'dlr', got 'hinge'"),
        ("pgd-t", {"target_mode": "best"}, ValueError, "target_mode: expected one of 'random'"),
        ("square", {"p_init": 1.5}, ValueError, "p_init: expected float in (0, 1], got 1.5"),
        ("square", {"p_init": 0}, ValueError, "expected float in (0, 1], got 0"),
        ("apgd", {"loss": "cw"}, ValueError, "expected one of 'ce', 'dlr'"),
        ("autoattack", {"version": "custom"}, ValueError, "one of 'standard', 'plus', 'rand'"),
        ("fgsm", {"backend": "foolbox"}, ValueError, "backend: expected one of 'native'"),
        ("pgd", {"rel_step_size": 0.1, "abs_step_size": 0.1}, ValueError, "not both"),
        ("pgd", {"loss": "cw", "backend": "cleverhans"}, ValueError, "got loss='cw'"),
        ("fgsm", {"eot_samples": 4, "backend": "torchattacks"}, ValueError, "got eot_samples=4"),
        ("pgd-t", {"target_mode": "all", "backend": "torchattacks"}, ValueError, "'all'"),
    ],
)
def test_bad_parameters_say_expected_and_got(kind, params, error, message) -> None:
    with pytest.raises(error) as caught:
        registry.get(kind).check(params)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"{kind}: ")


def test_a_wrong_type_is_a_type_error_and_a_value_error() -> None:
    with pytest.raises(TypeError):
        registry.get("noise").check({"num_draws": "many"})
    with pytest.raises(ValueError):
        registry.get("noise").check({"num_draws": "many"})


def test_the_registered_checks_agree_with_the_functions_own(model, data) -> None:
    """What the registry refuses, the function refuses too (so nothing valid is lost)."""
    x, y = data
    for params in ({"num_steps": 0}, {"rel_step_size": 0.1, "abs_step_size": 0.1}):
        assert not registry.get("pgd").allows(params)
        with pytest.raises(ValueError):
            pgd(model, x, y, [0.1], **params)
    assert not registry.get("fgsm").allows({"loss": "cw", "backend": "cleverhans"})
    with pytest.raises(ValueError, match="use backend='native'"):
        fgsm(model, x, y, [0.1], loss="cw", backend="cleverhans")
    assert registry.get("pgd").allows({"num_steps": 2, "loss": "dlr", "keep": "last"})


def _library_combinations() -> list[tuple[str, dict[str, object]]]:
    cases: list[tuple[str, dict[str, object]]] = []
    for backend in ("cleverhans", "torchattacks"):
        for loss in ("ce", "cw", "dlr"):
            for eot_samples in (1, 2):
                settings = {"backend": backend, "loss": loss, "eot_samples": eot_samples}
                cases += [("fgsm", settings), ("pgd", settings)]
                cases += [
                    ("pgd-t", {**settings, "target_mode": mode})
                    for mode in ("random", "next", "least-likely", "all")
                ]
    return cases


@pytest.mark.parametrize(("kind", "params"), _library_combinations())
def test_a_library_backend_refuses_what_it_cannot_compute_as_the_registry_does(
    kind, params, model, data
) -> None:
    """The libraries compute the cross-entropy without EOT, one target per sample (their docs)."""
    x, y = data
    attack = registry.get(kind)
    computable = (
        params["loss"] == "ce" and params["eot_samples"] == 1 and params.get("target_mode") != "all"
    )
    steps = {} if kind == "fgsm" else {"num_steps": 4}
    if computable:
        assert attack.allows(params)
        result = attack.function(model, x, y, [0.1], **params, **steps)
        assert result.backend == params["backend"]
        return
    with pytest.raises(ValueError) as registered:
        attack.check(params)
    with pytest.raises(ValueError) as called:
        attack.function(model, x, y, [0.1], **params, **steps)
    message = str(called.value)
    assert str(registered.value) == f"{kind}: {message}"
    assert message.endswith("use backend='native'")
    assert f"backend {params['backend']!r} supports loss='ce', eot_samples=1" in message
    asked = [f"loss={params['loss']!r}"] if params["loss"] != "ce" else []
    asked += ["eot_samples=2"] if params["eot_samples"] != 1 else []
    asked += ["target_mode='all'"] if params.get("target_mode") == "all" else []
    assert f"got {', '.join(asked)};" in message


@pytest.mark.parametrize(
    ("kind", "params", "epsilons", "fraction"),
    [
        ("pgd", {"num_steps": 1}, [0.1], "2.5"),
        ("pgd", {"num_steps": 10, "rel_step_size": 1.5}, [0.1], "1.5"),
        ("pgd-t", {"num_steps": 2}, [0.1], "1.25"),
        ("pgd", {"num_steps": 10, "abs_step_size": 0.2}, [0.0, 0.1, 0.4], "2"),
    ],
)
def test_cleverhans_refuses_a_step_longer_than_epsilon_before_any_work(
    kind, params, epsilons, fraction, model, data
) -> None:
    """cleverhans' projected_gradient_descent asserts ``eps_iter <= eps`` (its source)."""
    x, y = data
    attack = registry.get(kind)
    settings = {**params, "backend": "cleverhans"}
    with pytest.raises(ValueError) as called:
        attack.function(model, x, y, epsilons, **settings)
    message = str(called.value)
    assert f"got a step of {fraction} epsilon; set rel_step_size <= 1" in message
    # A fixed step is a multiple of epsilon only once the epsilons are known.
    assert attack.allows(settings) is ("abs_step_size" in params)
    for backend in ("torchattacks", "native"):
        result = attack.function(model, x, y, epsilons, **{**settings, "backend": backend})
        assert result.backend == backend


def test_registration_refuses_declarations_that_drift_from_the_signature() -> None:
    def attack(
        model,
        x,
        y,
        epsilons,
        *,
        norm="linf",
        num_steps: int = 1,
        alpha: float = 0.1,
        bounds=(0.0, 1.0),
        batch_size=None,
        stochastic=False,
        generator=None,
        sample_ids=None,
    ):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match=r"differ from the function's \['alpha', 'num_steps'\]"):
        registry.register(
            "drifted", attack, family="iterative", params={"num_steps": Param(int, minimum=1)}
        )
    with pytest.raises(ValueError, match="the default of alpha: expected float >= 0.5, got 0.1"):
        registry.register(
            "drifted",
            attack,
            family="iterative",
            params={"num_steps": Param(int), "alpha": Param(float, minimum=0.5)},
        )
    with pytest.raises(ValueError, match="already registered"):
        registry.register("pgd", pgd, family="iterative", params={})
    assert "drifted" not in list_attacks()


def test_attack_specs_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match=r"attack 'pgd-ce' \(pgd\): unknown parameter 'steps'"):
        AttackSpec("pgd", "pgd-ce", {"steps": 10})
    with pytest.raises(ValueError, match="attack 'x': unknown attack kind 'cw'"):
        AttackSpec("cw", "x")
    with pytest.raises(ValueError, match=r"sweep num_points: expected int in \[1, 1000\], got 0"):
        SweepConfig(AttackSpec("pgd", "pgd-ce"), num_points=0)
    with pytest.raises(ValueError, match=r"eot_samples: expected int in \[1, 10000\], got 0"):
        SuiteConfig("s", {Norm.LINF: (0.1,)}, (AttackSpec("fgsm", "fgsm"),), eot_samples=0)


def test_suite_settings_reach_only_the_attacks_that_take_them(model, data) -> None:
    """The independent sweep turns off early stopping and nesting; random noise has no early
    stopping to turn off, and EOT goes only to attacks computed natively."""
    x, y = data
    noise = AttackSpec("noise", "noise", {"num_draws": 3})
    config = SuiteConfig(
        "noise-sweep",
        {Norm.LINF: (0.05,)},
        (noise,),
        sweep=SweepConfig(noise, num_points=2, unbounded=False, independent_samples=12),
        eot_samples=3,
    )
    result = run_suite(model, x, y, config, generator=0)
    independent = result.norm("linf").independent_sweep
    assert independent is not None and independent.kind == "noise"
    subset = independent.sample_index
    clean = result.clean_correct[subset]
    # Not nested: every clean-correct sample of the subsample is attacked at every epsilon,
    # including those broken at the smaller one.
    assert torch.equal(independent.attacked[:, subset], clean.expand(2, -1))
    library = run_attack_spec(
        AttackSpec("fgsm", "fgsm", {"backend": "cleverhans"}),
        model,
        x,
        y,
        [0.1],
        norm=Norm.LINF,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )
    native = run_attack_spec(
        AttackSpec("fgsm", "fgsm"),
        model,
        x,
        y,
        [0.1],
        norm=Norm.LINF,
        config=config,
        generator=torch.Generator().manual_seed(0),
    )
    assert library.params["eot_samples"] == 1 and native.params["eot_samples"] == 3


def test_every_count_a_suite_sets_has_an_upper_bound_that_says_why() -> None:
    """Every whole-number setting of a kind, a sweep and a suite's options is bounded, with
    the reason said when a value exceeds it; the bounds admit every preset's values and
    every value AutoAttack and the NormOut thesis use."""
    from attacks.presets import SUITE_OPTIONS, SWEEP_PARAMS, preset

    params = [
        (f"{kind}.{name}", param)
        for kind in list_attacks()
        for name, param in registry.get(kind).params.items()
    ]
    params += [(f"sweep.{n}", p) for n, p in SWEEP_PARAMS.items()]
    params += [(f"options.{n}", p) for n, p in SUITE_OPTIONS.items()]
    counts = [(name, p) for name, p in params if p.value_type is int]
    assert len(counts) >= 15
    for name, param in counts:
        assert param.maximum is not None and len(param.why) > 30, name
        with pytest.raises(ValueError, match=r"\(.{30,}\)$"):
            param.check(name, int(param.maximum) + 1)
    for name in ("quick", "standard", "thesis", "thorough"):
        for dataset in ("mnist", "cifar10", "digits"):
            preset(name, dataset)  # builds, so every value is within its bounds
    # AutoAttack's own budgets: APGD 100 steps (5 restarts in "plus"), 9 targets, Square
    # 5,000 queries; EOT 20 draws in "rand".
    registry.get("apgd").check({"num_steps": 100, "num_restarts": 5, "num_target_classes": 9})
    registry.get("square").check({"num_queries": 5000})
    registry.get("pgd").check({"eot_samples": 20})


def test_readme_lists_every_kind_with_its_family() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for kind in list_attacks():
        attack = registry.get(kind)
        assert f"| `{kind}` | {attack.family.value} |" in readme, kind
