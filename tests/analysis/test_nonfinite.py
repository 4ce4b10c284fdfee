"""A model that returns NaN or Inf is evidence: the audit completes, reports and writes it.

The oracle is the construction. Each checkpoint below is the digits MLP of the zoo with
weights edited so that it returns non-finite logits on a set of samples known in advance:
every sample (a NaN weight, an infinite bias of one class) or exactly the images whose pixel
``PIXEL`` is at least 13/16 (a hidden unit whose pre-activation overflows to +inf there and
is multiplied by zero weights, giving NaN, and stays finite below). Each audit runs through
the command line on a checkpoint of our own format written to a temporary folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
import torch

from analysis import gate
from analysis.config import build_suite
from checkpoints import load_checkpoint
from checkpoints.datasets import load_dataset
from checkpoints.format import save_checkpoint
from checkpoints.train import ZOO_DIR
from commands.audit import main
from core.document import DocumentError, read_document, read_result, write_json
from core.schema import SCHEMA_PATH

SCHEMA = json.loads(SCHEMA_PATH.read_text())
NUM_SAMPLES = 60
PIXEL = 20  # row 2, column 4 of the 8x8 digits: bright in some digits, dark in others
FAST = ["--preset", "quick", "--no-flatness", "--quiet", "--num-samples", str(NUM_SAMPLES)]


def _refuse(literal: str) -> float:
    raise AssertionError(f"the document holds the non-standard JSON literal {literal}")


def _edited_checkpoint(folder: Path, how: str) -> Path:
    """The zoo's digits MLP with non-finite weights, saved in our format."""
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt")
    network = loaded.model.net  # the bare network inside the Normalized wrapper
    first, second, last = network[1], network[4], network[10]
    with torch.no_grad():
        if how == "nan-weight":
            first.weight[0, 0] = math.nan  # NaN * 0 is NaN: every hidden unit 0 is NaN
        elif how in ("+inf-bias", "-inf-bias"):
            last.bias[3] = math.inf if how == "+inf-bias" else -math.inf
        else:  # "overflow": hidden unit 0 is 3e38 * x[PIXEL] + 1e38, +inf when x >= 13/16
            first.weight[0] = 0.0
            first.weight[0, PIXEL] = 3e38
            first.bias[0] = 1e38
            second.weight[:, 0] = 0.0  # inf * 0 = NaN; a finite value * 0 = 0
    return save_checkpoint(folder / f"{how}.pt", network, loaded.spec)


def _evaluation_pixels() -> torch.Tensor:
    """``[N]`` the value of ``PIXEL`` in each evaluated sample (the audit's own selection)."""
    from analysis.pipeline import select_samples

    test = load_dataset("digits", "test")
    indices = select_samples(len(test), NUM_SAMPLES, seed=0)
    return test.x[indices].flatten(1)[:, PIXEL]


def _expected(how: str) -> torch.Tensor:
    """``[N]`` bool: the samples whose clean logits are non-finite, by construction."""
    pixels = _evaluation_pixels()
    if how == "overflow":
        return pixels >= 13 / 16
    return torch.ones_like(pixels, dtype=torch.bool)


@pytest.mark.parametrize("how", ["nan-weight", "overflow", "+inf-bias", "-inf-bias"])
def test_a_non_finite_model_is_audited_and_reported(tmp_path, capsys, how) -> None:
    path = _edited_checkpoint(tmp_path, how)
    expected = _expected(how)
    if how == "overflow":
        assert 5 <= int(expected.sum()) <= NUM_SAMPLES - 20  # a real subset of the samples
    out = tmp_path / "out"

    code = main([str(path), *FAST, "--out", str(out)])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert [p.name for p in out.iterdir()] == [how]
    # The report renders from a document full of non-finite values too.
    assert sorted(p.name for p in (out / how).iterdir()) == ["audit.json", "report.html"]
    text = (out / how / "audit.json").read_text()
    document = json.loads(text, parse_constant=_refuse)
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)

    count = int(expected.sum())
    assert [c == "1" for c in document["clean_nonfinite"]] == expected.tolist()
    (finding,) = [f for f in document["findings"] if f["code"] == "non-finite-values"]
    assert finding["status"] == "fail" and finding["kind"] == "reliability"
    assert finding["evidence"]["clean_logits"] == count
    assert finding["evidence"]["clean_samples"] == count
    explanation = finding["explanation"]
    assert f"{count} of {NUM_SAMPLES} samples have NaN or Inf clean logits" in explanation
    assert document["verdict"] == "evaluation unreliable"

    # A sample without a prediction is not clean-correct; the others are judged as usual.
    from analysis.pipeline import select_samples

    test = load_dataset("digits", "test")
    indices = select_samples(len(test), NUM_SAMPLES, seed=0)
    with torch.no_grad():
        logits = load_checkpoint(path).model(test.x[indices])
    finite = torch.isfinite(logits).all(1)
    assert torch.equal(~finite, expected)
    correct = finite & (logits.argmax(1) == test.y[indices])
    assert document["clean_accuracy"]["count"] == int(correct.sum())

    labels = [spec.label for spec in build_suite("quick", "digits").attacks]
    for norm in document["robustness"]["norms"]:
        assert [a["label"] for a in norm["attacks"]] == labels
        for attack in norm["attacks"]:
            assert attack["status"] in ("ok", "failed", "not-applicable")
            assert "Traceback" not in (attack["message"] or "")
            for k in range(len(norm["epsilons"])):
                success, attacked = attack["success"][k], attack["attacked"][k]
                marked = attack["nonfinite_samples"][k]
                # Nothing is broken on the strength of a NaN, and no NaN sample is attacked.
                rows = zip(success, attacked, marked, strict=True)
                assert not any(s == a == m == "1" for s, a, m in rows)
                rows = zip(attacked, expected.tolist(), strict=True)
                assert not any(a == "1" and e for a, e in rows)
        robust = [[c == "1" for c in row] for row in norm["robust"]]
        pairs = [(r, e) for row in robust for r, e in zip(row, expected.tolist(), strict=True)]
        assert not any(r and e for r, e in pairs)

    # The readers decode the document (and a baseline made from it) without loss.
    assert read_document(out / how / "audit.json")["verdict"] == "evaluation unreliable"
    baseline = tmp_path / "baseline.json"
    write_json(baseline, read_result(out / how / "audit.json").to_baseline())
    read = gate.read_baseline(baseline)
    assert read.baseline
    assert read.clean_correct == tuple(c == "1" for c in document["clean_correct"])


