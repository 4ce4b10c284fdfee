"""Bad input, table-driven: every case gets exit status 2 (or the status its table row names),
exactly one line on stderr naming the culprit, no traceback, and leaves nothing behind: no file
or folder appears anywhere under the test's folder (``--out`` included)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from analysis import pipeline
from checkpoints.train import ZOO_DIR
from commands import audit, gate, inspect
from core.boundary import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    atomic_write_text,
    run_command,
)
from core.document import DocumentError

ZOO = ZOO_DIR / "digits-mlp-none.pt"
LENET = ZOO_DIR / "mnist-lenet5-dropout.pt"
FAST = ["--preset", "quick", "--no-flatness", "--quiet", "--num-samples", "20"]
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "audit": audit.main,
    "gate": gate.main,
    "inspect": inspect.main,
}


@dataclass(frozen=True)
class Case:
    """One bad input: ``build(tmp)`` writes what it needs under ``tmp`` and returns argv."""

    name: str
    command: str
    build: Callable[[Path], list[str]]
    culprit: str
    status: int = EXIT_INPUT


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)  # type: ignore[operator]
    return path


def _audit(*extra: str, checkpoint: Path | str = ZOO) -> Callable[[Path], list[str]]:
    return lambda tmp: [str(checkpoint), *FAST, "--out", str(tmp / "out"), *extra]


def _with_file(
    name: str, data: bytes | str, make_argv: Callable[[Path, Path], list[str]]
) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return make_argv(tmp, _write(tmp / name, data))

    return build


def _suite(text: str) -> Callable[[Path], list[str]]:
    return _with_file("suite.toml", text, lambda tmp, f: _audit("--suite", str(f))(tmp))


# ----------------------------------------------------------------- baselines and results


@pytest.fixture(scope="module")
def result_document(tmp_path_factory) -> dict:
    """A real quick audit of the zoo model on the first samples, the source of the baselines."""
    out = tmp_path_factory.mktemp("result")
    assert audit.main([str(ZOO), *FAST, "--out", str(out)]) == 0
    return json.loads((out / ZOO.stem / "audit.json").read_text())


_DOCUMENT: dict = {}


def _baseline(edit: Callable[[dict], object]) -> Callable[[Path], list[str]]:
    """``--baseline`` with a copy of the real result, edited."""

    def build(tmp: Path) -> list[str]:
        document = copy.deepcopy(_DOCUMENT["result"])
        edit(document)
        path = _write(tmp / "baseline.json", json.dumps(document))
        return _audit("--baseline", str(path))(tmp)

    return build


def _gate(edit: Callable[[dict], object], *extra: str) -> Callable[[Path], list[str]]:
    """``analysis.gate`` of the real result against an edited copy of it."""

    def build(tmp: Path) -> list[str]:
        result = _write(tmp / "result.json", json.dumps(_DOCUMENT["result"]))
        document = copy.deepcopy(_DOCUMENT["result"])
        edit(document)
        baseline = _write(tmp / "baseline.json", json.dumps(document))
        return [str(result), str(baseline), *extra]

    return build


def _another_checkpoint(document: dict) -> None:
    """A baseline from another checkpoint: another file and other weights (the same weights
    under another file hash are the same model, which the gate accepts)."""
    document["provenance"]["checkpoint_sha256"] = "0" * 64
    document["provenance"]["weights_sha256"] = "1" * 64


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()


# ----------------------------------------------------------------- models that misbehave


class _FiveOutputs(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)[:, :5]


class _Raises(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("this model refuses every input")
        return x


class _Pair(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = x.flatten(1)[:, :10]
        return logits, logits


def _scripted(module: nn.Module) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = tmp / "model.ts.pt"
        torch.jit.save(torch.jit.script(module), str(path))
        return _audit("--trust-checkpoint", "--dataset", "digits", checkpoint=path)(tmp)

    return build


def _untrusted_script(tmp: Path) -> list[str]:
    path = tmp / "model.ts.pt"
    torch.jit.save(torch.jit.script(_Pair()), str(path))
    return _audit("--dataset", "digits", checkpoint=path)(tmp)


def _without_hash(tmp: Path) -> list[str]:
    raw = torch.load(ZOO, weights_only=True)
    del raw["weights_sha256"]
    torch.save(raw, tmp / "nohash.pt")
    return _audit(checkpoint=tmp / "nohash.pt")(tmp)


def _data(images: np.ndarray, labels: np.ndarray) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        np.savez(tmp / "data.npz", x=images, y=labels)
        return _audit("--data", str(tmp / "data.npz"))(tmp)

    return build


_RNG = np.random.default_rng(0)
_PIXELS = _RNG.random((30, 1, 8, 8)).astype(np.float32)
_LABELS = _RNG.integers(0, 10, 30)
_NAN_PIXELS = _PIXELS.copy()
_NAN_PIXELS[3, 0, 2, 2] = np.nan


_DEEP_JSON = "[" * 100_000 + "]" * 100_000


def _sparse(name: str, size: int, make_argv: Callable[[Path, Path], list[str]]):
    """A file of ``size`` bytes that takes no room on disk (a sparse file of zeros)."""

    def build(tmp: Path) -> list[str]:
        path = tmp / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return make_argv(tmp, path)

    return build


def _idx_bomb(tmp: Path) -> list[str]:
    """An MNIST folder whose gzipped images header says 10,000 images of 28x28 (7.8 MB) while
    the file holds a few bytes: refused from the header and the file's size, before inflating."""
    folder = tmp / "mnist"
    folder.mkdir()
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10_000, 28, 28)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(100)))
    labels = bytes([0, 0, 8, 1]) + struct.pack(">I", 10_000) + bytes(10_000)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return _audit("--data", str(folder), checkpoint=LENET)(tmp)


