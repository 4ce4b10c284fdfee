"""Suites built from presets, TOML files and flags keep the margin-loss PGD's peer consistent."""

from __future__ import annotations

import pytest

from analysis.config import (
    PRESETS,
    build_suite,
    check_suite,
    cost_warning,
    parse_epsilons,
    passes_per_sample,
)
from attacks import AttackSpec, Norm, SuiteConfig, SweepConfig
from checkpoints.train import ZOO_DIR


def test_a_peer_survives_attack_selection_only_with_its_peer():
    kept = build_suite("quick", "digits", attacks=["pgd-ce", "pgd-cw"])
    assert [(s.label, s.peer_of) for s in kept.attacks] == [("pgd-ce", None), ("pgd-cw", "pgd-ce")]
    alone = build_suite("quick", "digits", attacks=["pgd-cw", "square"])
    assert [(s.label, s.peer_of) for s in alone.attacks] == [("pgd-cw", None), ("square", None)]


def test_suite_file_carries_peer_of(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(
        "[epsilons]\nlinf = [0.1]\n\n"
        '[[attacks]]\nkind = "pgd"\nlabel = "pgd-ce"\nnum_steps = 5\n\n'
        '[[attacks]]\nkind = "pgd"\nlabel = "pgd-margin"\nloss = "cw"\nnum_steps = 5\n'
        'peer_of = "pgd-ce"\n'
    )
    suite = build_suite("quick", "digits", suite_file=path)
    margin = suite.attacks[1]
    assert margin.peer_of == "pgd-ce" and margin.params == {"loss": "cw", "num_steps": 5}
    path.write_text(path.read_text().replace('peer_of = "pgd-ce"', 'peer_of = "square"'))
    with pytest.raises(ValueError, match="peer_of must name an earlier attack"):
        build_suite("quick", "digits", suite_file=path)


VALID_ATTACK = '[[attacks]]\nkind = "pgd"\nlabel = "pgd-ce"\nnum_steps = 5\n'

# (suite file, what the one line must say); each file is wrong in exactly one place.
BAD_SUITE_FILES = [
    (
        '[[attacks]]\nkind = "pdg"\n',
        "unknown attack kind 'pdg' (did you mean 'pgd'?); known kinds: "
        "fgsm, pgd, pgd-t, square, noise, apgd, fab, autoattack",
    ),
    ('[[attacks]]\nlabel = "x"\nnum_steps = 5\n', "[[attacks]] #1 has no kind; known kinds: fgsm"),
    (
        VALID_ATTACK.replace("num_steps", "num_step"),
        "attack 'pgd-ce' (pgd): unknown parameter 'num_step' (did you mean 'num_steps'?); "
        "pgd takes: num_steps, rel_step_size, abs_step_size, random_start, num_restarts, loss, "
        "keep, early_stop, nested, eot_samples, backend",
    ),
    (
        '[[attacks]]\nkind = "square"\nnum_steps = 10\n',
        "unknown parameter 'num_steps'; square takes",
    ),
    (VALID_ATTACK.replace("= 5", '= "5"'), "num_steps: expected int in [1, 100000], got '5' (str)"),
    (
        VALID_ATTACK.replace("= 5", "= 5.5"),
        "num_steps: expected int in [1, 100000], got 5.5 (float)",
    ),
    (VALID_ATTACK.replace("= 5", "= -5"), "num_steps: expected int in [1, 100000], got -5"),
    (VALID_ATTACK + "random_start = 1\n", "random_start: expected bool, got 1 (int)"),
    (VALID_ATTACK + "rel_step_size = 0\n", "rel_step_size: expected float > 0 or None, got 0"),
    (VALID_ATTACK + "rel_step_size = nan\n", "rel_step_size: expected float > 0 or None, got nan"),
    (VALID_ATTACK + "rel_step_size = 0.1\nabs_step_size = 0.1\n", "not both"),
    (VALID_ATTACK + 'loss = "hinge"\n', "loss: expected one of 'ce', 'cw', 'dlr', got 'hinge'"),
    (
        VALID_ATTACK + 'backend = "torchattacks"\nloss = "cw"\n',
        "got loss='cw'; use backend='native'",
    ),
    (VALID_ATTACK + "batch_size = 10\n", "'batch_size' is not a parameter of an attack"),
    ('[[attacks]]\nkind = "square"\np_init = 2.0\n', "p_init: expected float in (0, 1], got 2.0"),
    ('[[attacks]]\nkind = "apgd"\nloss = "cw"\n', "loss: expected one of 'ce', 'dlr', got 'cw'"),
    ('[[attacks]]\nkind = "pgd"\nlabel = 3\n', "label must be a non-empty string, got 3"),
    ('attacks = "pgd"\n', "attacks must be one or more [[attacks]] tables"),
    ('[[attack]]\nkind = "pgd"\n', "unknown top-level key 'attack' (did you mean 'attacks'?)"),
    ('[epsilons]\nlinf = ["0.1"]\n', "epsilons.linf: expected a list of numbers"),
    ("[epsilons]\nlinf = [0.3, 0.1]\n", "epsilons must be positive, finite and ascending"),
    ("[epsilons]\nl1 = [0.1]\n", "norm must be one of 'linf', 'l2', got 'l1'"),
    (
        VALID_ATTACK + '[sweep]\nattack = "pgd-ce"\nnum_point = 4\n',
        "unknown [sweep] key 'num_point' (did you mean 'num_points'?); valid: attack, num_points",
    ),
    (
        VALID_ATTACK + '[sweep]\nattack = "pgd-ce"\nnum_points = "4"\n',
        "sweep num_points: expected int in [1, 1000], got '4' (str)",
    ),
    (
        VALID_ATTACK + '[sweep]\nattack = "pgd-ce"\nindependent_samples = -1\n',
        "sweep independent_samples: expected int in [0, 1000000], got -1",
    ),
    (VALID_ATTACK + '[sweep]\nattack = "square"\n', "sweep.attack must name an attack label"),
    (
        "[options]\neot_sample = 4\n",
        "unknown [options] key 'eot_sample' (did you mean 'eot_samples'",
    ),
    ("[options]\neot_samples = 0\n", "eot_samples: expected int in [1, 10000], got 0"),
    (
        VALID_ATTACK.replace("= 5", "= 1000000000000"),
        "num_steps: expected int in [1, 100000], got 1000000000000 (each step is a forward",
    ),
    (
        '[[attacks]]\nkind = "square"\nnum_queries = 1000000000000\n',
        "num_queries: expected int in [1, 1000000], got 1000000000000 (each query is a forward "
        "pass of every attacked sample; 1,000,000 queries are 200 times the standard preset's "
        "5,000)",
    ),
    (
        VALID_ATTACK + '[sweep]\nattack = "pgd-ce"\nnum_points = 1000000000\n',
        "sweep num_points: expected int in [1, 1000], got 1000000000 (each point is one more run",
    ),
    (
        VALID_ATTACK + '[sweep]\nattack = "pgd-ce"\nindependent_samples = 1000000000000\n',
        "independent_samples: expected int in [0, 1000000], got 1000000000000 (a subsample",
    ),
    ("[options]\nbatch_size = 1000000000000\n", "batch_size: expected int in [1, 1000000] or"),
    ('[options]\nskip_broken = "yes"\n', "skip_broken: expected bool, got 'yes' (str)"),
    ("options = 3\n", "[options] must be a table, got 3"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SUITE_FILES)
def test_a_bad_suite_file_is_one_line_and_exit_2_before_anything_is_loaded(
    tmp_path, capsys, monkeypatch, text, message
):
    import commands.audit as audit

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was loaded before the suite was checked")

    monkeypatch.setattr(audit, "load_checkpoint", refuse)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    code = audit.main(
        [str(ZOO_DIR / "digits-mlp-none.pt"), "--suite", str(path), "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: suite file {path}: ")
    assert message in err
    assert not out.exists()


def test_bad_suite_flags_are_refused_before_anything_is_loaded(tmp_path, capsys, monkeypatch):
    import commands.audit as audit

    monkeypatch.setattr(audit, "load_checkpoint", lambda *a, **k: pytest.fail("loaded"))
    checkpoint = str(ZOO_DIR / "digits-mlp-none.pt")
    for flags, message in (
        (["--attacks", "square", "--backend", "cleverhans"], "no attack of the suite"),
        (["--backend", "foolbox"], "--backend must be one of"),
        (["--attacks", "pgd-ce,pgd-cx"], "not in the suite"),
    ):
        assert audit.main([checkpoint, "--out", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_valid_suite_file_with_every_kind_builds(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(
        'name = "every-kind"\n[epsilons]\nlinf = [0.05, 0.1]\nl2 = 0.5\n'
        '[[attacks]]\nkind = "pgd"\nlabel = "pgd-ce"\nnum_steps = 5\nrel_step_size = 1\n'
        'keep = "last"\nearly_stop = false\nbackend = "cleverhans"\n'
        '[[attacks]]\nkind = "pgd-t"\ntarget_mode = "all"\nloss = "dlr"\neot_samples = 2\n'
        '[[attacks]]\nkind = "pgd"\nlabel = "pgd-cw"\nloss = "cw"\npeer_of = "pgd-ce"\n'
        '[[attacks]]\nkind = "fgsm"\n'
        '[[attacks]]\nkind = "noise"\nnum_draws = 7\n'
        '[[attacks]]\nkind = "square"\nnum_queries = 10\np_init = 1\nrescale_schedule = true\n'
        '[[attacks]]\nkind = "apgd"\ntargeted = true\nnum_target_classes = 3\n'
        '[[attacks]]\nkind = "autoattack"\nversion = "rand"\n'
        '[sweep]\nattack = "noise"\nnum_points = 2\nmax_factor = 2\nunbounded = false\n'
        "[options]\nskip_broken = false\neot_samples = 2\nbatch_size = 64\n"
    )
    suite = build_suite("standard", None, suite_file=path)
    assert suite.name == "every-kind" and suite.epsilons == {
        Norm.LINF: (0.05, 0.1),
        Norm.L2: (0.5,),
    }
    assert [s.kind for s in suite.attacks] == [
        "pgd",
        "pgd-t",
        "pgd",
        "fgsm",
        "noise",
        "square",
        "apgd",
        "autoattack",
    ]
    assert suite.attacks[0].params["rel_step_size"] == 1 and suite.attacks[5].params["p_init"] == 1
    assert suite.sweep is not None and suite.sweep.attack.label == "noise"
    assert (suite.skip_broken, suite.eot_samples, suite.batch_size) == (False, 2, 64)
    # --backend switches what the library can compute; the margin-loss PGD, the multi-target
    # PGD-T with DLR and EOT, and the attacks without a choice of backend are left as they are.
    switched = build_suite("standard", None, suite_file=path, backend="torchattacks")
    assert [s.params.get("backend") for s in switched.attacks] == [
        "torchattacks",
        None,
        None,
        "torchattacks",
        None,
        None,
        None,
        None,
    ]


def test_backend_flag_on_the_standard_suite():
    suite = build_suite("standard", "mnist", backend="cleverhans")
    backends = {s.label: s.params.get("backend") for s in suite.attacks}
    assert backends == {
        "pgd-ce": "cleverhans",
        "pgd-t": "cleverhans",
        "pgd-cw": None,
        "fgsm": "cleverhans",
        "noise": None,
        "square": None,
        # AutoAttack's APGD-T and FAB-T are pyautoattack's own code: the flag does not apply.
        "apgd-t": None,
        "fab-t": None,
    }
    assert suite.sweep is not None and suite.sweep.attack.params["backend"] == "cleverhans"


def test_a_valid_suite_file_runs_through_the_command_line(tmp_path, capsys):
    import json

    from commands.audit import main

    path = tmp_path / "small.toml"
    path.write_text(
        "[epsilons]\nlinf = [0.1]\n"
        '[[attacks]]\nkind = "pgd"\nlabel = "pgd-ce"\nnum_steps = 3\nrel_step_size = 0.5\n'
        '[[attacks]]\nkind = "noise"\nnum_draws = 5\n'
        # A sweep of an attack without early stopping: the independent runs still work.
        '[sweep]\nattack = "noise"\nnum_points = 2\nindependent_samples = 10\n'
    )
    out = tmp_path / "out"
    checkpoint = ZOO_DIR / "digits-mlp-none.pt"
    flags = ["--suite", str(path), "--num-samples", "40", "--no-flatness", "--quiet"]
    assert main([str(checkpoint), *flags, "--out", str(out)]) == 0
    document = json.loads((out / checkpoint.stem / "audit.json").read_text())
    suite = document["provenance"]["config"]["suite"]
    assert [(a["kind"], a["label"], a["params"]) for a in suite["attacks"]] == [
        ("pgd", "pgd-ce", {"num_steps": 3, "rel_step_size": 0.5}),
        ("noise", "noise", {"num_draws": 5}),
    ]
    assert suite["sweep"]["attack"]["label"] == "noise"


@pytest.mark.parametrize(
    ("attacks", "swept"),
    [
        ('kind = "square"\n[[attacks]]\nkind = "pgd"\nlabel = "mine"\nnum_steps = 7\n', "mine"),
        ('kind = "fgsm"\n[[attacks]]\nkind = "apgd"\n[[attacks]]\nkind = "pgd"\n', "apgd"),
        ('kind = "fgsm"\n[[attacks]]\nkind = "square"\n[[attacks]]\nkind = "autoattack"\n', None),
        ('kind = "pgd-t"\n[[attacks]]\nkind = "noise"\n', None),
    ],
)
def test_a_file_with_its_own_attacks_and_no_sweep_sweeps_its_first_iterative_one(
    tmp_path, attacks, swept
):
    path = tmp_path / "own.toml"
    path.write_text('preset = "quick"\n[[attacks]]\n' + attacks)
    suite = build_suite("quick", "digits", suite_file=path)
    base = build_suite("quick", "digits").sweep
    if swept is None:
        assert suite.sweep is None
        return
    assert suite.sweep is not None and base is not None
    (spec,) = [s for s in suite.attacks if s.label == swept]
    # The file's own attack, exactly (so the sweep shares its runs), the preset's settings.
    assert suite.sweep.attack == spec
    assert (suite.sweep.num_points, suite.sweep.max_factor, suite.sweep.unbounded) == (
        base.num_points,
        base.max_factor,
        base.unbounded,
    )
    assert suite.sweep.independent_samples == base.independent_samples


def test_the_cost_estimate_counts_every_pass_by_hand():
    """Per sample, every step, restart, target, query and EOT draw at every epsilon of every
    norm, and the sweep's points on every sample and on the independent subsample."""
    suite = SuiteConfig(
        name="hand",
        epsilons={Norm.LINF: (0.1, 0.2), Norm.L2: (0.5,)},
        attacks=(
            AttackSpec("pgd", "pgd", {"num_steps": 10, "num_restarts": 2}),
            AttackSpec("pgd-t", "pgd-t", {"num_steps": 5, "target_mode": "top"}),
            AttackSpec("fgsm", "fgsm", {"eot_samples": 4}),
            AttackSpec("square", "square", {"num_queries": 300}),
            AttackSpec("noise", "noise", {"num_draws": 7}),
            AttackSpec("apgd", "apgd-t", {"targeted": True, "num_target_classes": 20}),
            AttackSpec("apgd", "eot-apgd", {"num_steps": 10, "eot_samples": 20}),
            AttackSpec("fab", "fab-t", {"num_steps": 50}),
            AttackSpec("autoattack", "aa", {"version": "standard"}),
        ),
        sweep=SweepConfig(
            AttackSpec("pgd", "pgd", {"num_steps": 10, "num_restarts": 2}),
            num_points=4,
            independent_samples=25,
        ),
        eot_samples=3,
    )
    costs = passes_per_sample(suite, num_classes=10, num_samples=100)
    assert costs == {
        "pgd": 3 * 10 * 2 * 3,  # three epsilons; 10 steps, 2 restarts, the suite's 3 EOT draws
        "pgd-t": 3 * 5 * 9 * 3,  # all 9 wrong classes of 10 ("top" without a count)
        "fgsm": 3 * 4,  # its own 4 EOT draws
        "square": 3 * 300,
        "noise": 3 * 7,
        "apgd-t": 3 * 100 * 9 * 3,  # 100 steps toward at most the 9 wrong classes, 3 EOT draws
        "eot-apgd": 3 * 10 * 20,  # its own 20 EOT draws
        "fab-t": 3 * 50 * 9,  # 50 steps toward each of the 9 wrong classes
        "aa": 3 * (100 + 9 * 100 + 9 * 100 + 5000),  # APGD-CE, APGD-T, FAB-T, Square
        "sweep": 2 * (4 + 1) * (10 * 2 * 3) * (1 + 25 / 100),  # two norms, 4 points + unbounded
    }


@pytest.mark.parametrize("name", PRESETS)
def test_no_preset_is_called_costly(name):
    for dataset, classes in (("digits", 10), ("cifar10", 10), ("mnist", 10)):
        for samples in (1, 450, 10_000):
            assert cost_warning(build_suite(name, dataset), classes, samples) is None


def test_a_costly_suite_is_said_with_its_estimate(tmp_path):
    path = tmp_path / "costly.toml"
    path.write_text('[[attacks]]\nkind = "pgd"\nnum_steps = 100000\n')
    warning = cost_warning(build_suite("standard", "digits", suite_file=path), 10, 1000)
    # 100,000 steps at two norms' epsilon, and the sweep of it (9 points on every sample and
    # again on the independent 100 of 1,000): 200,000 + 2 x 9 x 100,000 x 1.1 = 2,180,000.
    assert warning is not None and warning.startswith(
        "the suite may take up to 2,180,000 passes of the model per sample"
    )
    assert "2,180,000,000 for the 1000 samples (most in sweep: 1,980,000 per sample)" in warning


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8/255", (8 / 255,)),
        ("0.5", (0.5,)),
        ("1e-3", (0.001,)),
        ("2/255, 8/255,0.1", (2 / 255, 8 / 255, 0.1)),
        ("linf=8/255;l2=0.5", {Norm.LINF: (8 / 255,), Norm.L2: (0.5,)}),
        ("linf = 4/255, 8/255 ; l2 = 1/2", {Norm.LINF: (4 / 255, 8 / 255), Norm.L2: (0.5,)}),
    ],
)
def test_epsilons_are_decimals_or_fractions(text, expected):
    assert parse_epsilons(text) == expected


@pytest.mark.parametrize(
    "text",
    ["8/0", "8/-255", "8/255/2", "2**-3", "__import__('os')", "1/inf", "8/", "/255", "0x10"],
)
def test_anything_but_a_number_or_fraction_is_refused(text):
    with pytest.raises(ValueError, match=r"--epsilons must be comma-separated numbers or fract"):
        parse_epsilons(text)


def test_a_bare_list_for_two_norms_is_refused_naming_the_per_norm_syntax():
    bare = parse_epsilons("0.1,0.2")
    with pytest.raises(ValueError) as caught:
        build_suite("quick", "digits", epsilons=bare)
    message = str(caught.value)
    assert "\n" not in message
    assert "--epsilons 0.1,0.2 names no norm" in message and "linf and l2" in message
    assert "--epsilons 'linf=8/255;l2=0.5'" in message and "--norms" in message
    with pytest.raises(ValueError, match="names no norm"):
        check_suite("quick", epsilons=bare)
    with pytest.raises(ValueError, match="names no norm"):
        build_suite("quick", "digits", epsilons=bare, norms=["linf", "l2"])
    # One norm chosen, or a suite of one norm: the list is that norm's.
    alone = build_suite("quick", "digits", epsilons=bare, norms=["l2"])
    assert dict(alone.epsilons) == {Norm.L2: (0.1, 0.2)}


@pytest.mark.parametrize("text", ["8/255", "2/255,8/255", "1e-2, 0.1"])
def test_a_refused_bare_list_is_echoed_as_typed(text, tmp_path, capsys, monkeypatch):
    # A fraction is echoed as the fraction typed, not as its decimal value (0.0313725).
    with pytest.raises(ValueError) as caught:
        build_suite("quick", "digits", epsilons=parse_epsilons(text))
    assert f"--epsilons {text} names no norm" in str(caught.value)
    import commands.audit as audit

    monkeypatch.setattr(audit, "load_checkpoint", lambda *a, **k: pytest.fail("loaded"))
    checkpoint = str(ZOO_DIR / "digits-mlp-none.pt")
    assert audit.main([checkpoint, "--epsilons", text, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: --epsilons {text} names no norm" in err
    # The values are still the plain tuple, and what one norm runs is plain too.
    assert parse_epsilons(text) == tuple(parse_epsilons(text))
    alone = build_suite("quick", "digits", epsilons=parse_epsilons(text), norms=["linf"])
    assert type(alone.epsilons[Norm.LINF]) is tuple


def test_a_bare_list_is_the_epsilons_of_a_one_norm_suite_file(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text("[epsilons]\nl2 = [0.5]\n\n" + VALID_ATTACK)
    suite = build_suite("quick", "digits", suite_file=path, epsilons=parse_epsilons("1/4,1/2"))
    assert dict(suite.epsilons) == {Norm.L2: (0.25, 0.5)}


def test_a_suite_file_takes_fractions_as_strings(tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text('[epsilons]\nlinf = ["4/255", "8/255"]\nl2 = [0.5]\n\n' + VALID_ATTACK)
    suite = build_suite("quick", "digits", suite_file=path)
    assert dict(suite.epsilons) == {Norm.LINF: (4 / 255, 8 / 255), Norm.L2: (0.5,)}
    path.write_text('[epsilons]\nlinf = ["8/0"]\n\n' + VALID_ATTACK)
    with pytest.raises(ValueError, match=r"epsilons.linf: expected a list of numbers or fr"):
        build_suite("quick", "digits", suite_file=path)
