"""A model of the user's own class (``--model FILE.py:NAME``), its layers found by type, and the
rule that no description flag is ignored in silence."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from checkpoints import CheckpointError, Description, load_checkpoint, save_checkpoint
from checkpoints.format import build_model, read_raw
from checkpoints.layers import (
    QSD,
    Dropout,
    LayerSpec,
    NormOut,
    family_kind,
    family_layers,
    found_layer_spec,
    make_layer,
)
from checkpoints.spec import CheckpointSpec, parse_normalization
from checkpoints.train import ZOO_DIR
from checkpoints.usermodel import (
    ModelReference,
    UserModelError,
    build_user_model,
    check_source,
    parse_model_kwargs,
    parse_model_reference,
)
from commands.description import say_flag_notes

# The user's code: a sibling module, and a CNN (conv, conv, max-pool, dropout, fc) whose
# forward goes through super().forward, as in the report that asked for --model.
BLOCKS = """
from torch import nn


class ConvReLU(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
"""
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


WIDTH = 4


def not_a_model():
    return {{"conv": 1}}


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("the constructor fails")
"""


def _write_user_code(folder: Path, stem: str = "mynet") -> Path:
    """Write the user's files under names of their own (every test imports a fresh copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = f"{stem}_blocks"
    (folder / f"{blocks}.py").write_text(textwrap.dedent(BLOCKS))
    path = folder / f"{stem}.py"
    path.write_text(textwrap.dedent(MYNET.format(blocks=blocks)))
    return path


def _reference_forward(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """MyNet in eval mode written out with torch.nn.functional, from the saved weights."""
    h = F.relu(F.conv2d(x, state["conv1.0.weight"], state["conv1.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, state["conv2.0.weight"], state["conv2.0.bias"], padding=1))
    h = F.max_pool2d(h, 2)
    return F.linear(torch.flatten(h, 1), state["fc.weight"], state["fc.bias"])


def _random_state(width: int = 4, classes: int = 10, seed: int = 0) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator) * 0.3

    return {
        "conv1.0.weight": draw(width, 1, 3, 3),
        "conv1.0.bias": draw(width),
        "conv2.0.weight": draw(width, width, 3, 3),
        "conv2.0.bias": draw(width),
        "fc.weight": draw(classes, width * 16),
        "fc.bias": draw(classes),
    }


@pytest.fixture
def user(tmp_path: Path) -> tuple[Path, Path, dict[str, Tensor]]:
    """(the user's mynet.py, its state_dict file, the weights)."""
    code = _write_user_code(tmp_path / "code", f"mynet_{tmp_path.name.replace('-', '_')}")
    state = _random_state()
    weights = tmp_path / "mynet.pt"
    torch.save(state, weights)
    return code, weights, state


def _model(path: Path, text: str, **fields: object) -> Description:
    return Description(model=parse_model_reference(f"{path}:{text}"), **fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "kind", "target", "name"),
    [
        ("mynet.py:MyNet", "file", "mynet.py", "MyNet"),
        ("models/net.py:make", "file", "models/net.py", "make"),
        ("pkg.nets:Outer.build", "module", "pkg.nets", "Outer.build"),
        ("mynet:MyNet", "module", "mynet", "MyNet"),
    ],
)
def test_references_parse_without_importing(text, kind, target, name):
    reference = parse_model_reference(text)
    assert (reference.kind, reference.target, reference.name) == (kind, target, name)
    assert str(reference) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mynet.py", "name the class after a colon"),
        ("mynet.py:", "not a Python name"),
        ("mynet.py:My-Net", "not a Python name"),
        ("my net:MyNet", "neither a .py file nor a dotted module name"),
        (":MyNet", "name the class after a colon"),
    ],
)
def test_bad_references_are_one_line(text, expected):
    with pytest.raises(UserModelError, match=expected) as info:
        parse_model_reference(text)
    assert "\n" not in str(info.value) and "FILE.py:NAME" in str(info.value)