class _Payload:
    """Runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _raw_pickle(tmp: Path) -> list[str]:
    """A plain protocol-4 pickle with a payload, saved as a .pt file."""
    (tmp / "model.pt").write_bytes(pickle.dumps(_Payload(tmp / "ran"), protocol=4))
    return _audit("--arch", "mlp", "--dataset", "digits", checkpoint=tmp / "model.pt")(tmp)


def _same_stem(tmp: Path) -> list[str]:
    for folder in ("a", "b"):
        _write(tmp / folder / "model.pt", ZOO.read_bytes())
    return [
        str(tmp / "a" / "model.pt"),
        str(tmp / "b" / "model.pt"),
        *FAST,
        "--out",
        str(tmp / "o"),
    ]


CASES = [
    # ------------------------------------------------------------------ checkpoint files
    Case("missing-checkpoint", "audit", _audit(checkpoint="/nonexistent/model.pt"), "model.pt"),
    Case("checkpoint-is-a-folder", "audit", lambda t: _audit(checkpoint=t)(t), "is a folder"),
    Case("same-stem", "audit", _same_stem, "would both write"),
    # ------------------------------------------------------------------ numeric flags
    Case("num-samples-zero", "audit", _audit("--num-samples", "0"), "--num-samples"),
    Case("num-samples-negative", "audit", _audit("--num-samples", "-5"), "--num-samples"),
    Case("num-samples-text", "audit", _audit("--num-samples", "abc"), "--num-samples"),
    Case("batch-size-zero", "audit", _audit("--batch-size", "0"), "--batch-size"),
    Case("batch-size-word", "audit", _audit("--batch-size", "big"), "auto or a positive"),
    Case("flatness-samples-zero", "audit", _audit("--flatness-samples", "0"), "--flatness-samples"),
    Case("seed-negative", "audit", _audit("--seed", "-1"), "--seed"),
    Case("seed-huge", "audit", _audit("--seed", str(2**70)), "--seed"),
    Case("seed-float", "audit", _audit("--seed", "0.5"), "--seed"),
    Case("device-unknown", "audit", _audit("--device", "tpu"), "--device"),
    Case("unknown-flag", "audit", _audit("--frobnicate"), "--frobnicate"),
    # An abbreviation is a typo, never taken for the flag it starts.
    Case("abbreviated-flag", "audit", _audit("--no-flatnes"), "--no-flatnes"),
    Case("gate-abbreviated-flag", "gate", lambda t: ["r.json", "b.json", "--max"], "--max"),
    Case("dataset-misspelt", "audit", _audit("--dataset", "mnsit"), "unknown dataset 'mnsit'"),
    Case("inspect-dataset-misspelt", "inspect", lambda t: [str(ZOO), "--dataset", "x"], "'x'"),
    # ------------------------------------------------------------------ epsilons
    Case("epsilon-zero", "audit", _audit("--epsilons", "0"), "positive"),
    Case("epsilon-negative", "audit", _audit("--epsilons", "-0.1"), "positive"),
    Case("epsilon-nan", "audit", _audit("--epsilons", "nan"), "--epsilons"),
    Case("epsilon-inf", "audit", _audit("--epsilons", "inf"), "--epsilons"),
    Case("epsilon-text", "audit", _audit("--epsilons", "big"), "--epsilons"),
    Case("epsilon-descending", "audit", _audit("--epsilons", "0.3,0.1"), "ascending"),
    Case("epsilon-empty", "audit", _audit("--epsilons", ","), "--epsilons"),
    Case("epsilon-norm-empty", "audit", _audit("--epsilons", "linf="), "--epsilons linf"),
    Case("epsilon-norm-unknown", "audit", _audit("--epsilons", "l3=0.1"), "l3"),
    Case("epsilon-expression", "audit", _audit("--epsilons", "2**-3"), "fractions (0.5"),
    Case("epsilon-fraction-zero", "audit", _audit("--epsilons", "8/0"), "8/0"),
    Case(
        "epsilon-no-norm-two-norms",
        "audit",
        _audit("--epsilons", "0.1,0.2"),
        "--epsilons 'linf=8/255;l2=0.5'",
    ),
    Case(
        "epsilon-no-norm-both-norms-named",
        "audit",
        _audit("--epsilons", "8/255", "--norms", "linf,l2"),
        "names no norm",
    ),
    # ------------------------------------------------------------------ suite flags
    Case("attacks-empty", "audit", _audit("--attacks", ""), "--attacks is empty"),
    Case("norms-empty", "audit", _audit("--norms", ","), "--norms is empty"),
    Case("norms-unknown", "audit", _audit("--norms", "l3"), "l3"),
    Case("attacks-unknown", "audit", _audit("--attacks", "cw-l2"), "cw-l2"),
    Case("preset-unknown", "audit", _audit("--preset", "fast"), "--preset"),
    Case("backend-unknown", "audit", _audit("--backend", "foolbox"), "--backend"),
    # ------------------------------------------------------------------ suite files
    Case("suite-missing", "audit", _audit("--suite", "/nonexistent.toml"), "nonexistent.toml"),
    Case("suite-is-a-folder", "audit", lambda t: _audit("--suite", str(t))(t), "suite"),
    Case("suite-not-toml", "audit", _suite("[attacks\n"), "not valid TOML"),
    Case(
        "suite-not-utf8",
        "audit",
        _with_file("suite.toml", b"\xff\xfe[attacks]", lambda t, f: _audit("--suite", str(f))(t)),
        "suite.toml",
    ),
    Case(
        "suite-misspelt-parameter",
        "audit",
        _suite('[[attacks]]\nkind = "pgd"\nstep = 0.1\n'),
        "step",
    ),
    Case(
        "suite-wrong-type",
        "audit",
        _suite('[[attacks]]\nkind = "pgd"\nsteps = "many"\n'),
        "steps",
    ),
    Case(
        "suite-negative-parameter",
        "audit",
        _suite('[[attacks]]\nkind = "pgd"\nsteps = -3\n'),
        "steps",
    ),
    Case("suite-unknown-kind", "audit", _suite('[[attacks]]\nkind = "deepfool"\n'), "deepfool"),
    Case("suite-epsilon-zero", "audit", _suite("[epsilons]\nlinf = [0]\n"), "positive"),
    Case(
        "suite-nested-deeply",
        "audit",
        _suite("a = " + _DEEP_JSON + "\n"),
        "nests arrays and tables 100000 deep, too deeply for a suite file",
    ),
    Case(
        "suite-dotted-key-of-100001-parts",
        "audit",
        _suite("a" + ".a" * 100_000 + " = 1\n"),
        "a dotted key of 100001 parts",
    ),
    Case(
        "suite-too-large",
        "audit",
        _sparse("suite.toml", 2 << 20, lambda t, f: _audit("--suite", str(f))(t)),
        "holds 2 MiB, more than a suite file can: at most 1 MiB",
    ),
    Case(
        "suite-pgd-10**12-steps",
        "audit",
        _suite('[[attacks]]\nkind = "pgd"\nnum_steps = 1000000000000\n'),
        "num_steps: expected int in [1, 100000], got 1000000000000 (each step is a forward",
    ),
    Case(
        "suite-square-10**12-queries",
        "audit",
        _suite('[[attacks]]\nkind = "square"\nnum_queries = 1000000000000\n'),
        "num_queries: expected int in [1, 1000000], got 1000000000000 (each query",
    ),
    Case(
        "suite-noise-10**12-draws",
        "audit",
        _suite('[[attacks]]\nkind = "noise"\nnum_draws = 1000000000000\n'),
        "num_draws: expected int in [1, 100000], got 1000000000000 (each draw",
    ),
    Case(
        "suite-sweep-10**9-points",
        "audit",
        _suite('[sweep]\nattack = "pgd-ce"\nnum_points = 1000000000\n'),
        "num_points: expected int in [1, 1000], got 1000000000 (each point",
    ),
    Case(
        "suite-10**12-eot-samples",
        "audit",
        _suite("[options]\neot_samples = 1000000000000\n"),
        "eot_samples: expected int in [1, 10000], got 1000000000000",
    ),
    # ------------------------------------------------------------------ output paths
    Case(
        "out-is-a-file",
        "audit",
        _with_file("taken", "x", lambda t, f: [str(ZOO), *FAST, "--out", str(f)]),
        "--out",
    ),
    Case(
        "out-under-a-file",
        "audit",
        _with_file("taken", "x", lambda t, f: [str(ZOO), *FAST, "--out", str(f / "sub")]),
        "--out",
    ),
    Case(
        "junit-is-a-folder",
        "audit",
        lambda t: _baseline(lambda d: None)(t) + ["--junit", str(t)],
        "--junit",
    ),
    Case(
        "junit-under-a-file",
        "audit",
        _with_file(
            "taken",
            "x",
            lambda t, f: _baseline(lambda d: None)(t) + ["--junit", str(f / "gate.xml")],
        ),
        "--junit",
    ),
    Case(
        "out-under-proc",
        "audit",
        _audit("--out", "/proc/robaudit-out"),
        "--out /proc/robaudit-out cannot be written in /proc",
    ),
    Case(
        "out-under-sys",
        "audit",
        _audit("--out", "/sys/robaudit-out"),
        "--out /sys/robaudit-out cannot be written in /sys",
    ),
    Case(
        "junit-under-proc",
        "audit",
        lambda t: _baseline(lambda d: None)(t) + ["--junit", "/proc/gate.xml"],
        "--junit /proc/gate.xml cannot be written in /proc",
    ),
    Case(
        "junit-a-device",
        "audit",
        lambda t: _baseline(lambda d: None)(t) + ["--junit", "/dev/full"],
        "--junit /dev/full exists and is a character device, not a regular file",
    ),
    Case(
        "update-baseline-under-proc",
        "audit",
        _audit("--baseline", "/proc/baseline.json", "--update-baseline"),
        "--baseline (with --update-baseline) /proc/baseline.json cannot be written in /proc",
    ),
    Case(
        "update-baseline-into-a-folder",
        "audit",
        lambda t: _audit("--baseline", str(t), "--update-baseline")(t),
        "--baseline",
    ),
    # ------------------------------------------------------------------ gate flags
    Case("junit-without-baseline", "audit", _audit("--junit", "gate.xml"), "--baseline"),
    Case("update-without-baseline", "audit", _audit("--update-baseline"), "--baseline"),
    Case(
        "allow-different-without-baseline",
        "audit",
        _audit("--allow-different-checkpoint"),
        "--baseline",
    ),
    Case(
        "max-drop-out-of-range",
        "audit",
        lambda t: _baseline(lambda d: None)(t) + ["--max-drop", "3"],
        "--max-drop",
    ),
    Case(
        "baseline-with-two-checkpoints",
        "audit",
        lambda t: [str(ZOO), str(LENET), *FAST, "--out", str(t / "o"), "--baseline", "b.json"],
        "one checkpoint",
    ),
    # ------------------------------------------------------------------ baselines
    Case("baseline-missing", "audit", _audit("--baseline", "/nonexistent.json"), "nonexistent"),
    Case("baseline-is-a-folder", "audit", lambda t: _audit("--baseline", str(t))(t), ""),
    Case(
        "baseline-not-json",
        "audit",
        _with_file("b.json", "{not json", lambda t, f: _audit("--baseline", str(f))(t)),
        "not valid JSON",
    ),
    Case(
        "baseline-nested-deeply",
        "audit",
        _with_file("b.json", _DEEP_JSON, lambda t, f: _audit("--baseline", str(f))(t)),
        "nests arrays and tables 100000 deep, too deeply for a result file",
    ),
    Case(
        "baseline-too-large",
        "audit",
        _sparse("b.json", 600 << 20, lambda t, f: _audit("--baseline", str(f))(t)),
        "holds 600 MiB, more than a result file can: at most 512 MiB",
    ),
    Case(
        "baseline-a-device",
        "audit",
        _audit("--baseline", "/dev/zero"),
        "result file /dev/zero is not a regular file but a character device",
    ),
    Case(
        "baseline-a-list",
        "audit",
        _with_file("b.json", "[1, 2]", lambda t, f: _audit("--baseline", str(f))(t)),
        "JSON object",
    ),
    Case("baseline-wrong-version", "audit", _baseline(_set("schema_version", "9.9")), "9.9"),
    Case(
        "baseline-short-clean-row",
        "audit",
        _baseline(_set("clean_correct", "01")),
        "clean_correct",
    ),
    Case(
        "baseline-without-robustness",
        "audit",
        _baseline(_set("robustness", _DELETE)),
        "robustness",
    ),
    Case(
        "baseline-bad-norm",
        "audit",
        _baseline(_set("robustness.norms.0.norm", "l7")),
        "robustness.norms[0].norm",
    ),
    Case(
        "baseline-success-not-bits",
        "audit",
        _baseline(_set("robustness.norms.0.attacks.0.success", [12])),
        "success",
    ),
    Case(
        "baseline-indices-text",
        "audit",
        _baseline(_set("evaluation.indices", "all")),
        "indices",
    ),
    Case(
        "baseline-of-another-checkpoint",
        "audit",
        _baseline(_another_checkpoint),
        "--allow-different-checkpoint",
    ),
    Case(
        "baseline-on-other-samples",
        "audit",
        lambda t: _baseline(lambda d: None)(t) + ["--num-samples", "25"],
        "other samples",
    ),
    Case(
        "baseline-of-another-dataset",
        "audit",
        lambda t: (
            _baseline(_set("evaluation.dataset", "mnist"))(t) + ["--allow-different-checkpoint"]
        ),
        "different datasets",
    ),
    # ------------------------------------------------------------------ models
    Case(
        "model-five-outputs", "audit", _scripted(_FiveOutputs()), "gives 5 outputs, but 10 classes"
    ),
    Case("model-raises", "audit", _scripted(_Raises()), "refuses every input"),
    Case("model-returns-a-pair", "audit", _scripted(_Pair()), "tuple"),
    Case("torchscript-untrusted", "audit", _untrusted_script, "--trust-checkpoint"),
    Case("checkpoint-raw-pickle", "audit", _raw_pickle, "nothing from it ran"),
    Case(
        "checkpoint-a-device",
        "audit",
        _audit(checkpoint="/dev/zero"),
        "checkpoint /dev/zero is not a regular file but a character device",
    ),
    Case("weights-hash-missing", "audit", _without_hash, "--trust-checkpoint"),
    # ------------------------------------------------------------------ datasets
    Case(
        "data-faint-uint8",
        "audit",
        _data((_PIXELS * 16).astype(np.uint8), _LABELS),
        "uint8 values lie in [0, 15]",
    ),
    Case("data-nan-pixels", "audit", _data(_NAN_PIXELS, _LABELS), "NaN"),
    Case("data-float-labels", "audit", _data(_PIXELS, _LABELS.astype(np.float32)), "integer"),
    Case("data-labels-out-of-range", "audit", _data(_PIXELS, _LABELS + 5), "class indices"),
    Case("data-wrong-shape", "audit", _data(_PIXELS[:, :, :4], _LABELS), "(1, 8, 8)"),
    Case(
        "data-idx-header-bomb",
        "audit",
        _idx_bomb,
        "the IDX header says shape (10000, 28, 28), 7840000 bytes of data, but the file is",
    ),
    Case(
        "data-random-bytes",
        "audit",
        _with_file("d.npz", b"\x00garbage" * 9, lambda t, f: _audit("--data", str(f))(t)),
        "not an .npz archive",
    ),
    # ------------------------------------------------------------------ analysis.gate
    Case("gate-result-missing", "gate", lambda t: ["/nonexistent.json", "b.json"], "nonexistent"),
    Case("gate-result-is-a-folder", "gate", lambda t: [str(t), "b.json"], ""),
    Case("gate-max-drop", "gate", _gate(lambda d: None, "--max-drop", "-1"), "--max-drop"),
    Case(
        "gate-result-nested-deeply",
        "gate",
        _with_file("r.json", _DEEP_JSON, lambda t, f: [str(f), "b.json"]),
        "too deeply for a result file",
    ),
    Case(
        "gate-baseline-nested-deeply",
        "gate",
        lambda t: _gate(lambda d: None)(t)[:1] + [str(_write(t / "deep.json", _DEEP_JSON))],
        "too deeply for a result file",
    ),
    Case(
        "gate-junit-under-proc",
        "gate",
        lambda t: _gate(lambda d: None)(t) + ["--junit", "/proc/gate.xml"],
        "--junit /proc/gate.xml cannot be written in /proc",
    ),
    Case(
        "gate-update-baseline-under-proc",
        "gate",
        lambda t: _gate(lambda d: None)(t)[:1] + ["/proc/baseline.json", "--update-baseline"],
        "BASELINE /proc/baseline.json cannot be written in /proc",
    ),
    Case(
        "gate-other-checkpoint",
        "gate",
        _gate(_another_checkpoint),
        "--allow-different-checkpoint",
    ),
    Case("gate-baseline-bad-content", "gate", _gate(_set("findings", {})), "findings"),
    Case(
        "gate-baseline-fewer-indices",
        "gate",
        _gate(_set("evaluation.indices", [0, 1])),
        "evaluation.indices",
    ),
    Case(
        "gate-baseline-negative-index",
        "gate",
        _gate(lambda d: d["evaluation"]["indices"].__setitem__(0, -1)),
        "non-negative",
    ),
    Case(
        "gate-junit-is-a-folder",
        "gate",
        lambda t: _gate(lambda d: None)(t) + ["--junit", str(t)],
        "--junit",
    ),
    Case("gate-unknown-flag", "gate", _gate(lambda d: None, "--strict"), "--strict"),
]


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_one_line(case, result_document, tmp_path, capsys, monkeypatch):
    _DOCUMENT["result"] = result_document
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = case.build(work)
    before = _tree(work)
    capsys.readouterr()
    try:
        status = COMMANDS[case.command](argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == case.status, (status, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    assert case.culprit in err, err
    assert _tree(work) == before, sorted(map(str, _tree(work) - before))


def test_the_table_is_large_and_names_are_unique():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


def test_an_internal_error_is_status_3_and_one_line(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("an unexpected failure")

    monkeypatch.setattr(audit, "run_audit", broken)
    assert audit.main(_audit()(tmp_path)) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error: RuntimeError")
    assert not (tmp_path / "out" / ZOO.stem).exists()


def test_a_result_that_does_not_read_back_is_an_internal_error(monkeypatch, tmp_path, capsys):
    """The audit's own document refused by the reader is a bug here, not bad input."""

    def refuse(result, source):
        raise DocumentError(f"{source}: clean_correct should be 20 bits, got 19")

    monkeypatch.setattr(pipeline.AuditResult, "checked", refuse)
    assert audit.main(_audit()(tmp_path)) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("internal error: RuntimeError")
    assert "does not read back" in err


