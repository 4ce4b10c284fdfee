"""The inspect and train command lines."""

from __future__ import annotations

import torch

from checkpoints import load_checkpoint
from checkpoints.architectures import build_network
from checkpoints.train import ZOO_DIR
from commands.inspect import main as inspect_main
from commands.train import main as train_main


def test_inspect_our_file(capsys):
    assert inspect_main([str(ZOO_DIR / "digits-mlp-qsd.pt")]) == 0
    out = capsys.readouterr().out
    assert "robaudit-checkpoint version 1" in out and "qsd:drop_rate=0.2,alpha=0.2@1,2" in out


def test_inspect_foreign_file_infers_layout(tmp_path, capsys):
    network = build_network("lenet5", (1, 28, 28), 10)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}},
        tmp_path / "x.ckpt",
    )
    assert inspect_main([str(tmp_path / "x.ckpt")]) == 4
    out = capsys.readouterr().out
    assert "lightning" in out and "model." in out and "lenet5 on mnist-shaped input" in out
    assert "loads" in out and "--arch lenet5" in out
    assert inspect_main([str(tmp_path / "x.ckpt"), "--arch", "lenet5", "--dataset", "mnist"]) == 0


def test_inspect_asks_only_for_what_is_still_missing(tmp_path, capsys):
    """A plain state_dict of the zoo's MLP: without flags it needs --arch and --dataset; with
    --dataset given, only --arch."""
    path = tmp_path / "sd.pt"
    torch.save(load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt").model.state_dict(), path)
    assert inspect_main([str(path)]) == 4
    missing = _line(capsys.readouterr().out, "missing")
    assert missing.count("--dataset NAME") == 2, missing
    assert missing.endswith("It looks like --arch mlp --dataset digits.")
    assert inspect_main([str(path), "--dataset", "digits"]) == 4
    missing = _line(capsys.readouterr().out, "missing")
    assert "--arch NAME (one of " in missing and "--model yourfile.py:YourClass," in missing
    assert "--dataset" not in missing, missing
    assert missing.endswith("(see README). It looks like --arch mlp.")
    assert inspect_main([str(path), "--dataset", "digits", "--arch", "mlp"]) == 0


def _line(out: str, field: str) -> str:
    """The value of ``field`` in inspect's output."""
    return next(line for line in out.splitlines() if line.startswith(f"{field} "))[len(field) :]


def test_inspect_bad_input_exits_2(tmp_path, capsys):
    assert inspect_main([str(tmp_path / "absent.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert inspect_main([str(ZOO_DIR / "digits-mlp-qsd.pt"), "--layers", "bogus"]) == 2


def test_train_writes_a_loadable_deterministic_checkpoint(tmp_path, capsys):
    args = [
        "--arch",
        "mlp",
        "--dataset",
        "digits",
        "--layers",
        "normout:spatial@2",
        "--epochs",
        "2",
    ]
    assert train_main([*args, "--out", str(tmp_path / "a.pt")]) == 0
    assert train_main([*args, "--out", str(tmp_path / "b.pt")]) == 0
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert a.weights_sha256 == b.weights_sha256
    assert a.spec.training["epochs"] == 2 and a.spec.clean_accuracy is not None
    assert train_main(["--arch", "mlp", "--dataset", "digits"]) == 2


def test_train_label_smoothing_is_recorded_and_checked(tmp_path, capsys):
    args = ["--arch", "mlp", "--dataset", "digits", "--layers", "none", "--epochs", "1"]
    assert train_main([*args, "--out", str(tmp_path / "a.pt")]) == 0
    smooth = [*args, "--label-smoothing", "0.1", "--out", str(tmp_path / "b.pt")]
    assert train_main(smooth) == 0
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert (a.spec.training["label_smoothing"], b.spec.training["label_smoothing"]) == (0.0, 0.1)
    assert a.weights_sha256 != b.weights_sha256
    capsys.readouterr()
    bad = [*args, "--label-smoothing", "1.5", "--out", str(tmp_path / "c.pt")]
    assert train_main(bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "label smoothing must lie in [0, 1)" in err
    assert not (tmp_path / "c.pt").exists()