def test_nan_for_some_inputs_only_under_attack_is_counted_by_attack(tmp_path, capsys) -> None:
    """Overflow above the largest clean value of a pixel (half a grey level above it): clean
    logits are finite, and an attack's example is non-finite exactly where it pushes that
    pixel past the threshold. Such samples stay robust unless broken with finite logits."""
    from analysis.pipeline import select_samples

    test = load_dataset("digits", "test")
    pixels = test.x[select_samples(len(test), NUM_SAMPLES, seed=0)].flatten(1)
    tops = pixels.amax(0)
    candidates = [p for p in range(pixels.shape[1]) if 0.5 <= float(tops[p]) <= 14 / 16]
    pixel = max(candidates, key=lambda p: int((pixels[:, p] == tops[p]).sum()))
    threshold = float(tops[pixel]) + 1 / 32  # above every clean value, within an epsilon
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-none.pt")
    network = loaded.model.net
    with torch.no_grad():
        network[1].weight[0] = 0.0
        network[1].weight[0, pixel] = 3e38
        network[1].bias[0] = 3.4e38 - 3e38 * threshold  # +inf once x[pixel] > threshold
        network[4].weight[:, 0] = 0.0
    path = save_checkpoint(tmp_path / "late.pt", network, loaded.spec)
    out = tmp_path / "out"
    assert main([str(path), *FAST, "--out", str(out)]) == 0, capsys.readouterr().err
    document = json.loads((out / "late" / "audit.json").read_text(), parse_constant=_refuse)
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert set(document["clean_nonfinite"]) == {"0"}
    (finding,) = [f for f in document["findings"] if f["code"] == "non-finite-values"]
    evidence = finding["evidence"]
    assert evidence["clean_logits"] == evidence["clean_samples"] == 0
    marked = set()
    for norm in document["robustness"]["norms"]:
        for attack in norm["attacks"]:
            entry = evidence["attacks"].get(f"{attack['label']}/{norm['norm']}")
            assert (entry["samples"] if entry else [0] * len(norm["epsilons"])) == attack[
                "nonfinite"
            ]
            for k, row in enumerate(attack["nonfinite_samples"]):
                assert attack["nonfinite"][k] == row.count("1")
                marked |= {i for i, c in enumerate(row) if c == "1"}
                assert not any(
                    s == m == "1" for s, m in zip(attack["success"][k], row, strict=True)
                )
    assert marked, "no attack pushed the pixel past the threshold; the construction failed"
    # The sweeps (on every sample, up to the unbounded epsilon) can mark more samples.
    assert evidence["attack_samples"] >= len(marked)
    assert finding["status"] == "fail" and document["verdict"] == "evaluation unreliable"
    assert any(v["samples"] and any(v["samples"]) for v in evidence["attacks"].values())


def test_non_finite_numbers_round_trip_as_strings(tmp_path) -> None:
    path = tmp_path / "deep" / "doc.json"
    document = {
        "schema_version": "1.2",
        "values": [1.5, math.nan, math.inf, -math.inf, None, "text"],
        "nested": {"x": (math.nan,)},
    }
    write_json(path, document)
    text = path.read_text()
    parsed = json.loads(text, parse_constant=_refuse)
    assert parsed["values"] == [1.5, "NaN", "Infinity", "-Infinity", None, "text"]
    back = read_document(path)
    assert back["values"][0] == 1.5 and math.isnan(back["values"][1])
    assert back["values"][2:] == [math.inf, -math.inf, None, "text"]
    assert math.isnan(back["nested"]["x"][0])


def test_a_bare_nan_literal_is_refused(tmp_path) -> None:
    path = tmp_path / "doc.json"
    path.write_text('{"schema_version": "1.2", "value": NaN}')
    with pytest.raises(DocumentError, match="non-standard JSON literal NaN"):
        read_document(path)


def test_a_failed_write_leaves_no_file_and_no_folder(tmp_path) -> None:
    target = tmp_path / "out" / "model" / "audit.json"
    with pytest.raises(TypeError):
        write_json(target, {"value": object()})
    assert not (tmp_path / "out").exists()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    with pytest.raises(OSError):
        write_json(blocked / "model" / "audit.json", {"value": 1.0})
    assert blocked.read_text() == "a file where a folder should be"


def test_flatness_is_not_measured_on_non_finite_logits(tmp_path, capsys) -> None:
    path = _edited_checkpoint(tmp_path, "nan-weight")
    out = tmp_path / "out"
    flags = ["--preset", "quick", "--quiet", "--num-samples", "30", "--out", str(out)]
    assert main([str(path), *flags]) == 0, capsys.readouterr().err
    document = read_document(out / "nan-weight" / "audit.json")
    assert document["flatness"] is None
    assert document["flatness_note"].startswith("not measured: 30 of 30 samples have NaN")
