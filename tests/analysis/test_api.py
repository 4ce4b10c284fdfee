"""``analysis.audit_model``: the whole audit of an in-memory model in one call.

The oracle is the command: the same weights and samples through ``python -m analysis.audit``
give the same per-sample outcomes, findings and verdict.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from analysis import audit_model
from analysis.documentdiff import differences
from checkpoints import load_checkpoint
from checkpoints.datasets import load_dataset
from checkpoints.format import weights_sha256
from checkpoints.train import ZOO_DIR
from commands import gate
from core.document import AuditResult, read_document

ROOT = Path(__file__).resolve().parents[2]
ZOO = ZOO_DIR / "digits-mlp-dropout.pt"


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor]:
    data = load_dataset("digits", "test")
    return data.x, data.y


def test_audit_model_gives_the_command_s_result(tmp_path, digits):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.audit",
            str(ZOO),
            "--preset",
            "quick",
            "--no-flatness",
            "--num-samples",
            "80",
            "--no-report",
            "--out",
            str(tmp_path / "cli"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    command = read_document(tmp_path / "cli" / ZOO.stem / "audit.json")

    model = load_checkpoint(ZOO).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the audit evaluates in eval mode and gives the mode back
    x, y = digits
    result = audit_model(
        model, x, y, preset="quick", num_samples=80, flatness=False, out=tmp_path / "api"
    )
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(result, AuditResult)
    written = read_document(tmp_path / "api" / "Normalized" / "audit.json")
    assert (tmp_path / "api" / "Normalized" / "report.html").is_file()
    assert AuditResult.from_dict(written, Path("api")) == result
    # What was written is the result, encoded.
    assert (
        json.dumps(result.to_dict(), indent=1) + "\n"
        == (tmp_path / "api" / "Normalized" / "audit.json").read_text()
    )

    # The same samples (the seeded choice of 80 of the 450), outcomes and verdict.
    assert written["evaluation"]["indices"] == command["evaluation"]["indices"]
    for key in ("clean_accuracy", "clean_correct", "verdict", "activations"):
        assert not differences(written[key], command[key]), key
    # The file records the clean accuracy of its training, which low-clean-accuracy compares
    # with; an in-memory model records none. Every finding else is the same.
    mine = {f["code"]: f for f in written["findings"]}
    theirs = {f["code"]: f for f in command["findings"]}
    assert list(mine) == list(theirs)
    assert mine.pop("low-clean-accuracy")["status"] == theirs.pop("low-clean-accuracy")["status"]
    assert not differences(mine, theirs)
    for ours, theirs in zip(
        written["robustness"]["norms"], command["robustness"]["norms"], strict=True
    ):
        for key in ("epsilons", "reliable_robust_accuracy", "robust"):
            assert ours[key] == theirs[key], key
        for a, b in zip(ours["attacks"], theirs["attacks"], strict=True):
            assert (a["label"], a["success"], a["attacked"]) == (
                b["label"],
                b["success"],
                b["attacked"],
            )
    # The same weights and samples gate against the command's result, both ways.
    command_path = tmp_path / "cli" / ZOO.stem / "audit.json"
    api_path = tmp_path / "api" / "Normalized" / "audit.json"
    for result_path, baseline_path in ((api_path, command_path), (command_path, api_path)):
        assert gate.main([str(result_path), str(baseline_path)]) == 0

    # Provenance names the class and the state_dict's hash (no file).
    assert result.provenance.checkpoint == "Normalized"
    assert result.checkpoint is not None
    assert result.checkpoint.arch == "checkpoints.architectures.Normalized"
    assert result.checkpoint.source_format == "in-memory"
    assert result.provenance.checkpoint_sha256 == weights_sha256(model.net.state_dict())
    assert result.provenance.checkpoint_sha256 == command["provenance"]["weights_sha256"]
    assert result.checkpoint.layer.kind == "dropout"


class _ExpectsNormalised(nn.Module):
    """``net`` for inputs normalised by ``(x - 0.5) / 0.25``: the inverse is applied first."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z * 0.25 + 0.5)


def test_normalization_applies_inside_the_audited_model(digits):
    net = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt").model
    x, y = digits
    options = {"preset": "quick", "num_samples": 60, "flatness": False, "norms": "linf"}
    plain = audit_model(net, x, y, **options)
    # Expected: the same clean accuracy with the statistics, near chance without them.
    normalised = audit_model(
        _ExpectsNormalised(net), x, y, normalization=((0.5,), (0.25,)), **options
    )
    wrong = audit_model(_ExpectsNormalised(net), x, y, **options)
    assert normalised.clean_accuracy.count == plain.clean_accuracy.count
    assert normalised.checkpoint is not None and normalised.checkpoint.mean == (0.5,)
    assert wrong.clean_accuracy.value < plain.clean_accuracy.value - 0.3
    linf = normalised.robustness.norms[0].reliable_robust_accuracy[0].count
    assert abs(linf - plain.robustness.norms[0].reliable_robust_accuracy[0].count) <= 2


