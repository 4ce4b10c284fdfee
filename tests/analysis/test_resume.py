"""An interrupted audit resumes from its finished units and gives the uninterrupted document.

The oracle is the uninterrupted run of the same command: a resumed document must equal it in
everything but timings. Units that are not this audit's (another identity, model, suite or
key; a damaged or foreign file) are recomputed, never trusted and never run as code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
import torch
from audit_helpers import quick_config, without_timings
from resume_helpers import ZOO

from analysis.config import build_suite
from analysis.pipeline import evaluation_set, run_audit
from analysis.resume import PARTIAL, UnitCache
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from core.document import AuditResult, Probes, encode

CPU = torch.device("cpu")


class _Stopping(UnitCache):
    """Raises KeyboardInterrupt right after its ``stop``-th unit is written (0: never)."""

    def __init__(self, *args, stop: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop
        self.stored: list[str] = []

    def store(self, unit, value) -> None:
        super().store(unit, value)
        self.stored.append(unit)
        if len(self.stored) == self.stop:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def audited():
    config = quick_config(num_samples=40, flatness=True)
    loaded = load_checkpoint(ZOO)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    reference = run_audit(loaded, evaluation, config, device=CPU)
    return loaded, evaluation, config, reference


def test_every_unit_kind_is_kept_and_resumes_to_the_same_document(audited, tmp_path):
    loaded, evaluation, config, reference = audited
    folder = tmp_path / PARTIAL
    counting = _Stopping(folder, {"run": 1})
    whole = run_audit(loaded, evaluation, config, device=CPU, cache=counting)
    assert without_timings(whole) == without_timings(reference)
    units = counting.stored
    # The probes, both batch choices, attacks at each norm and epsilon, the sweeps and each
    # flatness estimator in both modes.
    assert {"probes", "batch-attacks", "batch-flatness"} <= set(units)
    assert any(u.startswith("linf-sweep-") for u in units)
    assert any(u.startswith("l2-independent-sweep-") for u in units)
    assert any(u.startswith("flatness-eval-") for u in units)
    assert any(u.startswith("flatness-train-") for u in units)
    shutil.rmtree(folder)
    for stop in (1, len(units) // 2, len(units) - 1):
        with pytest.raises(KeyboardInterrupt):
            run_audit(
                loaded,
                evaluation,
                config,
                device=CPU,
                cache=_Stopping(folder, {"run": 1}, stop=stop),
            )
        resumed = UnitCache(folder, {"run": 1}, report=lambda line: None)
        document = run_audit(loaded, evaluation, config, device=CPU, cache=resumed)
        assert resumed.resumed == units[:stop], stop
        assert without_timings(document) == without_timings(reference), stop
        shutil.rmtree(folder)


def test_the_probes_unit_loads_back_as_the_record_it_stored(audited, tmp_path):
    """The probes are kept as the document's record, keys it does not know included."""
    probes = replace(audited[3].probes, extra=MappingProxyType({"later_field": [1, 2]}))
    UnitCache(tmp_path / PARTIAL, {"run": 1}).store("probes", probes)
    loaded = UnitCache(tmp_path / PARTIAL, {"run": 1}, report=lambda line: None).load("probes")
    assert type(loaded) is Probes and loaded == probes
    assert loaded.extra == {"later_field": [1, 2]} and isinstance(loaded.extra, MappingProxyType)
    assert encode(loaded) == encode(probes)


def test_another_identity_or_fresh_discards_the_units(tmp_path):
    folder = tmp_path / PARTIAL
    UnitCache(folder, {"config": 1}).store("probes", torch.arange(3))
    lines: list[str] = []
    same = UnitCache(folder, {"config": 1}, report=lines.append)
    assert torch.equal(same.load("probes"), torch.arange(3)) and "resuming" in lines[-1]
    changed = UnitCache(folder, {"config": 2}, report=lines.append)
    assert "changed" in lines[-1] and not folder.exists()
    assert changed.load("probes") is None
    UnitCache(folder, {"config": 1}).store("probes", torch.arange(3))
    fresh = UnitCache(folder, {"config": 1}, fresh=True, report=lines.append)
    assert "--fresh" in lines[-1] and fresh.load("probes") is None and fresh.resumed == []


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _split(data: bytes) -> tuple[bytes, dict, bytes]:
    """A unit file's first line, header and value bytes."""
    magic, _, rest = data.partition(b"\n")
    header, _, body = rest.partition(b"\n")
    return magic + b"\n", json.loads(header), body


