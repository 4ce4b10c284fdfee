"""Nothing from a file runs unless the user says so (``--trust-checkpoint``).

The archives here are real programs with a visible side effect: TorchScript whose
``__setstate__`` (run by ``torch.jit.load``) and ``forward`` create files through
``torch.from_file(..., shared=True)``, and a pickle whose ``__reduce__`` runs a shell command.
Each test first shows that trusting the file does create the marker, so a loader that ran the
code without consent could not pass.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from checkpoints import CheckpointError, Description, load_checkpoint
from checkpoints.architectures import build_network
from checkpoints.format import build_model, code_archive_kind, read_raw
from checkpoints.spec import CheckpointSpec
from checkpoints.train import ZOO_DIR
from commands.audit import main as audit_main
from commands.inspect import main as inspect_main


class _WritesFiles(nn.Module):
    """A digits classifier (64 pixels to 10 logits) that creates ``marker`` when unpickled by
    ``torch.jit.load`` and ``marker.forward`` on every forward pass."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.weight = torch.randn(10, 64, generator=torch.Generator().manual_seed(0))

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, Tensor]:
        return (self.marker, self.training, self.weight)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, Tensor]) -> None:
        self.marker = state[0]
        self.training = state[1]
        # The result is used, so the TorchScript optimiser cannot drop the call.
        touched = torch.from_file(self.marker, shared=True, size=8, dtype=torch.uint8)
        self.weight = state[2] + touched[0].to(state[2].dtype) * 0

    def forward(self, x: Tensor) -> Tensor:
        touched = torch.from_file(self.marker + ".forward", shared=True, size=8, dtype=torch.uint8)
        return x.flatten(1) @ self.weight.t() + touched[0].to(x.dtype) * 0


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "created-by-the-archive"
    path = tmp_path / "writes-files.pt"
    torch.jit.script(_WritesFiles(str(marker))).save(str(path), _extra_files={"note.txt": "hi"})
    assert not marker.exists()
    return path, marker


def test_trusted_torchscript_really_creates_files(scripted):
    path, marker = scripted
    loaded = load_checkpoint(path, Description(dataset="digits"), trust=True)
    assert marker.exists()  # __setstate__ ran inside torch.jit.load
    assert Path(f"{marker}.forward").exists()  # and forward ran on the probe input
    assert loaded.spec.source_format == "torchscript" and loaded.spec.num_classes == 10


def test_torchscript_is_refused_without_trust_and_nothing_runs(scripted):
    path, marker = scripted
    assert code_archive_kind(path) == "torchscript"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, Description(dataset="digits"))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "TorchScript" in message and "code" in message and "--trust-checkpoint" in message
    assert "state_dict" in message
    assert not marker.exists() and not Path(f"{marker}.forward").exists()


def test_the_weights_only_reader_names_a_torchscript_archive_by_its_listing(scripted):
    # read_raw is the reader every layout goes through; it tells a TorchScript archive from
    # damaged bytes by the archive's listing, whatever torch's error says.
    path, marker = scripted
    with pytest.raises(CheckpointError, match="is a TorchScript archive, which is code"):
        read_raw(path)
    assert not marker.exists()


@pytest.mark.parametrize("extra", [[], ["--trust-checkpoint", "--dataset", "digits"]])
def test_inspect_describes_torchscript_from_its_listing_alone(scripted, capsys, extra):
    path, marker = scripted
    assert inspect_main([str(path), *extra]) == 4
    out = capsys.readouterr().out
    assert not marker.exists() and not Path(f"{marker}.forward").exists()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickled = archive.getinfo("writes-files/data.pkl").file_size
    code = [n for n in names if "/code/" in n and n.endswith(".py")]
    assert "TorchScript archive" in out and "writes-files" in out
    assert code and f"code files     {len(code)}" in out
    assert all(name.split("/", 1)[1] in out for name in code)
    assert f"data.pkl       {pickled:,} bytes" in out and "constants.pkl" in out
    assert "note.txt" in out and "byteorder" in out and "little" in out
    assert "--trust-checkpoint to load" in out and "never runs code" in out
    # Given a dataset, the archive needs only consent; without one, an input shape too.
    needs = next(line for line in out.splitlines() if line.startswith("needs"))
    assert ("--dataset or --input-shape" in needs) is ("--dataset" not in extra)


