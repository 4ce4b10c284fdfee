"""Auditing a model of the user's own class from the command line (``--model``), a scripted
model's layers, and description flags on files that describe themselves or carry a graph.

The audits run as real processes (``python -m analysis.audit``) on the embedded digits set.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from analysis.activations import activation_statistics, activations_note
from checkpoints import Description, load_checkpoint
from checkpoints.train import ZOO_DIR
from checkpoints.usermodel import parse_model_reference
from commands.audit import main

BLOCKS = """
from torch import nn


class ConvReLU(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
"""
# conv, conv, max-pool, dropout, fc; forward through super().forward; a sibling import.
MYNET = """
import torch
from torch import nn

from {blocks} import ConvReLU


class Head(nn.Module):
    def forward(self, x):
        return self.fc(torch.flatten(x, 1))


class MyNet(Head):
    def __init__(self, width=4, num_classes=10):
        super().__init__()
        self.conv1 = ConvReLU(1, width)
        self.conv2 = ConvReLU(width, width)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return super().forward(self.drop(self.pool(self.conv2(self.conv1(x)))))


def make(width=4, num_classes=10):
    return MyNet(width=width, num_classes=num_classes)
"""
QUICK = ["--preset", "quick", "--no-flatness", "--num-samples", "30", "--no-report"]
TIMEOUT = 600


def _state(width: int = 4, seed: int = 0) -> dict[str, Tensor]:
    """Random weights for MyNet (accuracy does not matter here)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    return {
        "conv1.0.weight": draw(width, 1, 3, 3),
        "conv1.0.bias": draw(width),
        "conv2.0.weight": draw(width, width, 3, 3),
        "conv2.0.bias": draw(width),
        "fc.weight": draw(10, width * 16),
        "fc.bias": draw(10),
    }


def _dropout_input(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """What flows into MyNet's dropout layer, written out with torch.nn.functional."""
    h = F.relu(F.conv2d(x, state["conv1.0.weight"], state["conv1.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, state["conv2.0.weight"], state["conv2.0.bias"], padding=1))
    return F.max_pool2d(h, 2)


def _digits_test_images() -> Tensor:
    """scikit-learn's digits, test part (the last 450), scaled to [0, 1]: read here directly,
    not through the toolkit's loader."""
    images = load_digits().images[1347:].astype(np.float32) / 16.0
    return torch.from_numpy(images).unsqueeze(1)


def _audit(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis.audit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
        cwd=cwd,
    )


def _document(out: Path, stem: str) -> dict[str, Any]:
    return json.loads((out / stem / "audit.json").read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: mynet.py with its sibling, a package userpkg/ with the same code, the
    weights as a state_dict and as a Lightning checkpoint."""
    root = tmp_path_factory.mktemp("project")
    (root / "blocks.py").write_text(textwrap.dedent(BLOCKS))
    (root / "mynet.py").write_text(textwrap.dedent(MYNET.format(blocks="blocks")))
    package = root / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "blocks.py").write_text(textwrap.dedent(BLOCKS))
    (package / "nets.py").write_text(textwrap.dedent(MYNET.format(blocks=".blocks")))
    state = _state()
    torch.save(state, root / "mynet.pt")
    lightning = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(lightning, root / "mynet.ckpt")
    torch.save(_state(width=3, seed=1), root / "narrow.pt")
    return root


def test_a_state_dict_of_the_users_class_audits_end_to_end(project, tmp_path):
    out = tmp_path / "out"
    code = project / "mynet.py"
    result = _audit(
        [str(project / "mynet.pt"), "--model", f"{code}:MyNet", "--dataset", "digits", *QUICK,
         "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mynet.py:MyNet with dropout layers on digits" in result.stdout
    document = _document(out, "mynet")
    assert document["provenance"]["model_source"] == {
        "reference": f"{code}:MyNet",
        "kind": "file",
        "path": str(code.resolve()),
        "module": None,
        "name": "MyNet",
        "kwargs": {},
        "sha256": hashlib.sha256(code.read_bytes()).hexdigest(),
    }
    checkpoint = document["checkpoint"]
    assert checkpoint["arch"] == "mynet.py:MyNet" and checkpoint["source_format"] == "state_dict"
    assert checkpoint["layer"] == {"kind": "dropout", "params": {"p": 0.25}, "positions": None}
    (stats,) = document["activations"]
    assert (stats["name"], stats["kind"]) == ("net.drop", "dropout")
    assert document["activations_note"] is None
    # The statistics against the layer's input computed here from the weights and the images.
    inputs = _dropout_input(_state(), _digits_test_images()[document["evaluation"]["indices"]])
    values = inputs.double()
    assert stats["num_elements"] == values.numel()
    assert stats["mean"] == pytest.approx(float(values.mean()), rel=1e-6)
    assert stats["std"] == pytest.approx(float(values.std(unbiased=False)), rel=1e-5)
    assert stats["max"] == pytest.approx(float(values.max()), rel=1e-6)
    assert stats["zero_fraction"] == float((values == 0).double().mean())


def test_a_lightning_checkpoint_with_flatness_with_the_layers_active(project, tmp_path):
    out = tmp_path / "out"
    result = _audit(
        [str(project / "mynet.ckpt"), "--model", f"{project / 'mynet.py'}:MyNet", "--dataset",
         "digits", "--preset", "quick", "--num-samples", "30", "--flatness-samples", "20",
         "--no-report", "--out", str(out)]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = _document(out, "mynet")
    assert document["checkpoint"]["source_format"] == "lightning"
    assert "stripped prefix 'model.'" in document["checkpoint"]["loading_notes"]
    active = document["flatness"]["active_layers"]
    assert active is not None and active["hessian_trace"]["provenance"]["mode"] == "train"
    assert [a["name"] for a in document["activations"]] == ["net.drop"]


def test_a_factory_in_a_package_with_keyword_arguments(project, tmp_path):
    out = tmp_path / "out"
    result = _audit(
        [str(project / "narrow.pt"), "--model", "userpkg.nets:make", "--model-kwargs",
         '{"width": 3}', "--dataset", "digits", *QUICK, "--out", str(out)],
        cwd=project,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    source = _document(out, "narrow")["provenance"]["model_source"]
    nets = project / "userpkg" / "nets.py"
    assert source == {
        "reference": "userpkg.nets:make",
        "kind": "module",
        "path": str(nets.resolve()),
        "module": "userpkg.nets",
        "name": "make",
        "kwargs": {"width": 3},
        "sha256": hashlib.sha256(nets.read_bytes()).hexdigest(),
    }
    assert _document(out, "narrow")["checkpoint"]["arch"] == "userpkg.nets:make"


class _Scriptable(nn.Module):
    """A CNN that torch.jit.script accepts (no super().forward), with batch norm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(self.drop(h), 1))


def test_a_scripted_models_dropout_is_reported(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "scripted.pt"
    torch.jit.script(_Scriptable().eval()).save(str(path))
    out = tmp_path / "out"
    result = _audit(
        [str(path), "--trust-checkpoint", "--dataset", "digits", *QUICK, "--out", str(out)]
    )
    assert result.returncode == 0, result.stderr
    assert "torchscript with dropout layers on digits" in result.stdout
    document = _document(out, "scripted")
    assert document["checkpoint"]["layer"]["kind"] == "dropout"
    # A scripted module takes no hooks: the statistics are missing, and the document says so.
    assert document["activations"] == []
    assert "not measured for net.drop" in document["activations_note"]


def test_activation_statistics_skip_scripted_layers_and_say_so():
    scripted = torch.jit.script(_Scriptable().eval())
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert activation_statistics(scripted, x) == []
    assert activations_note(scripted) is not None and "drop" in activations_note(scripted)
    plain = _Scriptable().eval()
    assert [a.name for a in activation_statistics(plain, x)] == ["drop"]
    assert activations_note(plain) is None


def test_inspect_never_imports_the_model_code(project, tmp_path):
    marker = tmp_path / "imported"
    code = tmp_path / "watched.py"
    code.write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        + textwrap.dedent(MYNET.format(blocks="blocks"))
    )
    (tmp_path / "blocks.py").write_text(textwrap.dedent(BLOCKS))
    result = subprocess.run(
        [sys.executable, "-m", "checkpoints.inspect", str(project / "mynet.pt"), "--model",
         f"{code}:MyNet", "--dataset", "digits"],
        capture_output=True, text=True, check=False, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert "defines MyNet (class; read, not run)" in result.stdout
    assert "--model would build the model from" in result.stdout
    assert not marker.exists()
    # The same reference does run the code when a model is loaded: the check above can fail.
    description = Description(model=parse_model_reference(f"{code}:MyNet"), dataset="digits")
    load_checkpoint(project / "mynet.pt", description)
    assert marker.read_text() == "imported"


# --------------------------------------------------------------------- one line, exit 2


ERRORS = {
    "missing": ("absent.py:MyNet", "", "does not exist or is not a file"),
    "syntax": ("broken.py:MyNet", "class MyNet(:\n", "line 1: syntax error"),
    "raises": ("raising.py:MyNet", "raise ImportError('needs a GPU')\n", "raised ImportError"),
    "no name": ("mynet.py:YourNet", None, "has no 'YourNet'; it defines Head, MyNet, make"),
    "not callable": ("consts.py:WIDTH", "WIDTH = 4\n", "not a class or function"),
    "constructor": ("mynet.py:MyNet", None, r"MyNet\(depth=2\) raised TypeError"),
    "not a module": ("plain.py:make", "def make():\n    return 3\n", "returned int, expected"),
    "no input": ("mynet.py:MyNet", None, "nothing says what input it takes"),
    "kwargs": ("mynet.py:MyNet", None, "--model-kwargs: .* is not valid JSON"),
    "mismatch": ("mynet.py:MyNet", None, "weights do not match the model built by --model"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_model_code_is_one_line_exit_2_and_no_files(project, tmp_path, capsys, case):
    reference, source, expected = ERRORS[case]
    file = reference.split(":")[0]
    if source is not None:
        if source:
            (tmp_path / file).write_text(source)
        reference = f"{tmp_path / file}:{reference.split(':')[1]}"
    else:
        reference = f"{project / file}:{reference.split(':')[1]}"
    extra = {
        "constructor": ["--model-kwargs", "depth=2"],
        "kwargs": ["--model-kwargs", '{"width": 4'],
        "mismatch": ["--model-kwargs", "width=5"],
    }.get(case, [])
    data = [] if case == "no input" else ["--dataset", "digits"]
    out = tmp_path / "out"
    status = main(
        [str(project / "mynet.pt"), "--model", reference, *extra, *data, *QUICK, "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(expected, err), err
    assert not out.exists()


def test_a_real_process_exits_2_on_bad_model_code(project, tmp_path):
    result = _audit(
        [str(project / "mynet.pt"), "--model", f"{project / 'mynet.py'}:Nope", "--dataset",
         "digits", *QUICK, "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "has no 'Nope'" in result.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------- description flags

ZOO = ZOO_DIR / "digits-mlp-qsd.pt"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--normalization", "0.9:0.05"], "records normalization none, but --normalization "
         "0.9:0.05 was given"),
        (["--layers", "dropout"], "records layers qsd"),
        (["--arch", "lenet5"], "records arch mlp, but --arch lenet5"),
        (["--widen-factor", "2"], "records arch mlp, which takes no widen_factor"),
        (["--num-classes", "3"], "records num_classes 10"),
        (["--input-shape", "1,28,28"], "records input shape 1,8,8"),
        (["--bounds=-1,1"], "records input bounds 0,1"),
        (["--model-kwargs", "width=2"], "no --model was given"),
    ],
)  # fmt: skip
def test_flags_that_contradict_a_zoo_checkpoint_are_refused(tmp_path, capsys, extra, expected):
    status = main([str(ZOO), *extra, *QUICK, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and expected in err, err


def test_flags_on_a_graph_are_refused_or_applied_and_said(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "scripted.pt"
    torch.jit.script(_Scriptable().eval()).save(str(path))
    common = [str(path), "--trust-checkpoint", "--dataset", "digits", *QUICK]
    for flag in (["--layers", "dropout"], ["--arch", "mlp"], ["--widen-factor", "2"]):
        status = main([*common, *flag, "--out", str(tmp_path / "refused")])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1, err
        assert f"{flag[0]} cannot change it" in err and f"drop {flag[0]}" in err
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "applied"
    status = main([*common, "--normalization", "0.5:0.25", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "note: --normalization is applied to" in err and "before its graph runs" in err
    document = _document(out, "scripted")
    assert (document["checkpoint"]["mean"], document["checkpoint"]["std"]) == ([0.5], [0.25])
    assert any("--normalization is applied" in n for n in document["checkpoint"]["loading_notes"])
