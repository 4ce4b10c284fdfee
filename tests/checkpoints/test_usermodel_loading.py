"""Loading the weights of a model of the user's own class: a state_dict, a Lightning
checkpoint, a sidecar that names the model, and pickled whole models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from usermodel_helpers import _model, _random_state

from checkpoints import CheckpointError, Description, load_checkpoint
from checkpoints.format import read_raw
from checkpoints.layers import LayerSpec
from checkpoints.spec import parse_normalization
from checkpoints.train import ZOO_DIR
from checkpoints.usermodel import (
    build_user_model,
    parse_model_reference,
)


def _reference_forward(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """MyNet in eval mode written out with torch.nn.functional, from the saved weights."""
    h = F.relu(F.conv2d(x, state["conv1.0.weight"], state["conv1.0.bias"], padding=1))
    h = F.relu(F.conv2d(h, state["conv2.0.weight"], state["conv2.0.bias"], padding=1))
    h = F.max_pool2d(h, 2)
    return F.linear(torch.flatten(h, 1), state["fc.weight"], state["fc.bias"])


# ------------------------------------------------------------------------------- loading


def test_a_state_dict_loads_into_the_users_class(user):
    code, weights, state = user
    loaded = load_checkpoint(weights, _model(code, "MyNet", dataset="digits"))
    spec = loaded.spec
    assert spec.arch == f"{code.name}:MyNet" and spec.source_format == "state_dict"
    assert (spec.input_shape, spec.num_classes, spec.mean) == ((1, 8, 8), 10, None)
    assert spec.layer == LayerSpec("dropout", {"p": 0.25})
    assert loaded.model_source is not None and loaded.model_source.name == "MyNet"
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
    assert trusted.model_source is not None and trusted.model_source.kwargs == {"width": 3}
    assert Path(trusted.model_source.path) == code.resolve()
    named = load_checkpoint(folder / "net.pt", _model(code, "make"))  # kwargs still the sidecar's
    assert named.model_source is not None and named.model_source.kwargs == {"width": 3}
    # --arch on the command line replaces the sidecar's model and its arguments.
    with pytest.raises(CheckpointError, match="weights do not match architecture 'mlp'"):
        load_checkpoint(folder / "net.pt", Description(arch="mlp"))


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
