"""Suites built from presets, TOML files and flags keep the margin-loss PGD's peer consistent."""

from __future__ import annotations

import pytest

from analysis.config import build_suite


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
