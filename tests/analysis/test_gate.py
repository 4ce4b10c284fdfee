"""The CI gate: passes an unchanged model, fails a weakened one and a new red flag."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from analysis.gate import compare
from checkpoints import load_checkpoint, save_checkpoint
from checkpoints.train import ZOO_DIR
from commands.audit import main as audit_main
from commands.gate import main as gate_main
from core.document import AuditResult, read_document, write_json

AUDIT = ["--preset", "quick", "--no-flatness", "--num-samples", "120", "--quiet"]


@pytest.fixture(scope="module")
def weakened(tmp_path_factory) -> str:
    """The digits dropout MLP with noise on its weights: clearly less accurate."""
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt")
    network = loaded.model.net
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(
                1.0 * parameter.std() * torch.randn(parameter.shape, generator=generator)
            )
    path = tmp_path_factory.mktemp("weak") / "digits-mlp-dropout.pt"
    save_checkpoint(path, network, loaded.spec)
    return str(path)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("base")
    checkpoint = str(ZOO_DIR / "digits-mlp-dropout.pt")
    assert (
        audit_main(
            [
                checkpoint,
                *AUDIT,
                "--out",
                str(folder / "out"),
                "--baseline",
                str(folder / "baseline.json"),
                "--update-baseline",
            ]
        )
        == 0
    )
    return str(folder / "baseline.json"), str(folder / "out" / "digits-mlp-dropout" / "audit.json")


def test_gate_passes_an_unchanged_checkpoint(baseline, tmp_path):
    baseline_file, _ = baseline
    checkpoint = str(ZOO_DIR / "digits-mlp-dropout.pt")
    junit = tmp_path / "gate.xml"
    code = audit_main(
        [
            checkpoint,
            *AUDIT,
            "--out",
            str(tmp_path),
            "--baseline",
            baseline_file,
            "--junit",
            str(junit),
        ]
    )
    assert code == 0
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and int(suite.get("failures")) == 0
    names = [case.get("name") for case in suite.iter("testcase")]
    assert "clean accuracy" in names and any(n.startswith("red flag") for n in names)
    assert any(n.startswith("reliable robust accuracy") for n in names)


def test_gate_fails_a_weakened_checkpoint(baseline, weakened, tmp_path, capsys):
    baseline_file, _ = baseline
    junit = tmp_path / "gate.xml"
    argv = [weakened, *AUDIT[:-1], "--out", str(tmp_path), "--baseline", baseline_file]
    # Another checkpoint than the baseline's is refused before any work unless allowed.
    assert audit_main([*argv, "--junit", str(junit)]) == 2
    message = capsys.readouterr().err
    assert "--allow-different-checkpoint" in message and message.count("\n") == 1
    assert not junit.exists() and not (tmp_path / Path(weakened).stem).exists()
    code = audit_main([*argv, "--junit", str(junit), "--allow-different-checkpoint"])
    assert code == 1
    assert "FAIL clean accuracy" in capsys.readouterr().out
    failures = [
        c.get("name")
        for c in ET.parse(junit).getroot().iter("testcase")
        if c.find("failure") is not None
    ]
    assert "clean accuracy" in failures


def test_a_failing_gate_says_so_under_quiet(baseline, weakened, tmp_path, capsys):
    baseline_file, _ = baseline
    argv = [weakened, *AUDIT, "--out", str(tmp_path), "--baseline", baseline_file]
    assert audit_main([*argv, "--allow-different-checkpoint"]) == 1
    captured = capsys.readouterr()
    # --quiet keeps stdout empty, but the failure is one line on stderr, never silence.
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gate: FAILED (")
    assert "failed: " in lines[0] and "clean accuracy" in lines[0]


def test_a_missing_baseline_says_how_to_make_one(baseline, tmp_path, capsys):
    _, result = baseline
    missing = tmp_path / "missing.json"
    checkpoint = str(ZOO_DIR / "digits-mlp-dropout.pt")
    for command in (
        lambda: audit_main(
            [checkpoint, *AUDIT, "--out", str(tmp_path), "--baseline", str(missing)]
        ),
        lambda: gate_main([result, str(missing)]),
    ):
        assert command() == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1
        assert f"baseline {missing} does not exist" in message
        assert "--update-baseline" in message and "result file" not in message
    assert not any(tmp_path.iterdir())


def test_gate_command_line(baseline, tmp_path):
    baseline_file, result = baseline
    assert gate_main([result, baseline_file]) == 0
    document = read_document(result)
    flagged = copy.deepcopy(document)
    flagged["findings"][0]["status"] = "fail"
    write_json(tmp_path / "flagged.json", flagged)
    assert gate_main([str(tmp_path / "flagged.json"), baseline_file]) == 1
    assert gate_main([result, str(tmp_path / "missing.json")]) == 2
    assert gate_main([result, baseline_file, "--max-drop", "3"]) == 2
    other = copy.deepcopy(document)
    other["provenance"]["checkpoint_sha256"] = "0" * 64
    write_json(tmp_path / "other.json", other)
    # Another file holding the same weights is the same model.
    assert gate_main([str(tmp_path / "other.json"), baseline_file]) == 0
    other["provenance"]["weights_sha256"] = "1" * 64
    write_json(tmp_path / "other.json", other)
    assert gate_main([str(tmp_path / "other.json"), baseline_file]) == 2
    assert (
        gate_main([str(tmp_path / "other.json"), baseline_file, "--allow-different-checkpoint"])
        == 0
    )
    fewer = copy.deepcopy(document)
    fewer["clean_correct"] = fewer["clean_correct"][:-1]
    write_json(tmp_path / "fewer.json", fewer)
    assert gate_main([result, str(tmp_path / "fewer.json")]) == 2
    assert gate_main([result, str(tmp_path / "new-baseline.json"), "--update-baseline"]) == 0
    assert gate_main([result, str(tmp_path / "new-baseline.json")]) == 0


def test_fixed_tolerance_and_unpaired_comparison(baseline):
    _, result = baseline
    document = read_document(result)
    worse = copy.deepcopy(document)
    # Two more samples misclassified: within a 5 % tolerance, beyond a zero tolerance.
    clean = list(worse["clean_correct"])
    flipped = [i for i, c in enumerate(clean) if c == "1"][:2]
    for i in flipped:
        clean[i] = "0"
    worse["clean_correct"] = "".join(clean)
    base = AuditResult.from_dict(AuditResult.from_dict(document).to_baseline(), "baseline.json")
    assert base.baseline
    assert compare(AuditResult.from_dict(worse), base, max_drop=0.05).passed
    assert not compare(AuditResult.from_dict(worse), base, max_drop=0.0).passed
    # Paired statistics: two flips out of 120 are noise.
    cases = compare(AuditResult.from_dict(worse), base).cases
    assert [c for c in cases if c.name == "clean accuracy"][0].passed
    other = copy.deepcopy(worse)
    other["evaluation"]["indices"] = [i + 1 for i in other["evaluation"]["indices"]]
    cases = compare(AuditResult.from_dict(other), base).cases
    case = [c for c in cases if c.name == "clean accuracy"][0]
    assert case.passed and "unpaired" in case.message


def test_a_drop_case_says_where_its_interval_lies():
    from analysis.gate import _drop_case

    before = [True] * 100
    dropped = _drop_case("clean accuracy", before, [True] * 80 + [False] * 20, True, None)
    kept = _drop_case("clean accuracy", before, [True] * 99 + [False], True, None)
    assert not dropped.passed and "lies above 0: a real drop" in dropped.message
    assert kept.passed and "includes 0 (no significant drop)" in kept.message