def test_a_sidecars_relative_file_is_relative_to_its_folder(tmp_path):
    reference = parse_model_reference("../code/net.py:Net", "side.toml", tmp_path / "side")
    assert Path(reference.target) == tmp_path / "side" / ".." / "code" / "net.py"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"width": 64, "sizes": [1, 2]}', {"width": 64, "sizes": [1, 2]}),
        ("width=64,act=relu", {"width": 64, "act": "relu"}),
        ("p=0.5, flag=true, none=null, sizes=[1,2], name='a,b'", {
            "p": 0.5, "flag": True, "none": None, "sizes": [1, 2], "name": "a,b"
        }),
        ("", {}),
    ],
)  # fmt: skip
def test_keyword_arguments_parse(text, expected):
    assert parse_model_kwargs(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"width": 64', "not valid JSON"),
        ("[1, 2]", "key=value pairs"),
        ('["a"]', "key=value pairs"),
        ("width", "key=value pairs"),
        ("width=1,width=2", "given twice"),
        ("2x=1", "key=value pairs"),
        ({"width": float("nan")}, "finite"),
        ({"when": object()}, "a number, a string"),
    ],
)
def test_bad_keyword_arguments_are_one_line(value, expected):
    with pytest.raises(UserModelError, match=expected):
        parse_model_kwargs(value)


# --------------------------------------------------------------------------------- building


def test_a_class_is_built_with_its_sibling_import_and_recorded(user):
    code, _, _ = user
    network, source = build_user_model(parse_model_reference(f"{code}:MyNet"), {"width": 6})
    assert type(network).__name__ == "MyNet" and network.fc.in_features == 6 * 16
    assert source == {
        "reference": f"{code}:MyNet",
        "kind": "file",
        "path": str(code.resolve()),
        "module": None,
        "name": "MyNet",
        "kwargs": {"width": 6},
        "sha256": hashlib.sha256(code.read_bytes()).hexdigest(),
    }


def test_a_module_reference_imports_from_the_path(user, monkeypatch):
    code, _, _ = user
    monkeypatch.syspath_prepend(str(code.parent))
    network, source = build_user_model(parse_model_reference(f"{code.stem}:make"), {"width": 3})
    assert type(network).__name__ == "MyNet" and network.fc.in_features == 3 * 16
    assert source["kind"] == "module" and source["module"] == code.stem
    assert source["sha256"] == hashlib.sha256(code.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("Nope", {}, r"has no 'Nope'; it defines Broken, Head, MyNet, make, not_a_model"),
        ("WIDTH", {}, "WIDTH in .* is a value of type int, not a class or function"),
        ("not_a_model", {}, r"not_a_model\(\) returned dict, expected a torch.nn.Module"),
        ("Broken", {}, r"Broken\(\) raised ValueError: the constructor fails \(at .*line \d+\)"),
        ("MyNet", {"depth": 3}, r"MyNet\(depth=3\) raised TypeError: .*'depth'"),
    ],
)
def test_code_that_does_not_give_a_model_is_one_line(user, name, kwargs, expected):
    code, _, _ = user
    with pytest.raises(UserModelError, match=expected) as info:
        build_user_model(parse_model_reference(f"{code}:{name}"), kwargs)
    assert "\n" not in str(info.value)


def test_files_that_cannot_be_imported_are_one_line(tmp_path):
    (tmp_path / "syntax.py").write_text("import torch\nclass Net(:\n    pass\n")
    (tmp_path / "raises.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "needs.py").write_text("import a_package_nobody_has\n")
    cases = {
        "missing.py": "does not exist or is not a file",
        "syntax.py": r"syntax.py line 2: syntax error",
        "raises.py": r"raised RuntimeError: no GPU here \(at .*raises.py line 2\)",
        "exits.py": r"raised SystemExit: 3 .*if __name__ == '__main__'",
        "needs.py": r"raised ModuleNotFoundError: No module named 'a_package_nobody_has'",
    }
    for file, expected in cases.items():
        with pytest.raises(UserModelError, match=expected) as info:
            build_user_model(parse_model_reference(f"{tmp_path / file}:Net"))
        assert "\n" not in str(info.value)
    with pytest.raises(UserModelError, match="no module named 'no_such_module_here'"):
        build_user_model(parse_model_reference("no_such_module_here.nets:Net"))


def test_a_name_taken_by_another_module_does_not_replace_it(tmp_path):
    (tmp_path / "json.py").write_text(
        "from torch import nn\n\ndef Net():\n    return nn.Linear(64, 10)\n"
    )
    import json

    network, _ = build_user_model(parse_model_reference(f"{tmp_path / 'json.py'}:Net"))
    assert isinstance(network, nn.Linear) and sys.modules["json"] is json


def test_check_source_reads_without_running(tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "net.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from torch import nn\n\nclass Net(nn.Module):\n    pass\n\n"
        "if True:\n    def make():\n        return Net()\n"
    )
    assert "defines Net (class" in check_source(parse_model_reference(f"{tmp_path}/net.py:Net"))
    assert "defines make (function" in check_source(
        parse_model_reference(f"{tmp_path}/net.py:make")
    )
    with pytest.raises(UserModelError, match="defines no 'Other'.*it defines Net, make"):
        check_source(parse_model_reference(f"{tmp_path}/net.py:Other"))
    assert not marker.exists()


# ------------------------------------------------------------------------- found by type


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.Dropout(0.1), "dropout"),
        (nn.Dropout1d(), "dropout"),
        (nn.Dropout2d(), "dropout"),
        (nn.Dropout3d(), "dropout"),
        (nn.AlphaDropout(), "dropout"),
        (nn.FeatureAlphaDropout(), "dropout"),
        (Dropout(0.3), "dropout"),
        (NormOut("spatial"), "normout"),
        (QSD(), "qsd"),
        (nn.Identity(), None),
        (nn.ReLU(), None),
    ],
)
def test_layers_are_found_by_type_also_when_scripted(module, kind):
    assert family_kind(module) == kind
    holder = nn.Sequential(nn.Flatten(), module)
    if not isinstance(module, NormOut | QSD | Dropout):  # ours are not scriptable
        scripted = torch.jit.script(holder)
        assert family_kind(dict(scripted.named_children())["1"]) == kind  # by its class name
        assert family_layers(scripted) == ([("1", kind)] if kind else [])