def _unit_file(magic: bytes, header: dict, body: bytes) -> bytes:
    """A unit file with ``body`` under ``header``, its size and SHA-256 made to match."""
    header = {**header, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    return magic + json.dumps(header).encode() + b"\n" + body


def test_a_unit_file_never_runs_code(tmp_path, monkeypatch):
    """A planted pickle under a valid header (the right unit, key and checksum) is refused by
    the loader, not executed, and recomputed; a bare pickle is refused before it is read."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / PARTIAL
    cache = UnitCache(folder, {"config": 1})
    cache.store("probes", torch.zeros(1))
    magic, header, _ = _split((folder / "probes.pt").read_bytes())
    buffer = io.BytesIO()
    torch.save(_Payload(), buffer)
    (folder / "probes.pt").write_bytes(_unit_file(magic, header, buffer.getvalue()))
    with open(folder / "other.pt", "wb") as out:
        pickle.dump({"unit": "other", "value": _Payload()}, out)
    lines: list[str] = []
    again = UnitCache(folder, {"config": 1}, report=lines.append)
    value, loaded = again.unit("probes", lambda: torch.ones(2))
    assert not loaded and torch.equal(value, torch.ones(2))
    assert again.load("other") is None
    assert not (tmp_path / "PWNED").exists()
    assert any(
        line.startswith("recomputing probes: its stored copy does not load") for line in lines
    )
    assert any(
        line.startswith("recomputing other: its stored copy is not a unit") for line in lines
    )


def test_a_unit_made_under_another_key_is_recomputed(tmp_path):
    """The folder's key.json is this run's, but one unit file was made under another key
    (copied from another audit's folder): it is recomputed, with one line, never loaded."""
    other, folder = tmp_path / "other" / PARTIAL, tmp_path / "this" / PARTIAL
    UnitCache(other, {"config": 1}).store("probes", torch.full((3,), 7.0))
    UnitCache(folder, {"config": 2}).store("batch-attacks", torch.arange(2))
    shutil.copy(other / "probes.pt", folder / "probes.pt")
    lines: list[str] = []
    cache = UnitCache(folder, {"config": 2}, report=lines.append)
    value, loaded = cache.unit("probes", lambda: torch.zeros(3))
    assert not loaded and torch.equal(value, torch.zeros(3))
    assert lines[-1] == (
        "recomputing probes: its stored copy was made for another checkpoint, evaluation set "
        f"or configuration ({folder / 'probes.pt'}; --fresh discards every finished unit)"
    )
    # This run's own unit is still resumed, and the recomputed one is stored under its key.
    assert torch.equal(cache.unit("batch-attacks", lambda: torch.zeros(2))[0], torch.arange(2))
    again = UnitCache(folder, {"config": 2}, report=lines.append)
    assert torch.equal(again.load("probes"), torch.zeros(3))
    assert cache.resumed == ["batch-attacks"] and again.resumed == ["probes"]


def _flip(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]


def _wrong_value(data: bytes) -> bytes:
    """What the unit file would be under the format without a header: a plain torch file of
    another value."""
    buffer = io.BytesIO()
    torch.save({"unit": "probes", "value": torch.zeros(3)}, buffer)
    return buffer.getvalue()


def _renamed(data: bytes) -> bytes:
    magic, header, body = _split(data)
    return _unit_file(magic, {**header, "unit": "batch-attacks"}, body)


def _header_cut(data: bytes) -> bytes:
    return data[: len(data.partition(b"\n")[0]) + 10]


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_flip, "is damaged (its SHA-256 does not match)"),
        (lambda data: data[: len(data) // 2], "is damaged (its SHA-256 does not match)"),
        (_header_cut, "is damaged (no readable header)"),
        (lambda data: b"", "is not a unit file of this version of the toolkit"),
        (_wrong_value, "is not a unit file of this version of the toolkit"),
        (_renamed, "holds another unit ('batch-attacks')"),
    ],
    ids=["flipped-bit", "truncated", "header-cut", "empty", "wrong-value", "other-unit"],
)
def test_a_damaged_unit_is_recomputed_in_one_line(tmp_path, damage, why):
    folder = tmp_path / PARTIAL
    UnitCache(folder, {"config": 1}).store("probes", torch.arange(4.0))
    path = folder / "probes.pt"
    path.write_bytes(damage(path.read_bytes()))
    lines: list[str] = []
    cache = UnitCache(folder, {"config": 1}, report=lines.append)
    value, loaded = cache.unit("probes", lambda: torch.ones(4))
    assert not loaded and torch.equal(value, torch.ones(4)) and cache.resumed == []
    assert lines[-1] == (
        f"recomputing probes: its stored copy {why} ({path}; --fresh discards every finished unit)"
    )
    assert torch.equal(UnitCache(folder, {"config": 1}).load("probes"), torch.ones(4))


def _suite_file(folder: Path, num_steps: int) -> Path:
    path = folder / f"pgd-{num_steps}.toml"
    path.write_text(
        'preset = "quick"\n[epsilons]\nlinf = [0.1]\n[[attacks]]\nkind = "pgd"\n'
        f'label = "pgd-ce"\nnum_steps = {num_steps}\nrel_step_size = 0.25\n'
    )
    return path


def _pgd_config(folder: Path, num_steps: int):
    suite = build_suite("quick", "digits", suite_file=_suite_file(folder, num_steps))
    return replace(quick_config(num_samples=40), suite=suite)


def _robust(result: AuditResult) -> list:
    return [norm.reliable_robust_accuracy for norm in result.robustness.norms]


@pytest.mark.parametrize("source", ["another-model", "one-step-suite"])
def test_planted_units_of_another_model_or_suite_are_recomputed(tmp_path, source):
    """Every unit file of another audit (another model of the zoo, or the same model under a
    1-step PGD) planted in this audit's folder, key.json included being this audit's, is
    recomputed: the document is the uninterrupted one."""
    config = _pgd_config(tmp_path, 20)
    loaded = load_checkpoint(ZOO)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    reference = run_audit(loaded, evaluation, config, device=CPU)

    other = tmp_path / "other" / PARTIAL
    if source == "another-model":
        other_loaded, other_config = load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt"), config
    else:
        other_loaded, other_config = loaded, _pgd_config(tmp_path, 1)
    other_evaluation = evaluation_set(other_loaded, None, config.num_samples, config.seed)
    planted = run_audit(
        other_loaded,
        other_evaluation,
        other_config,
        device=CPU,
        cache=UnitCache(other, {"checkpoint": other_loaded.sha256, **other_config.to_dict()}),
    )
    # The planted units would change the result if they were taken.
    assert _robust(planted) != _robust(reference)

    identity = {"checkpoint": loaded.sha256, **config.to_dict()}
    folder = tmp_path / "this" / PARTIAL
    with pytest.raises(KeyboardInterrupt):
        run_audit(loaded, evaluation, config, device=CPU, cache=_Stopping(folder, identity, stop=1))
    own = {p.name for p in folder.glob("*.pt")}
    copied = {p.name for p in other.glob("*.pt")}
    assert own and copied - own
    for path in other.glob("*.pt"):
        if path.name not in own:
            shutil.copy(path, folder / path.name)
    lines: list[str] = []
    resumed = UnitCache(folder, identity, report=lines.append)
    document = run_audit(loaded, evaluation, config, device=CPU, cache=resumed)
    assert without_timings(document) == without_timings(reference)
    assert {f"{unit}.pt" for unit in resumed.resumed} == own
    rejected = [line for line in lines if line.startswith("recomputing ")]
    assert len(rejected) == len(copied - own)
    assert all(
        "made for another checkpoint, evaluation set or configuration" in line for line in rejected
    )


def test_the_key_follows_the_source_code(tmp_path):
    """A working copy keeps its version number from one change to the next: the key holds a
    SHA-256 of the packages' source, so units made by other code are not resumed."""
    from analysis.resume import SOURCE_PACKAGES, SOURCE_ROOT
    from analysis.resume import source_sha256 as cached_source_sha256

    # Every package but the reports (rendered from the document, never a unit) counts, so a
    # new package cannot be forgotten.
    packages = {path.parent.name for path in SOURCE_ROOT.glob("*/__init__.py")}
    assert set(SOURCE_PACKAGES) == packages - {"reports", "tests", "benchmarks"}
    source_sha256 = cached_source_sha256.__wrapped__  # not the cached value
    for package in SOURCE_PACKAGES:
        (tmp_path / package / "sub").mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "sub" / "core.py").write_text("x = 1\n")
    (tmp_path / "attacks" / "notes.txt").write_text("not source")
    first = source_sha256(tmp_path)
    # The same hash as ever for the same files, so that folders already written still resume.
    assert first == "9f104b02b97f0fcf96b81da7147a3e7a243af3cf3a1825fbad2f6e47df43d91c"
    (tmp_path / "attacks" / "notes.txt").write_text("changed, still not source")
    assert source_sha256(tmp_path) == first
    (tmp_path / "flatness" / "sub" / "core.py").write_text("x = 2\n")
    changed = source_sha256(tmp_path)
    assert changed != first
    (tmp_path / "flatness" / "sub" / "core.py").rename(tmp_path / "flatness" / "sub" / "other.py")
    assert source_sha256(tmp_path) not in (first, changed)