def test_the_normalisation_and_bounds_say_where_they_came_from(tmp_path):
    # As the command records --normalization (imagenet) and the default bounds, with the
    # keyword in place of the flag; in the document, the typed result and the report.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(20, 3, 8, 8), torch.randint(0, 10, (20,))
    options = {"preset": "quick", "norms": "linf", "epsilons": 0.1, "attacks": ["fgsm"]}
    options |= {"flatness": False, "progress": False}
    cases = [
        ({"normalization": "imagenet"}, "audit_model(normalization=...) (imagenet)", "default"),
        (
            {"normalization": ((0.5,), (0.25,)), "bounds": (0.0, 1.0)},
            "audit_model(normalization=...)",
            "audit_model(bounds=...)",
        ),
        ({}, "not given", "default"),
    ]
    for number, (given, normalization, bounds) in enumerate(cases):
        name = f"net{number}"
        result = audit_model(net, x, y, name=name, out=tmp_path, **options, **given)
        document = read_document(tmp_path / name / "audit.json")
        assert document["checkpoint"]["normalization_source"] == normalization
        assert document["checkpoint"]["bounds_source"] == bounds
        assert result.checkpoint is not None
        assert result.checkpoint.normalization_source == normalization
        assert result.checkpoint.bounds_source == bounds
        page = (tmp_path / name / "report.html").read_text()
        assert "source not recorded" not in page
        assert f"[0, 1] ({bounds})" in page and f"({normalization})</td>" in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epsilons": 0.1}, "both L∞ and L2"),
        ({"epsilons": [0.2, 0.1], "norms": "linf"}, "ascending"),
        ({"epsilons": {"linf": -1}}, "positive"),
        ({"preset": "fast"}, "preset must be one of"),
        ({"x": "images"}, "must be tensors"),
        ({"x": torch.rand(5, 64)}, "[N, C, H, W]"),
        ({"y": torch.zeros(3, dtype=torch.long)}, "labels [N]"),
        ({"x": torch.full((450, 1, 8, 8), 2.0)}, "outside bounds"),
        pytest.param(
            {"device": "cuda"},
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists"),
        ),
        ({"seed": -1}, "seed"),
        ({"dataset": "mnsit"}, "unknown dataset 'mnsit'"),
        ({"epsilons": "0.1"}, "both L∞ and L2"),
        ({"epsilons": "8/255"}, "epsilons='8/255' would apply to both"),
        ({"model": nn.Linear}, "not a model: pass an instance"),
        ({"num_samples": 0}, "positive"),
        ({"model": "net"}, "nn.Module"),
        ({"x": None, "y": None}, "give the evaluation data"),
        ({"normalization": ((0.5, 0.5), (0.2,))}, "normalization"),
    ],
)
def test_wrong_arguments_are_one_clear_error(digits, change, message):
    x, y = digits
    arguments = {"model": load_checkpoint(ZOO).model, "x": x, "y": y, "flatness": False}
    arguments.update(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        audit_model(**arguments)


def test_numpy_arrays_and_the_command_s_epsilon_text_are_taken(digits, capsys):
    x, y = digits
    model = load_checkpoint(ZOO).model
    options = {"preset": "quick", "num_samples": 30, "flatness": False}
    as_text = audit_model(model, x.numpy(), y.numpy(), epsilons="linf=8/255;l2=0.5", **options)
    as_values = audit_model(model, x, y, epsilons={"linf": 8 / 255, "l2": 0.5}, **options)
    assert [n.epsilons for n in as_text.robustness.norms] == [(8 / 255,), (0.5,)]
    assert as_text.clean_correct == as_values.clean_correct
    assert [n.robust for n in as_text.robustness.norms] == [
        n.robust for n in as_values.robustness.norms
    ]
    # Progress by default: the attacks' bar, and each flatness estimator by name.
    capsys.readouterr()
    audit_model(model, x, y, preset="quick", num_samples=30, flatness_samples=20, norms="linf")
    err = capsys.readouterr().err
    assert "attacks" in err and "flatness hessian_trace: done in" in err


def test_the_readme_snippet_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Audit your own model") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S)
    assert snippet is not None
    code = snippet.group(1)
    assert len(code.strip().splitlines()) < 10
    # Byte for byte, as a user's script in a folder of theirs outside the repository, which
    # holds nothing but the script (no checkpoints/ to find a relative path in).
    folder = tmp_path / "proj"
    folder.mkdir()
    assert not folder.resolve().is_relative_to(ROOT.resolve())
    script = folder / "audit_mynet.py"
    script.write_text(code, encoding="utf-8")
    # The toolkit as these sources have it (an installed one is found the same way);
    # ROBAUDIT_DATA and the rest as the tests run.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, script.name],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    verdict, figure = done.stdout.strip().splitlines()[-2:]
    document = json.loads((folder / "out" / "mynet" / "audit.json").read_text())
    assert (folder / "out" / "mynet" / "report.html").is_file()
    assert document["provenance"]["checkpoint"] == "mynet"
    assert verdict == document["verdict"]
    norms = document["robustness"]["norms"]
    expected = {n["norm"]: n["reliable_robust_accuracy"][0]["value"] for n in norms}
    assert figure == str(expected)
    # The prose after the snippet quotes what it prints.
    prose = section[snippet.end() : section.index("`audit_model` runs")]
    assert f"*{verdict}*" in prose
    for norm, value in expected.items():
        assert f"{value:.3f} at {'L∞' if norm == 'linf' else 'L2'}" in prose
