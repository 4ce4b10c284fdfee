"""A model of the user's own class (``--model FILE.py:NAME``): its reference and keyword
arguments parsed, and the class built from the user's code."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from torch import nn

from checkpoints.usermodel import (
    ModelReference,
    UserModelError,
    build_user_model,
    check_source,
    parse_model_kwargs,
    parse_model_reference,
)
from core.document import ModelSource

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
    assert source == ModelSource(
        reference=f"{code}:MyNet",
        kind="file",
        path=str(code.resolve()),
        module=None,
        name="MyNet",
        kwargs={"width": 6},
        sha256=hashlib.sha256(code.read_bytes()).hexdigest(),
    )


def test_a_module_reference_imports_from_the_path(user, monkeypatch):
    code, _, _ = user
    monkeypatch.syspath_prepend(str(code.parent))
    network, source = build_user_model(parse_model_reference(f"{code.stem}:make"), {"width": 3})
    assert type(network).__name__ == "MyNet" and network.fc.in_features == 3 * 16
    assert source.kind == "module" and source.module == code.stem
    assert source.sha256 == hashlib.sha256(code.read_bytes()).hexdigest()


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


def test_model_reference_is_a_frozen_value():
    reference = ModelReference("a.py:B", "file", "a.py", "B")
    assert reference == parse_model_reference("a.py:B")