def test_audit_refuses_torchscript_without_trust_in_one_line(scripted, tmp_path, capsys):
    path, marker = scripted
    out_dir = tmp_path / "out"
    argv = [str(path), "--dataset", "digits", "--preset", "quick", "--no-flatness", "--quiet"]
    assert audit_main([*argv, "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--trust-checkpoint" in err
    assert "Traceback" not in err
    assert not marker.exists() and not Path(f"{marker}.forward").exists()
    assert not out_dir.exists() or not any(out_dir.iterdir())


# ------------------------------------------------------------------------- pickled objects


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    """An object of no importable class (its module is the test's)."""

    def __init__(self) -> None:
        self.values = [1, 2, 3]


@pytest.mark.parametrize("payload", [True, False], ids=["payload", "plain-object"])
def test_a_raw_protocol_4_pickle_is_named_as_objects_in_one_line(tmp_path, capsys, payload):
    """``pickle.dumps(obj, protocol=4)`` saved as a .pt file: torch's reader stops at the
    protocol's first opcode, without naming what the pickle builds, and warns about the
    protocol. The one line says the file holds pickled objects, names the first one, says
    nothing ran and how to go on; no warning is printed, and the payload does not run."""
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(_Payload(marker) if payload else _Plain(), protocol=4))
    argv = [str(path), "--arch", "mlp", "--dataset", "digits", "--preset", "quick", "--quiet"]
    assert audit_main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    built = "posix.system" if payload else f"{_Plain.__module__}._Plain"
    assert err.count("\n") == 1 and err.startswith(
        f"error: {path} holds pickled Python objects, not just tensors (it would build "
        f"{built}); nothing from it ran, since unpickling it could run arbitrary code. "
    )
    assert "torch.save(model.state_dict(), FILE)" in err
    assert err.endswith(", or pass --trust-checkpoint if you trust its source\n")
    if payload:  # os.system is no model class: the plain advice
        assert "Re-save it as a state_dict (torch.save(model.state_dict(), FILE))" in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert inspect_main([str(path)]) == 4
    out = capsys.readouterr().out
    assert f"would build  {built}" in out and "pickled Python objects" in out
    assert not marker.exists()


def test_a_protocol_4_state_dict_is_named_for_its_protocol(tmp_path):
    """Tensors alone, pickled with protocol 4 (which torch's weights-only reader cannot read):
    no objects to name, so the line names the protocol; trusting the file loads it."""
    network = build_network("mlp", (1, 8, 8), 10)
    path = tmp_path / "p4.pt"
    torch.save(network.state_dict(), path, pickle_protocol=4)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, Description(arch="mlp", dataset="digits"))
    assert str(info.value) == (
        f"{path} is a pickle of protocol 4, which torch.load(weights_only=True) cannot read (it "
        "reads protocol 2, torch.save's default); nothing from it ran. Re-save it with "
        "torch.save(model.state_dict(), FILE), or pass --trust-checkpoint if you trust its "
        "source"
    )
    loaded = load_checkpoint(path, Description(arch="mlp", dataset="digits"), trust=True)
    assert loaded.spec.arch == "mlp"


def test_inspect_never_unpickles_objects_even_when_told_to_trust(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    for extra in ([], ["--trust-checkpoint", "--arch", "mlp", "--dataset", "digits"]):
        assert inspect_main([str(path), *extra]) == 4
        out = capsys.readouterr().out
        assert "pickled Python objects" in out and "system" in out
        assert not marker.exists()
    # The payload is real: trusting the file runs it.
    with pytest.raises(CheckpointError):
        load_checkpoint(path, Description(arch="mlp", dataset="digits"), trust=True)
    assert marker.exists()


# ------------------------------------------------------------------ other archives of code


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


def test_torch_export_archive_is_refused_even_when_trusted(tmp_path, capsys):
    exported = torch.export.export(_Linear(), (torch.zeros(1, 1, 8, 8),))
    path = tmp_path / "program.pt2"
    torch.export.save(exported, path)
    assert code_archive_kind(path) == "torch.export"
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="torch.export archive") as info:
            load_checkpoint(path, Description(dataset="digits"), trust=trust)
        assert "\n" not in str(info.value) and "state_dict" in str(info.value)
    assert inspect_main([str(path)]) == 4
    assert "torch.export archive" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_torch_package_archive_is_refused_even_when_trusted(tmp_path):
    from torch.package import PackageExporter

    path = tmp_path / "package.pt"
    with PackageExporter(path) as exporter:
        exporter.save_source_string("payload", "import os\n")
        exporter.save_pickle("weights", "w.pkl", {"w": torch.zeros(2)})
    assert code_archive_kind(path) == "torch.package"
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="torch.package archive"):
            load_checkpoint(path, Description(arch="mlp", dataset="digits"), trust=trust)


# ------------------------------------------------------------------ our format, unhashed


def _ours_without_hash(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    spec = CheckpointSpec("mlp", 10, (1, 8, 8), dataset="digits")
    network, _ = build_model(spec)
    from checkpoints import save_checkpoint

    saved = save_checkpoint(tmp_path / "ours.pt", network, spec)
    raw = torch.load(saved, weights_only=True)
    del raw["weights_sha256"]
    torch.save(raw, tmp_path / "unhashed.pt")
    return tmp_path / "unhashed.pt", network


def test_our_format_without_weights_hash_needs_trust(tmp_path, capsys):
    path, network = _ours_without_hash(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "weights_sha256" in message
    assert "got none" in message and "--trust-checkpoint" in message
    loaded = load_checkpoint(path, trust=True)
    assert any("unchecked" in note for note in loaded.notes)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), network.eval()(x))
    assert inspect_main([str(path)]) == 4
    assert "weights_sha256" in capsys.readouterr().out
    assert inspect_main([str(path), "--trust-checkpoint"]) == 0


def test_every_zoo_checkpoint_records_its_weights_hash():
    files = sorted(ZOO_DIR.glob("*.pt"))
    assert files
    for path in files:
        raw = torch.load(path, weights_only=True)
        assert isinstance(raw["weights_sha256"], str) and len(raw["weights_sha256"]) == 64
        load_checkpoint(path)


def test_plain_state_dict_loads_without_trust(tmp_path):
    torch.save(build_network("mlp", (1, 8, 8), 10).state_dict(), tmp_path / "plain.pt")
    assert code_archive_kind(tmp_path / "plain.pt") is None
    loaded = load_checkpoint(tmp_path / "plain.pt", Description(arch="mlp", dataset="digits"))
    assert loaded.spec.source_format == "state_dict"