def test_the_layer_spec_names_what_was_found():
    assert found_layer_spec(nn.Sequential(nn.Linear(2, 2))) == LayerSpec()
    two = nn.Sequential(nn.Dropout(0.25), nn.Linear(2, 2), nn.Dropout(0.25))
    assert found_layer_spec(two) == LayerSpec("dropout", {"p": 0.25})
    differing = nn.Sequential(nn.Dropout(0.25), nn.Dropout(0.5))
    assert found_layer_spec(differing) == LayerSpec("dropout")
    assert found_layer_spec(nn.Sequential(QSD(0.3, 0.5))).params == {
        "drop_rate": 0.3,
        "alpha": 0.5,
        "variant": "full",
        "unit_expectation": False,
    }
    mixed = found_layer_spec(nn.Sequential(NormOut("spatial"), nn.Dropout()))
    assert mixed.kind == "dropout+normout" and str(mixed) == "dropout+normout"
    with pytest.raises(ValueError, match="cannot be built"):
        make_layer(mixed)
    with pytest.raises(ValueError, match="alphabetical"):
        LayerSpec("normout+dropout")
    with pytest.raises(ValueError, match="unknown layer kind"):
        LayerSpec.parse("dropout+normout")  # a found mix is not a --layers value


# ------------------------------------------------------------------------------- loading


def test_a_state_dict_loads_into_the_users_class(user):
    code, weights, state = user
    loaded = load_checkpoint(weights, _model(code, "MyNet", dataset="digits"))
    spec = loaded.spec
    assert spec.arch == f"{code.name}:MyNet" and spec.source_format == "state_dict"
    assert (spec.input_shape, spec.num_classes, spec.mean) == ((1, 8, 8), 10, None)
    assert spec.layer == LayerSpec("dropout", {"p": 0.25})
    assert loaded.model_source is not None and loaded.model_source["name"] == "MyNet"
    assert not loaded.model.training and loaded.flag_notes == ()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), _reference_forward(state, x))
    assert "found by type: drop (dropout)" in " ".join(loaded.notes)


def test_a_lightning_checkpoint_and_normalization(user, tmp_path):
    code, _, state = user
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    norm = parse_normalization("0.5:0.25", "--normalization")
    loaded = load_checkpoint(path, _model(code, "make", input_shape=(1, 8, 8), normalization=norm))
    assert loaded.spec.source_format == "lightning" and loaded.spec.num_classes == 10
    assert "stripped prefix 'model.'" in loaded.notes
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), _reference_forward(state, (x - 0.5) / 0.25))


def test_weights_that_do_not_fit_get_the_strict_mismatch_message(user, tmp_path):
    code, weights, state = user
    wide = {"width": 5}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(weights, _model(code, "MyNet", dataset="digits", model_kwargs=wide))
    message = str(info.value)
    assert "\n" not in message and "weights do not match the model built by --model" in message
    assert "shape mismatches: conv1.0.bias: file (4,) vs model (5,)" in message
    assert "Likely cause: the class was built with other sizes" in message
    extra = tmp_path / "extra.pt"
    torch.save({**state, "head.weight": torch.zeros(2)}, extra)
    with pytest.raises(CheckpointError, match="unexpected keys: head.weight. Likely cause: "):
        load_checkpoint(extra, _model(code, "MyNet", dataset="digits"))
    zoo = ZOO_DIR / "digits-mlp-none.pt"
    torch.save(read_raw(zoo)["state_dict"], tmp_path / "mlp.pt")
    with pytest.raises(CheckpointError, match="fit --arch mlp --dataset digits"):
        load_checkpoint(tmp_path / "mlp.pt", _model(code, "MyNet", dataset="digits"))


