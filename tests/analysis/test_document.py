"""The result document: schema-valid, complete enough to render, deterministic, versioned."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import torch
from audit_helpers import audit_document, quick_config, without_timings
from document_decoders import bits, decode_image, unbits

from analysis.documentdiff import differences
from analysis.exampleencoding import encode_exact
from analysis.pipeline import evaluation_set, run_audit
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from core.document import SCHEMA_VERSION, DocumentError, read_document, read_result, write_json
from core.schema import SCHEMA_PATH

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def test_real_output_is_schema_valid(quick_document):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(quick_document, SCHEMA, cls=jsonschema.Draft202012Validator)
    json.dumps(quick_document, allow_nan=False)


def test_schema_rejects_a_damaged_document(quick_document):
    broken = copy.deepcopy(quick_document)
    broken["robustness"]["norms"][0]["robust"][0] = "01x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)
    del broken["verdict"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_document_holds_what_a_report_draws(quick_document):
    norm = quick_document["robustness"]["norms"][0]
    n = quick_document["evaluation"]["num_samples"]
    assert len(quick_document["clean_correct"]) == n
    assert all(len(row) == n for row in norm["robust"])
    assert norm["sweep"]["epsilons"][-1] == norm["unbounded_epsilon"]
    assert len(norm["sweep"]["success_rate"]) == len(norm["sweep"]["epsilons"])
    assert any(len(trace[0]) > 2 for trace in (a["mean_loss_trace"] for a in norm["attacks"]))
    flat = quick_document["flatness"]
    assert len(flat["landscape_2d"]["losses"]) == len(flat["landscape_2d"]["coordinates"])
    assert len(flat["spectral_density"]["grid"]) == len(flat["spectral_density"]["density"])
    assert quick_document["activations"] and quick_document["activations"][0]["kind"] == "dropout"
    example = norm["examples"][0]
    original = decode_image(example["original"], example["shape"])
    adversarial = decode_image(example["adversarial"], example["shape"])
    assert len(original) == len(adversarial) == 64
    epsilon = example["epsilon"] * 255
    if norm["norm"] == "linf":
        assert max(abs(a - o) for a, o in zip(adversarial, original, strict=True)) <= epsilon + 1


def test_robust_accuracy_is_worst_case_of_attacks(quick_document):
    for norm in quick_document["robustness"]["norms"]:
        clean = unbits(quick_document["clean_correct"])
        for k in range(len(norm["epsilons"])):
            robust = list(clean)
            for attack in norm["attacks"]:
                robust = [
                    r and not s for r, s in zip(robust, unbits(attack["success"][k]), strict=True)
                ]
                assert attack["robust_accuracy_after"][k]["count"] == sum(robust)
            assert unbits(norm["robust"][k]) == robust
            assert norm["reliable_robust_accuracy"][k]["count"] == sum(robust)
            low, high = norm["reliable_robust_accuracy"][k]["wilson_95"]
            assert low <= norm["reliable_robust_accuracy"][k]["value"] <= high


def test_same_seed_same_document():
    config = quick_config(num_samples=60)
    first = audit_document("digits-mlp-qsd", config)
    second = audit_document("digits-mlp-qsd", config)
    assert without_timings(first) == without_timings(second)
    other = audit_document("digits-mlp-qsd", quick_config(num_samples=60, seed=1))
    assert other["evaluation"]["indices"] != first["evaluation"]["indices"]


def test_the_result_is_what_its_document_reads_back_as(tmp_path):
    """The pipeline builds the typed result in memory; written and read back, it is equal
    (non-finite numbers, the flatness with the layers active and the examples included)."""
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-normout-temporal.pt")
    config = quick_config(num_samples=40, flatness=True)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    result = run_audit(loaded, evaluation, config, device=torch.device("cpu"))
    assert result.flatness is not None and result.flatness.active_layers is not None
    assert result.norm("linf").examples
    path = tmp_path / "audit.json"
    write_json(path, result.to_dict())
    assert read_result(path) == result
    assert path.read_text() == json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n"


def test_bits_round_trip():
    import torch

    mask = torch.tensor([[True, False, True], [False, False, True]])
    assert bits(mask) == ["101", "001"]
    assert unbits("101") == [True, False, True]


def test_unknown_schema_version_is_refused(tmp_path, quick_document):
    document = dict(quick_document, schema_version="9.9")
    write_json(tmp_path / "future.json", document)
    with pytest.raises(DocumentError, match="schema_version '9.9'"):
        read_document(tmp_path / "future.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DocumentError, match="not valid JSON"):
        read_document(tmp_path / "junk.json")


def test_differences_compare_exact_values_as_floats():
    # An example moved by one float32 ulp is a floating-point difference within tolerance; a
    # pixel moved by 1e-3, another dtype or another length is reported.
    pixels = torch.tensor([0.4, 0.3375, 1.0])
    dtype, exact = encode_exact(pixels)
    example = {"shape": [3], "dtype": dtype, "adversarial_exact": exact, "fooled": False}

    def moved(values: torch.Tensor, **changes: object) -> dict[str, object]:
        return {**example, "adversarial_exact": encode_exact(values)[1], **changes}

    ulp = torch.nextafter(pixels, torch.tensor(2.0))
    assert differences(example, moved(ulp)) == []
    assert differences(example, moved(pixels + 1e-3))[0].startswith("/adversarial_exact: ")
    assert differences(example, moved(pixels[:2])) != []
    assert differences(example, moved(pixels.double(), dtype="float64")) != []
    assert differences(example, moved(ulp, fooled=True)) == ["/fooled: False against True"]


def test_differences_allow_float32_rounding_of_a_figure_near_zero():
    # A margin of -0.0059 rounded from logits of order ten differs by 2e-7 between batchings:
    # 4e-5 relative, within float32 rounding of its terms; 1e-5 absolute is not.
    assert differences({"margin": -0.005942344665527344}, {"margin": -0.005942106246948242}) == []
    assert differences({"margin": -0.0059423}, {"margin": -0.0059523}) != []
    assert differences({"trace": 1000.0}, {"trace": 1000.02}) != []


def test_the_readme_states_the_schema_version_the_code_writes():
    from core.document import READABLE_VERSIONS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    stated = re.search(r"carries a `schema_version`, now `([0-9.]+)`", readme)
    assert stated is not None and stated.group(1) == SCHEMA_VERSION
    oldest, newest_older = re.search(r"`([0-9.]+)` to `([0-9.]+)` documents", readme).groups()
    assert (oldest, newest_older) == (READABLE_VERSIONS[0], READABLE_VERSIONS[-2])
    assert READABLE_VERSIONS[-1] == SCHEMA_VERSION