def test_verbose_adds_the_traceback(capsys, tmp_path):
    assert audit.main(_audit("--num-samples", "0", "--verbose")(tmp_path)) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("error: --num-samples")


def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    """A real SIGINT during an audit: one line, status 130, no result file."""
    process = subprocess.Popen(
        [sys.executable, "-m", "analysis.audit", str(ZOO), "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(audit.__file__).resolve().parents[1],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A test run started in the background inherits SIGINT ignored, and so would the
        # audit: give it the default disposition, as a terminal does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    started = time.time()
    # Wait for the attacks' progress bar: the audit is working. The bar redraws with carriage
    # returns and ends its line only when the stage is over, so read characters, not lines.
    line = ""
    while "attacks" not in line:
        char = process.stderr.read(1)
        assert char, f"the audit printed no progress: {line!r}"
        line += char
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert time.time() - started < 120
    assert process.returncode == EXIT_INTERRUPTED, (line, rest)
    # A message may follow the bar on its line: the bar's redraws end with a carriage return.
    shown = rest.replace("\r", "\n").splitlines()
    lines = [x for x in shown if x.startswith(("interrupted", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), (line, rest)
    assert not (tmp_path / "out" / ZOO.stem / "audit.json").exists()


def test_an_epsilon_covering_the_box_runs_with_a_warning(tmp_path, capsys):
    argv = _audit("--epsilons", "1e9", "--norms", "linf", "--attacks", "fgsm")(tmp_path)
    assert audit.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning: linf epsilon 1e+09 covers the whole input box" in err
    assert (tmp_path / "out" / ZOO.stem / "audit.json").is_file()


def test_a_swallowed_interrupt_still_stops_the_command(tmp_path):
    """A KeyboardInterrupt that a library or a finaliser swallows still ends the command with
    status 130, and the result it was about to write is not written."""
    target = tmp_path / "audit.json"
    # As in a terminal, whatever the test run inherited (a background job ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here
        except KeyboardInterrupt:
            pass  # swallowed, as some libraries do
        atomic_write_text(target, "{}")
        return 0

    try:
        assert run_command(body, verbose=False) == EXIT_INTERRUPTED
        assert not target.exists() and not list(tmp_path.iterdir())
        # The handler is the previous one again afterwards.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------- streams, devices, full disks


def _fifo(tmp: Path, name: str) -> str:
    os.mkfifo(tmp / name)
    return str(tmp / name)


STREAMS = {
    "audit --suite FIFO": lambda t: ["analysis.audit", *_audit("--suite", _fifo(t, "s.toml"))(t)],
    "audit --suite /dev/zero": lambda t: ["analysis.audit", *_audit("--suite", "/dev/zero")(t)],
    "audit --baseline FIFO": lambda t: [
        "analysis.audit",
        *_audit("--baseline", _fifo(t, "b.json"))(t),
    ],
    "audit CHECKPOINT FIFO": lambda t: [
        "analysis.audit",
        *_audit("--arch", "mlp", "--dataset", "digits", checkpoint=_fifo(t, "m.pt"))(t),
    ],
    "audit --data FIFO": lambda t: ["analysis.audit", *_audit("--data", _fifo(t, "d.npz"))(t)],
    "gate RESULT FIFO": lambda t: ["analysis.gate", _fifo(t, "r.json"), "b.json"],
    "reports.html FIFO": lambda t: ["reports.html", _fifo(t, "audit.json")],
    "reports.compare FIFO": lambda t: ["reports.compare", _fifo(t, "a.json"), "b.json"],
    "inspect FIFO": lambda t: ["checkpoints.inspect", _fifo(t, "m.pt")],
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_or_device_is_refused_without_reading_it(name, tmp_path):
    """A FIFO would block every reader until a writer came (and /dev/zero never ends): each
    command refuses it from its file type, at once, in one line, with status 2."""
    argv = STREAMS[name](tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(audit.__file__).resolve().parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == EXIT_INPUT, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "not a regular file but a" in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_error_while_writing_is_one_line_naming_the_path_and_flag(result_document, tmp_path):
    """A real write error after every check passed (the file-size limit of the process, which
    the kernel reports as "File too large" without a path): one line, status 2, nothing left."""
    result = _write(tmp_path / "result.json", json.dumps(result_document))
    baseline = _write(tmp_path / "baseline.json", json.dumps(result_document))
    junit = tmp_path / "gate.xml"

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    done = subprocess.run(
        [sys.executable, "-m", "analysis.gate", str(result), str(baseline), "--junit", str(junit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(audit.__file__).resolve().parents[1],
        preexec_fn=limit_file_size,
    )
    assert done.returncode == EXIT_INPUT, done.stderr
    assert done.stderr == (
        f"error: --junit {junit} cannot be written: File too large; the file is larger than "
        "this process may write (ulimit -f): raise that limit, or choose another path\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "result.json"]


@pytest.mark.parametrize("update", [False, True], ids=["junit", "update-baseline"])
def test_a_full_disk_is_one_line_naming_the_path_and_flag(
    result_document, tmp_path, capsys, monkeypatch, update
):
    """No space left: the error names no path; the line names the path, the flag and the fix,
    and no temporary file is left behind."""
    result = _write(tmp_path / "result.json", json.dumps(result_document))
    if update:
        target, flag = tmp_path / "new.json", "BASELINE (with --update-baseline)"
        argv = [str(result), str(target), "--update-baseline"]
    else:
        baseline = _write(tmp_path / "baseline.json", json.dumps(result_document))
        target, flag = tmp_path / "gate.xml", "--junit"
        argv = [str(result), str(baseline), "--junit", str(target)]
    before = _tree(tmp_path)

    def full(handle: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert gate.main(argv) == EXIT_INPUT
    assert capsys.readouterr().err == (
        f"error: {flag} {target} cannot be written: No space left on device; free space on "
        "that disk, or choose a folder on another disk\n"
    )
    assert _tree(tmp_path) == before


def test_a_costly_suite_runs_with_its_estimate(tmp_path, capsys, monkeypatch):
    """Values within their bounds that together ask for far more work than the standard
    preset: the audit says how much before it starts."""

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(audit, "run_audit", stop)
    suite = _write(
        tmp_path / "costly.toml", '[[attacks]]\nkind = "square"\nnum_queries = 1000000\n'
    )
    assert audit.main(_audit("--suite", str(suite))(tmp_path)) == EXIT_INTERRUPTED
    warning = capsys.readouterr().err.splitlines()[0]
    # The suite: Square alone, 10^6 queries at each of two norms' one epsilon, no sweep (no
    # PGD to sweep). The standard preset, per norm: PGD-CE, PGD-T and PGD-CW of 100 steps,
    # FGSM 1, noise 100, Square 5,000, APGD-T and FAB-T 9 targets x 100 steps each: 7,201;
    # its sweep: 8 points and the unbounded one x 100 steps, on every sample and again on the
    # independent subsample (all 20 here): 1,800; two norms: 18,002.
    assert warning == (
        f"warning: {ZOO}: the suite may take up to 2,000,000 passes of the model per sample (a "
        "forward pass, and a backward one for a gradient attack), 40,000,000 for the 20 "
        "samples (most in square: 2,000,000 per sample): 111 times the standard preset's "
        "18,002, so expect it to run up to 111 times as long"
    )


def test_a_result_document_nests_as_deep_as_its_limit_says(result_document):
    """The result limit's reason: a document nests 9 deep (its limit allows 32)."""
    from core.boundary import INPUT_LIMITS

    def depth(value: object) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        return 0

    assert depth(result_document) == 9 < INPUT_LIMITS["result"].max_depth  # type: ignore[operator]
