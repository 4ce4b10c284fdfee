"""The rule that no description flag is ignored in silence: on our own checkpoint files, with
``--model``, and on TorchScript graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from usermodel_helpers import _model

from checkpoints import CheckpointError, Description, load_checkpoint, save_checkpoint
from checkpoints.format import build_model
from checkpoints.layers import (
    LayerSpec,
    family_layers,
)
from checkpoints.spec import CheckpointSpec, parse_normalization
from commands.description import say_flag_notes

# ---------------------------------------------------------------------- the flag rule: ours


def _mlp_file(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    spec = CheckpointSpec("mlp", 10, (1, 8, 8), LayerSpec.parse("qsd@1,2"), dataset="digits")
    network, _ = build_model(spec)
    return save_checkpoint(tmp_path / "ours.pt", network, spec), network


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"arch": "lenet5"}, "records arch mlp, but --arch lenet5 was given"),
        ({"num_classes": 3}, "records num_classes 10, but --num-classes 3"),
        ({"input_shape": (1, 28, 28)}, "records input shape 1,8,8, but --input-shape 1,28,28"),
        ({"arch_kwargs": {"widen_factor": 2}}, "records arch mlp, which takes no widen_factor"),
        ({"layer": LayerSpec("dropout")}, "records layers qsd@1,2, but --layers dropout"),
        ({"layer": LayerSpec("qsd", {"alpha": 0.5})}, "records layers qsd@1,2, but --layers"),
        ({"normalization": parse_normalization("0.9:0.05", "n")}, "records normalization none, "
         "but --normalization 0.9:0.05 was given: the model was trained with the recorded"),
        ({"bounds": (-1.0, 1.0)}, "records input bounds 0,1, but --bounds -1,1"),
        ({"model_kwargs": {"width": 2}}, "--model-kwargs gives arguments for --model, but no"),
    ],
)  # fmt: skip
def test_a_flag_that_contradicts_our_file_is_refused(tmp_path, fields, expected):
    path, _ = _mlp_file(tmp_path)
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(")) as info:
        load_checkpoint(path, Description(**fields))  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"arch": "mlp"},
        {"num_classes": 10},
        {"input_shape": (1, 8, 8)},
        {"layer": LayerSpec.parse("qsd:alpha=0.2@1,2")},
        {"layer": LayerSpec.parse("qsd")},
        {"normalization": "none"},
        {"normalization": "default"},
        {"bounds": (0.0, 1.0)},
        {"dataset": "digits"},
    ],
)
def test_a_flag_that_restates_our_file_is_accepted(tmp_path, fields):
    path, _ = _mlp_file(tmp_path)
    loaded = load_checkpoint(path, Description(**fields))  # type: ignore[arg-type]
    assert loaded.flag_notes == () and loaded.spec == load_checkpoint(path).spec


def test_another_dataset_for_our_file_is_applied_and_said(tmp_path, capsys):
    path, _ = _mlp_file(tmp_path)
    loaded = load_checkpoint(path, Description(dataset="mnist"))
    assert loaded.spec.dataset == "mnist"
    assert loaded.flag_notes == (
        f"{path} records dataset digits; --dataset mnist is applied: the audit evaluates on mnist",
    )
    say_flag_notes(loaded)
    assert capsys.readouterr().err == f"note: {loaded.flag_notes[0]}\n"


def test_the_model_flag_on_our_file_builds_the_users_class(tmp_path):
    path, network = _mlp_file(tmp_path)
    (tmp_path / "seq.py").write_text(
        "from torch import nn\n\n\ndef make(hidden=(128, 256, 512)):\n"
        "    layers, width = [nn.Flatten()], 64\n"
        "    for h in hidden:\n"
        "        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(0.3)]\n"
        "        width = h\n"
        "    return nn.Sequential(*layers, nn.Linear(width, 10))\n"
    )
    loaded = load_checkpoint(path, _model(tmp_path / "seq.py", "make"))
    assert loaded.spec.arch == "seq.py:make" and loaded.spec.layer == LayerSpec(
        "dropout", {"p": 0.3}
    )
    assert loaded.spec.dataset == "digits" and loaded.model_source is not None
    (note,) = loaded.flag_notes
    assert "--model" in note and "instead of the recorded architecture mlp (qsd@1,2 layers)" in note
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), network.eval()(x))  # eval: layers are identity


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"arch": "mlp"}, "--arch and --model both name the model"),
        ({"layer": LayerSpec("dropout")}, "--layers places layers in a registered"),
        ({"arch_kwargs": {"widen_factor": 2}}, "give your class's arguments with --model-kwargs"),
    ],
)
def test_flags_that_cannot_go_with_the_model_flag(user, fields, expected):
    code, weights, _ = user
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(weights, _model(code, "MyNet", dataset="digits", **fields))


# ------------------------------------------------------------------- the flag rule: graphs


class _Scriptable(nn.Module):
    """A small CNN that torch.jit.script accepts: batch norm and dropout inside."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 16, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(torch.flatten(self.drop(h), 1))


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    network = _Scriptable().eval()
    path = tmp_path / "scripted.pt"
    torch.jit.script(network).save(str(path))
    return path, network