def test_a_model_with_other_outputs_is_refused(user):
    code, weights, _ = user
    with pytest.raises(CheckpointError, match="gives 10 outputs, but 3 classes were expected"):
        load_checkpoint(weights, _model(code, "MyNet", dataset="digits", num_classes=3))
    with pytest.raises(CheckpointError, match="nothing says what input it takes"):
        load_checkpoint(weights, _model(code, "MyNet"))
    with pytest.raises(CheckpointError, match="fails on a batch of two zero inputs of shape 1x4x4"):
        load_checkpoint(weights, _model(code, "MyNet", input_shape=(1, 4, 4)))


def test_a_pickled_whole_model_names_the_model_route(user, tmp_path):
    code, _, _ = user
    network, _ = build_user_model(parse_model_reference(f"{code}:MyNet"))
    torch.save(network, tmp_path / "whole.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "whole.pt", Description(dataset="digits"))
    message = str(info.value)
    assert f"it would build {code.stem}.MyNet" in message and "\n" not in message
    assert "save model.state_dict()" in message and f"--model {code.stem}.py:MyNet" in message


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


# --------------------------------------------------------------------------------- sidecar


def test_a_sidecar_may_name_the_model_but_its_code_needs_consent(user, tmp_path):
    code, _, _ = user
    folder = tmp_path / "side"
    folder.mkdir()
    torch.save(_random_state(width=3), folder / "net.pt")
    relative = Path("..") / code.relative_to(tmp_path)
    (folder / "net.toml").write_text(
        f'model = "{relative.as_posix()}:make"\ndataset = "digits"\n[model_kwargs]\nwidth = 3\n'
    )
    with pytest.raises(CheckpointError, match="net.toml names model code .*--trust-checkpoint"):
        load_checkpoint(folder / "net.pt")
    trusted = load_checkpoint(folder / "net.pt", trust=True)
    assert trusted.model_source is not None and trusted.model_source["kwargs"] == {"width": 3}
    assert Path(trusted.model_source["path"]) == code.resolve()
    named = load_checkpoint(folder / "net.pt", _model(code, "make"))  # kwargs still the sidecar's
    assert named.model_source is not None and named.model_source["kwargs"] == {"width": 3}
    # --arch on the command line replaces the sidecar's model and its arguments.
    with pytest.raises(CheckpointError, match="weights do not match architecture 'mlp'"):
        load_checkpoint(folder / "net.pt", Description(arch="mlp"))


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


def test_model_reference_is_a_frozen_value():
    reference = ModelReference("a.py:B", "file", "a.py", "B")
    assert reference == parse_model_reference("a.py:B")


def test_a_trusted_pickled_module_has_its_layers_found_and_takes_no_network_flags(user, tmp_path):
    code, _, _ = user
    network, _ = build_user_model(parse_model_reference(f"{code}:MyNet"))
    torch.save(network, tmp_path / "whole.pt")
    loaded = load_checkpoint(tmp_path / "whole.pt", Description(dataset="digits"), trust=True)
    assert loaded.spec.arch == "pickled-module"
    assert loaded.spec.layer == LayerSpec("dropout", {"p": 0.25})
    with pytest.raises(CheckpointError, match="a pickled whole module, which carries its own"):
        load_checkpoint(
            tmp_path / "whole.pt", Description(dataset="digits", arch="mlp"), trust=True
        )


def test_a_whole_model_saved_from_a_script_names_the_model_route_when_trusted(tmp_path):
    script = (
        "import torch\nfrom torch import nn\n\n"
        "class MyNet(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.fc = nn.Linear(64, 10)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1))\n\n"
        f"torch.save(MyNet(), {str(tmp_path / 'whole.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "whole.pt", Description(dataset="digits"), trust=True)
    message = str(info.value)
    assert "unpickling the trusted file failed" in message and "\n" not in message
    assert "the class __main__.MyNet it was saved with cannot be found here" in message
    assert "save model.state_dict()" in message and "--model yourfile.py:MyNet" in message


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
