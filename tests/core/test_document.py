"""The typed reader of ``audit.json``, on documents written by the audit's command line."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from analysis.document import decode_exact, decode_image
from core.document import AuditResult, DocumentError, read_result

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "zoo" / "digits-mlp-dropout.pt"
NUM_SAMPLES = 60


def _audit(out: Path, *flags: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "analysis.audit",
        str(CHECKPOINT),
        "--preset",
        "quick",
        "--num-samples",
        str(NUM_SAMPLES),
        "--out",
        str(out),
        "--quiet",
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="session")
def documents(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """Two real audits, run side by side: with flatness and two epsilons per norm, and without
    flatness."""
    root = tmp_path_factory.mktemp("reader")
    runs = {
        "flatness": _audit(
            root / "flatness",
            "--epsilons",
            "linf=0.05,0.1;l2=0.3,0.5",
            "--flatness-samples",
            "40",
        ),
        "no_flatness": _audit(root / "no_flatness", "--no-flatness"),
    }
    paths = {}
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        paths[name] = root / name / CHECKPOINT.stem / "audit.json"
    return paths


@pytest.fixture(scope="session")
def baseline(documents: dict[str, Path]) -> Path:
    target = documents["flatness"].parent / "baseline.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.gate",
            str(documents["flatness"]),
            str(target),
            "--update-baseline",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return target


def _same(raw: Any, typed: Any, where: str) -> None:
    """Every leaf of the JSON ``raw`` equals the typed value reached by the same path."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            if dataclasses.is_dataclass(typed):
                names = {f.name for f in dataclasses.fields(typed)} - {"extra"}
                child = getattr(typed, key) if key in names else typed.extra[key]
            else:
                assert isinstance(typed, Mapping), where
                child = typed[key]
            _same(value, child, f"{where}.{key}")
        if isinstance(typed, Mapping):
            assert len(typed) == len(raw), where
    elif isinstance(raw, list):
        assert isinstance(typed, tuple), where
        assert len(typed) == len(raw), where
        for i, (value, child) in enumerate(zip(raw, typed, strict=True)):
            _same(value, child, f"{where}[{i}]")
    elif isinstance(raw, str) and isinstance(typed, tuple):
        assert re.fullmatch("[01]*", raw), where
        assert all(isinstance(b, bool) for b in typed), where
        assert "".join("1" if b else "0" for b in typed) == raw, where
    elif isinstance(raw, str) and isinstance(typed, float):
        expected = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[raw]
        assert (math.isnan(typed) and math.isnan(expected)) or typed == expected, where
    elif isinstance(raw, bool):
        assert typed is raw, where
    elif isinstance(raw, int | float):
        assert typed == raw and not isinstance(typed, bool), where
        if isinstance(raw, float):
            assert isinstance(typed, float), where
    else:
        assert typed == raw, where
        assert type(typed) is type(raw), where


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.data
@pytest.mark.parametrize("name", ["flatness", "no_flatness"])
def test_every_field_reachable_and_equal(documents: dict[str, Path], name: str) -> None:
    raw = _load(documents[name])
    result = read_result(documents[name])
    _same(raw, result, "")
    # everything the audit writes is known to the reader: nothing lands in `extra`
    unknown: list[str] = []

    def collect(typed: Any, where: str) -> None:
        if dataclasses.is_dataclass(typed):
            unknown.extend(f"{where}.{k}" for k in typed.extra)
            for item in dataclasses.fields(typed):
                collect(getattr(typed, item.name), f"{where}.{item.name}")
        elif isinstance(typed, tuple):
            for i, value in enumerate(typed):
                collect(value, f"{where}[{i}]")

    collect(result, "")
    assert unknown == []
    assert result == AuditResult.from_dict(raw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.verdict = "x"  # type: ignore[misc]


@pytest.mark.data
def test_flatness_and_several_epsilons(documents: dict[str, Path]) -> None:
    full = read_result(documents["flatness"])
    bare = read_result(documents["no_flatness"])
    assert bare.flatness is None and not bare.baseline
    assert full.flatness is not None
    for name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace", "landscape_2d"):
        assert getattr(full.flatness, name) is not None, name
    assert full.flatness.landscape_2d is not None
    points = len(full.flatness.landscape_2d.coordinates)
    assert len(full.flatness.landscape_2d.losses) == points
    assert all(len(row) == points for row in full.flatness.landscape_2d.losses)
    assert [n.norm for n in full.robustness.norms] == ["linf", "l2"]
    assert full.norm("linf").epsilons == (0.05, 0.1)
    assert full.norm("l2").epsilons == (0.3, 0.5)
    for section in full.robustness.norms:
        for k, accuracy in enumerate(section.reliable_robust_accuracy):
            assert len(section.robust[k]) == NUM_SAMPLES
            assert accuracy.count == sum(section.robust[k])
            assert accuracy.total == NUM_SAMPLES
            low, high = accuracy.wilson_95
            assert accuracy.value is not None and low <= accuracy.value <= high
        for attack in section.attacks:
            assert attack.broken is not None
            for k in range(len(section.epsilons)):
                broken = [
                    s and a for s, a in zip(attack.success[k], attack.attacked[k], strict=True)
                ]
                assert attack.broken[k] == sum(broken)
    assert full.clean_accuracy.count == sum(full.clean_correct)
    with pytest.raises(KeyError, match="present: linf, l2"):
        full.norm("l1")


@pytest.mark.data
def test_examples_decode_like_the_writer(documents: dict[str, Path]) -> None:
    result = read_result(documents["flatness"])
    examples = [e for section in result.robustness.norms for e in section.examples or ()]
    assert examples
    for example in examples[:8]:
        assert example.dtype is not None and example.adversarial_exact is not None
        exact = decode_exact(example.adversarial_exact, example.shape, example.dtype)
        assert example.adversarial_values() == tuple(exact.flatten().tolist())
        assert example.original_pixels() == tuple(decode_image(example.original, example.shape))
        pixels = [round(min(max(v, 0.0), 1.0) * 255) for v in example.original_values() or ()]
        assert all(abs(p - q) <= 1 for p, q in zip(pixels, example.original_pixels(), strict=True))


@pytest.mark.data
def test_baseline_reads_with_absent_sections_none(
    documents: dict[str, Path], baseline: Path
) -> None:
    raw = _load(baseline)
    assert raw["baseline"] is True
    result = read_result(baseline)
    _same(raw, result, "")
    assert result.baseline is True
    assert result.checkpoint is None and result.flatness is None and result.probes is None
    assert result.activations is None
    assert result.provenance.command_line is None and result.evaluation.labels is None
    attack = result.robustness.norms[0].attacks[0]
    assert attack.mean_loss_trace is None and attack.success_step is None
    assert result.findings[0].title is None
    full = read_result(documents["flatness"])
    assert [n.robust for n in result.robustness.norms] == [n.robust for n in full.robustness.norms]
    assert result.verdict == full.verdict


@pytest.mark.data
@pytest.mark.parametrize("version", ["2.0", "0.9", None, 11])
def test_unknown_version_refused(documents: dict[str, Path], tmp_path: Path, version) -> None:
    raw = _load(documents["no_flatness"])
    raw["schema_version"] = version
    path = tmp_path / "audit.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DocumentError) as caught:
        read_result(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and repr(version) in message and "1.0, 1.1" in message
    assert "re-run the audit" in message


@pytest.mark.data
def test_schema_1_0_lacks_the_later_fields(documents: dict[str, Path]) -> None:
    raw = _load(documents["flatness"])
    for section in raw["robustness"]["norms"]:
        del section["failures"]
        for attack in section["attacks"]:
            for key in ("success_step", "statuses", "messages"):
                del attack[key]
        for example in section["examples"]:
            for key in ("success_step", "dtype", "original_exact", "adversarial_exact"):
                del example[key]
    with pytest.raises(DocumentError, match=r"robustness\.norms\[0\]\.attacks\[0\]\.statuses"):
        AuditResult.from_dict(copy.deepcopy(raw))
    raw["schema_version"] = "1.0"
    result = AuditResult.from_dict(raw)
    assert result.norm("l2").failures is None
    assert result.norm("l2").attacks[0].success_step is None
    example = (result.norm("linf").examples or ())[0]
    assert example.original_values() is None
    assert len(example.original_pixels()) == 64


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    if value is _DELETE:
        del document[path[-1]]
    else:
        document[path[-1]] = value


_DELETE = object()


@pytest.mark.data
@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("robustness", "norms", 1, "attacks", 2, "success"), _DELETE, "missing"),
        (("clean_accuracy", "count"), "58", "an integer"),
        (("clean_accuracy", "count"), True, "an integer"),
        (("clean_accuracy", "wilson_95"), [0.1, 0.2, 0.3], "2 items"),
        (("clean_correct",), "0120", "bit string"),
        (("clean_correct",), "0101", "60 bits"),
        (("findings", 3, "status"), "bad", "one of"),
        (("robustness", "norms", 0, "robust"), ["01"], "rows"),
        (("robustness", "norms", 0, "attacks", 0, "mean_loss_trace", 0, 1), "1.0", "a number"),
        (("flatness", "hessian_trace", "value"), None, "a number"),
        (("flatness", "landscape_2d", "losses", 2), {"a": 1}, "a number"),
        (("provenance",), [], "an object"),
        (("verdict",), 3, "a string"),
        (("evaluation", "num_samples"), 1.5, "an integer"),
        (("evaluation", "indices"), list(range(59)), "60 indices"),
        (("evaluation", "indices", 0), -1, "non-negative"),
    ],
)
def test_malformed_field_named(
    documents: dict[str, Path], path: tuple[Any, ...], value: Any, where: str
) -> None:
    raw = _load(documents["flatness"])
    _set(raw, path, value)
    with pytest.raises(DocumentError) as caught:
        AuditResult.from_dict(raw, "doc.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("doc.json")
    dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
    whole = where in ("rows", "60 bits", "non-negative")  # named by the list, not the item
    prefix = dotted.rsplit("[", 1)[0] if whole else dotted
    assert prefix in message and where in message, message


def _paths(raw: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every key of every object, descending into the first item of each list."""
    out: list[tuple[Any, ...]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            out.append(path + (key,))
            out.extend(_paths(value, path + (key,)))
    elif isinstance(raw, list) and raw:
        out.extend(_paths(raw[0], path + (0,)))
    return out


_OPEN = ("config", "params", "evidence", "versions", "training", "arch_kwargs")


@pytest.mark.data
@pytest.mark.parametrize("name", ["flatness", "baseline"])
def test_any_field_deleted_or_retyped_gives_document_error(
    documents: dict[str, Path], baseline: Path, name: str
) -> None:
    source = baseline if name == "baseline" else documents[name]
    original = _load(source)
    for path in _paths(original):
        if any(key in _OPEN for key in path[:-1]):
            continue
        for value in (_DELETE, {"unexpected": [1]}):
            raw = copy.deepcopy(original)
            _set(raw, path, value)
            try:
                result = AuditResult.from_dict(raw, "doc.json")
            except DocumentError as error:
                assert "\n" not in str(error)
                named = str(error).split(" should be ")[0].split(" is missing")[0]
                assert named.startswith("doc.json"), str(error)
                continue
            # accepted: only an optional field may go missing, only an open object may change
            assert value is _DELETE or path[-1] in _OPEN, path
            if value is _DELETE and path[-1] != "baseline":
                typed: Any = result
                for key in path[:-1]:
                    typed = typed[key] if isinstance(key, int) else getattr(typed, key)
                assert getattr(typed, str(path[-1])) is None, path


@pytest.mark.data
def test_non_finite_strings_decode_to_floats(documents: dict[str, Path]) -> None:
    raw = _load(documents["flatness"])
    raw["flatness"]["hessian_trace"]["value"] = "Infinity"
    raw["flatness"]["hessian_trace"]["stderr"] = "NaN"
    raw["robustness"]["norms"][0]["examples"][0]["margin"] = "-Infinity"
    raw["robustness"]["norms"][1]["attacks"][0]["mean_loss_trace"][0][0] = "NaN"
    raw["flatness"]["landscape_2d"]["losses"][1][2] = "NaN"
    raw["robustness"]["norms"][1]["reliable_robust_accuracy"][0]["value"] = "NaN"
    result = AuditResult.from_dict(raw)
    _same(raw, result, "")
    assert result.flatness is not None and result.flatness.hessian_trace is not None
    assert result.flatness.hessian_trace.value == math.inf
    assert math.isnan(result.flatness.hessian_trace.stderr or 0.0)
    assert (result.norm("linf").examples or ())[0].margin == -math.inf
    trace = result.norm("l2").attacks[0].mean_loss_trace
    assert trace is not None and math.isnan(trace[0][0] or 0.0)
    assert math.isnan(result.flatness.landscape_2d.losses[1][2])  # type: ignore[union-attr]
    assert math.isnan(result.norm("l2").reliable_robust_accuracy[0].value or 0.0)
    raw["clean_accuracy"]["count"] = "NaN"
    with pytest.raises(DocumentError, match=r"clean_accuracy\.count should be an integer"):
        AuditResult.from_dict(raw)


def test_unreadable_files_give_document_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="does not exist"):
        read_result(tmp_path / "absent.json")
    with pytest.raises(DocumentError, match="is a folder"):
        read_result(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DocumentError, match="not valid JSON"):
        read_result(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DocumentError, match="expected a JSON object, got list"):
        read_result(tmp_path / "list.json")


@pytest.mark.data
def test_reader_runs_without_torch_or_numpy(documents: dict[str, Path]) -> None:
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['numpy'] = None\n"
        "from core.document import read_result\n"
        f"result = read_result({str(documents['flatness'])!r})\n"
        "print(result.clean_accuracy.count, sum(result.clean_correct), result.verdict)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    count, correct, *_ = done.stdout.split()
    expected = _load(documents["flatness"])["clean_accuracy"]["count"]
    assert int(count) == int(correct) == expected


def test_a_model_without_dropout_layers_and_its_nonfinite_fields(tmp_path: Path) -> None:
    """A zoo model without a dropout-family layer (its layer has no positions) reads, and the
    1.2 fields on non-finite outputs are typed, not left in ``extra``."""
    from commands.audit import main

    checkpoint = CHECKPOINT.parent / "digits-mlp-none.pt"
    argv = [str(checkpoint), "--preset", "quick", "--num-samples", "30", "--no-flatness"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    result = read_result(tmp_path / checkpoint.stem / "audit.json")
    assert result.checkpoint is not None and result.checkpoint.layer.positions is None
    assert result.clean_nonfinite == (False,) * 30
    for norm in result.robustness.norms:
        assert norm.robust_nonfinite == (0,) * len(norm.epsilons)
        assert all(a.nonfinite == (0,) * len(norm.epsilons) for a in norm.attacks)


@pytest.mark.data
def test_the_chain_and_autoattacks_attacks_not_run(
    documents: dict[str, Path], baseline: Path
) -> None:
    """What the reliable figure is the worst case over, and which attacks of AutoAttack's
    standard version have no counterpart that ran, with why (written from the document's
    kinds, parameters and statuses)."""
    from core.document import AUTOATTACK_STANDARD, autoattack_components

    assert AUTOATTACK_STANDARD == ("APGD-CE", "APGD-T", "FAB-T", "Square")
    assert autoattack_components("pgd", {"loss": "ce"}) == ()
    assert autoattack_components("apgd", {"loss": "dlr"}) == ()
    assert autoattack_components("fab", {"targeted": False}) == ()
    assert autoattack_components("autoattack", {"version": "rand"}) == ("APGD-CE",)

    raw = _load(documents["no_flatness"])
    section = raw["robustness"]["norms"][0]
    quick = AuditResult.from_dict(copy.deepcopy(raw)).robustness.norms[0]
    labels = tuple(a["label"] for a in section["attacks"])
    assert quick.chain(0) == labels
    missing = ("APGD-CE", "APGD-T", "FAB-T")
    assert quick.autoattack_not_run(0) == tuple(f"{n} (not in the suite)" for n in missing)
    assert quick.eot_passes() == ()

    square = next(a for a in section["attacks"] if a["kind"] == "square")
    added = []
    for kind, label, params, status in (
        ("apgd", "apgd-t", {"targeted": True, "loss": "dlr", "eot_samples": 8}, "ok"),
        ("fab", "fab-t", {"targeted": True}, "failed"),
        ("apgd", "apgd-ce", {"targeted": False, "loss": "ce", "eot_samples": 20}, "ok"),
    ):
        record = copy.deepcopy(square)
        record.update(kind=kind, label=label, params=params, status=status, statuses=[status])
        added.append(record)
    section["attacks"] += added
    square["status"], square["statuses"] = "not-applicable", ["not-applicable"]
    norm = AuditResult.from_dict(raw).robustness.norms[0]
    chain = tuple(label for label in labels if label != "square") + ("apgd-t", "apgd-ce")
    assert norm.chain(0) == chain
    assert norm.autoattack_not_run(0) == ("FAB-T (failed)", "Square (not applicable)")
    assert norm.eot_passes() == ((8, ("apgd-t",)), (20, ("apgd-ce",)))
    # AutoAttack's whole standard version covers all four.
    ensemble = copy.deepcopy(square)
    ensemble.update(kind="autoattack", label="autoattack", params={"version": "standard"})
    ensemble.update(status="ok", statuses=["ok"])
    section["attacks"].append(ensemble)
    assert AuditResult.from_dict(raw).robustness.norms[0].autoattack_not_run(0) == ()
    # A baseline does not record parameters: nothing can be said.
    assert read_result(baseline).robustness.norms[0].autoattack_not_run(0) == ()


def test_the_committed_schema_is_the_one_the_records_declare() -> None:
    from core.schema import SCHEMA_PATH, text

    assert SCHEMA_PATH.read_text() == text(), (
        "core/audit.schema.json is stale: python -m core.schema > core/audit.schema.json"
    )


def test_the_schema_requires_what_the_reader_requires_of_a_full_document() -> None:
    import jsonschema

    from core.schema import json_schema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    proportion = {"value": 0.5, "count": 1, "total": 2, "wilson_95": [0.1, 0.9]}
    validator = jsonschema.Draft202012Validator(
        {"$defs": schema["$defs"], "$ref": "#/$defs/proportion"}
    )
    assert validator.is_valid(proportion)
    assert validator.is_valid(dict(proportion, value="NaN"))  # a non-finite number's string
    assert not validator.is_valid(dict(proportion, value="nan"))
    assert not validator.is_valid({k: v for k, v in proportion.items() if k != "count"})
    assert validator.is_valid(dict(proportion, unknown_key=1))  # kept by the reader in extra


def _records(value: Any) -> list[Any]:
    """Every record inside ``value`` (a record, a tuple of them), ``value`` first."""
    if isinstance(value, tuple):
        return [r for v in value for r in _records(v)]
    if not dataclasses.is_dataclass(value):
        return []
    found = [value]
    for item in dataclasses.fields(value):
        found += _records(getattr(value, item.name))
    return found


def _round_trips(raw: dict[str, Any], source: str) -> list[Any]:
    """The records of the document ``raw``: it reads, and writes back, into itself."""
    result = AuditResult.from_dict(raw, source)
    assert result.to_dict() == raw
    again = AuditResult.from_dict(json.loads(json.dumps(result.to_dict())), source)
    assert again == result
    return _records(result)


def _declared_records() -> set[type]:
    from core import attackrecords, document, flatrecords

    return {
        value
        for module in (document, attackrecords, flatrecords)
        for value in vars(module).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and value.__module__ == module.__name__
        and not value.__name__.startswith("_")
    }


@pytest.mark.data
def test_every_record_encodes_to_what_it_was_read_from(
    documents: dict[str, Path], baseline: Path
) -> None:
    from core.docfields import _build, _Context
    from core.document import encode

    found: list[Any] = []
    for path in (
        *documents.values(),
        baseline,
        ROOT / ".ci" / "baselines" / "digits-mlp-dropout.json",
    ):
        found += _round_trips(_load(path), str(path))
    # What these audits do not hold: a model of the user's own, failed runs.
    raw = _load(documents["no_flatness"])
    raw["provenance"]["model_source"] = {
        "reference": "net.py:Net",
        "kind": "file",
        "path": "/models/net.py",
        "module": None,
        "name": "Net",
        "kwargs": {"width": 2, "sizes": [1, "NaN"]},
        "sha256": None,
    }
    raw["robustness"]["norms"][0]["failures"] = [
        {"stage": "sweep", "label": "pgd", "epsilon": None, "status": "failed", "message": "x"},
        {
            "stage": "attack",
            "label": "fab",
            "epsilon": 0.1,
            "status": "not-applicable",
            "message": "y",
        },
    ]
    found += _round_trips(raw, "<failures>")
    # Byte for byte as the audit wrote it (a baseline is written by the gate, in its order).
    for path in documents.values():
        text = json.dumps(read_result(path).to_dict(), indent=1, allow_nan=False) + "\n"
        assert text == path.read_text()
    # Each record on its own: decode(encode(record)) == record (the whole result above).
    context = _Context("<record>", "1.8", baseline=False)
    for record in found:
        if not isinstance(record, AuditResult):
            assert _build(type(record), encode(record), "", context) == record
    assert {type(r) for r in found} == _declared_records()


@pytest.mark.data
def test_a_schema_1_0_document_encodes_without_the_later_fields(
    documents: dict[str, Path],
) -> None:
    raw = _load(documents["flatness"])
    for section in raw["robustness"]["norms"]:
        del section["failures"]
        for attack in section["attacks"]:
            for key in ("success_step", "statuses", "messages"):
                del attack[key]
        for example in section["examples"]:
            for key in ("success_step", "dtype", "original_exact", "adversarial_exact"):
                del example[key]
    raw["schema_version"] = "1.0"
    _round_trips(raw, "<1.0>")


def test_encoding_keeps_unknown_keys_and_non_finite_numbers() -> None:
    from core.docfields import _build, _Context
    from core.document import Proportion, encode

    raw = {"value": "NaN", "count": 0, "total": 0, "wilson_95": [0.0, "Infinity"], "new": [1]}
    record = _build(Proportion, raw, "", _Context("<p>", "1.8", baseline=False))
    assert math.isnan(record.value) and record.extra == {"new": (1,)}
    assert encode(record) == raw
    assert json.dumps(encode(record), allow_nan=False)
