"""Inputs that are allowed but unusual run with a warning: an epsilon that covers the whole
input box, a suite that asks for far more work than the standard preset."""

from __future__ import annotations

from bad_input_builders import ZOO, _audit, _write

from commands import audit
from core.boundary import EXIT_INTERRUPTED


def test_an_epsilon_covering_the_box_runs_with_a_warning(tmp_path, capsys):
    argv = _audit("--epsilons", "1e9", "--norms", "linf", "--attacks", "fgsm")(tmp_path)
    assert audit.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: linf epsilon 1e+09 covers the whole input box" in err
    assert (tmp_path / "out" / ZOO.stem / "audit.json").is_file()


def test_a_costly_suite_runs_with_its_estimate(tmp_path, capsys, monkeypatch):
    """Values within their bounds that together ask for far more work than the standard
    preset: the audit says how much before it starts."""

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(audit, "run_audit", stop)
    suite = _write(
        tmp_path / "costly.toml", '[[attacks]]\nkind = "square"\nnum_queries = 1000000\n'
    )
    assert audit.main(_audit("--suite", str(suite))(tmp_path)) == EXIT_INTERRUPTED
    warning = capsys.readouterr().err.splitlines()[0]
    # The suite: Square alone, 10^6 queries at each of two norms' one epsilon, no sweep (no
    # PGD to sweep). The standard preset, per norm: PGD-CE, PGD-T and PGD-CW of 100 steps,
    # FGSM 1, noise 100, Square 5,000, APGD-T and FAB-T 9 targets x 100 steps each: 7,201;
    # its sweep: 8 points and the unbounded one x 100 steps, on every sample and again on the
    # independent subsample (all 20 here): 1,800; two norms: 18,002.
    assert warning == (
        f"warning: {ZOO}: the suite may take up to 2,000,000 passes of the model per sample (a "
        "forward pass, and a backward one for a gradient attack), 40,000,000 for the 20 "
        "samples (most in square: 2,000,000 per sample): 111 times the standard preset's "
        "18,002, so expect it to run up to 111 times as long"
    )