def test_a_scripted_models_dropout_is_found_by_its_class_name(scripted):
    path, _ = scripted
    loaded = load_checkpoint(path, Description(dataset="digits"), trust=True)
    assert loaded.spec.arch == "torchscript"
    assert loaded.spec.layer == LayerSpec("dropout", {"p": 0.25})
    assert family_layers(loaded.model) == [("net.drop", "dropout")]


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"arch": "mlp"}, "--arch"),
        ({"layer": LayerSpec("dropout")}, "--layers"),
        ({"arch_kwargs": {"widen_factor": 2}}, "--widen-factor"),
        ({"arch": "mlp", "layer": LayerSpec("dropout")}, "--arch, --layers"),
    ],
)
def test_flags_that_would_change_a_graph_are_refused_before_it_runs(tmp_path, fields, names):
    from test_consent import _WritesFiles

    marker = tmp_path / "created-by-the-archive"
    path = tmp_path / "writes.pt"
    torch.jit.script(_WritesFiles(str(marker))).save(str(path))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, Description(dataset="digits", **fields), trust=True)  # type: ignore[arg-type]
    assert f"carries its own graph and weights: {names} cannot change it" in str(info.value)
    assert not marker.exists()  # refused before torch.jit.load ran the archive's code


def test_the_model_flag_on_a_graph_is_refused(scripted, user):
    path, _ = scripted
    code, _, _ = user
    with pytest.raises(CheckpointError, match="drop --model; for your own class, audit a"):
        load_checkpoint(path, _model(code, "MyNet", dataset="digits"), trust=True)


def test_data_flags_on_a_graph_are_applied_and_said(scripted):
    path, network = scripted
    norm = parse_normalization("0.5:0.25", "--normalization")
    loaded = load_checkpoint(
        path, Description(dataset="digits", normalization=norm, bounds=(0.0, 1.0)), trust=True
    )
    assert (loaded.spec.dataset, loaded.spec.mean, loaded.spec.std) == ("digits", (0.5,), (0.25,))
    assert len(loaded.flag_notes) == 2
    assert "--normalization is applied" in loaded.flag_notes[0]
    assert "normalised with 0.5:0.25 before its graph runs" in loaded.flag_notes[0]
    assert "--bounds is applied" in loaded.flag_notes[1]
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), network((x - 0.5) / 0.25))
    plain = load_checkpoint(path, Description(dataset="digits"), trust=True)
    assert plain.flag_notes == ()


def test_inspect_shows_what_the_flags_do_without_running_anything(scripted, tmp_path, capsys):
    from commands.inspect import main as inspect_main

    path, _ = scripted
    assert inspect_main([str(path), "--layers", "dropout"]) == 4
    out = capsys.readouterr().out
    assert "refused" in out and "--layers cannot change it" in out and "drop --layers" in out
    assert inspect_main([str(path), "--dataset", "digits"]) == 4
    assert "refused" not in capsys.readouterr().out
    ours, _ = _mlp_file(tmp_path)
    assert inspect_main([str(ours), "--dataset", "mnist"]) == 0
    assert "--dataset mnist is applied" in capsys.readouterr().out
    assert inspect_main([str(ours), "--normalization", "0.9:0.05"]) == 4
    assert "records normalization none, but --normalization 0.9:0.05" in capsys.readouterr().out
