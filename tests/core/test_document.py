"""The typed reader of ``audit.json``, on documents written by the audit's command line."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from document_decoders import decode_exact, decode_image
from document_helpers import CHECKPOINT, NUM_SAMPLES, ROOT, _load, _same

from core.document import AuditResult, DocumentError, read_result


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


@pytest.mark.data
def test_an_attacks_status_at_an_epsilon(documents: dict[str, Path]) -> None:
    """Per epsilon where the document says (schema 1.1), else the attack's one status (1.0:
    it failed somewhere, which holds at every epsilon), else ``ok`` (a baseline)."""
    record = read_result(documents["no_flatness"]).robustness.norms[0].attacks[0]
    per_epsilon = dataclasses.replace(record, status="failed", statuses=("ok", "failed"))
    assert [per_epsilon.status_at(k) for k in (0, 1)] == ["ok", "failed"]
    one = dataclasses.replace(record, status="not-applicable", statuses=None)
    assert [one.status_at(k) for k in (0, 1)] == ["not-applicable"] * 2
    assert dataclasses.replace(record, status=None, statuses=None).status_at(0) == "ok"
