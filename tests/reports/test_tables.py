"""The report's tables, read back against the document they come from."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from report_fixtures import close, document, numbers, result

from core.document import AuditResult
from reports import tables


@pytest.fixture(scope="module")
def honest() -> AuditResult:
    return result("honest")


def test_robust_accuracy_cells_are_the_documents_proportions(honest: AuditResult) -> None:
    frame = tables.robust_accuracy_table(honest)
    columns = [(s, k) for s in honest.robustness.norms for k in range(len(s.epsilons))]
    assert len(frame.columns) == len(columns) == 4  # two epsilons per norm
    assert frame.columns[0] == "L∞ ε=0.05"
    for (section, k), column in zip(columns, frame.columns, strict=True):
        expected = {"clean": honest.clean_accuracy}
        expected |= {a.label: a.robust_accuracy_after[k] for a in section.attacks}
        expected["reliable (worst case)"] = section.reliable_robust_accuracy[k]
        assert list(frame.index) == list(expected)
        for label, share in expected.items():
            value, low, high = numbers(frame.loc[label, column])
            assert close(value, share.value) and close(low, share.wilson_95[0])
            assert close(high, share.wilson_95[1])


def test_new_breaks_sum_to_what_the_attacks_took(honest: AuditResult) -> None:
    correct = sum(honest.clean_correct)
    for section in honest.robustness.norms:
        for k in range(len(section.epsilons)):
            counts = tables.new_breaks(honest, section, k)
            reliable = section.reliable_robust_accuracy[k].count
            assert sum(counts.values()) == correct - reliable
            # An attack run on exactly what the earlier ones left robust breaks only new ones.
            robust_before = correct
            for record in section.attacks:
                if record.attempted[k] == robust_before:
                    assert counts[record.label] == record.broken[k]
                robust_before -= counts[record.label]
    frame = tables.who_broke_what_table(honest)
    assert frame.loc["total broken"].map(int).tolist() == [
        correct - s.reliable_robust_accuracy[k].count
        for s in honest.robustness.norms
        for k in range(len(s.epsilons))
    ]


def test_the_first_attack_alone_is_its_accuracy_after(honest: AuditResult) -> None:
    for section in honest.robustness.norms:
        first = section.attacks[0]
        for k in range(len(section.epsilons)):
            alone = tables.alone_accuracy(honest, first, k)
            assert alone is not None and alone.count == first.robust_accuracy_after[k].count


def test_flatness_cells_are_the_estimates(honest: AuditResult) -> None:
    frame = tables.flatness_table(honest)
    flatness = honest.flatness
    assert flatness is not None and flatness.active_layers is not None
    assert list(frame.columns) == ["eval", "layers active"]
    for column, measured in (("eval", flatness), ("layers active", flatness.active_layers)):
        for label, estimate in (
            ("Fisher-Rao norm² (empirical Fisher)", measured.fisher_rao_empirical),
            ("Fisher-Rao norm² (model Fisher)", measured.fisher_rao_model),
            ("Hessian trace", measured.hessian_trace),
        ):
            value, stderr = numbers(frame.loc[label, column])
            assert math.isclose(value, float(f"{estimate.value:.4g}"))
            assert math.isclose(stderr, float(f"{estimate.stderr:.4g}"))
    assert frame.loc["ε-sharpness", "layers active"] == tables.NOT_AVAILABLE
    eigenvalues = flatness.hessian_eigenvalues.eigenvalues
    assert float(frame.loc["Hessian eigenvalue λ1", "eval"]) == float(f"{eigenvalues[0]:.4g}")


def test_activation_variance_is_the_square_of_std(honest: AuditResult) -> None:
    frame = tables.activation_table(honest)
    assert list(frame.index) == [a.name for a in honest.activations]
    for stats in honest.activations:
        row = frame.loc[stats.name]
        assert math.isclose(float(row["variance"]), stats.std**2, rel_tol=1e-3)
        assert math.isclose(
            float(row["sparsity"].rstrip("%")), 100 * stats.zero_fraction, abs_tol=0.051
        )


def test_red_flags_have_one_row_per_finding(honest: AuditResult) -> None:
    frame = tables.red_flag_table(honest)
    assert list(frame.index) == [f.code for f in honest.findings]
    assert frame["status"].tolist() == [f.status for f in honest.findings]


def test_missing_and_non_finite_values_are_named() -> None:
    data = document("honest")
    data["flatness"]["hessian_trace"]["value"] = "NaN"
    data["flatness"]["fisher_rao_model"]["stderr"] = None
    data["flatness"]["epsilon_sharpness"] = None
    data["activations"][0]["mean"] = "Infinity"
    edited = AuditResult.from_dict(data)
    flatness = tables.flatness_table(edited)["eval"]
    assert flatness["Hessian trace"].startswith("non-finite ± ")
    assert "±" not in flatness["Fisher-Rao norm² (model Fisher)"]
    assert flatness["ε-sharpness"] == "n/a"
    assert tables.activation_table(edited).iloc[0]["mean"] == "non-finite"


def test_without_flatness_the_table_is_empty_and_not_written(tmp_path) -> None:
    data = document("honest")
    data["flatness"] = None
    edited = AuditResult.from_dict(data)
    assert tables.flatness_table(edited).empty
    written = tables.write_tables(edited, tmp_path, ("csv",))
    assert tmp_path / "flatness.csv" not in written and not (tmp_path / "flatness.csv").exists()


def test_written_tables_read_back(honest: AuditResult, tmp_path) -> None:
    written = tables.write_tables(honest, tmp_path)
    assert {p.name for p in written} == {
        f"{name}.{kind}" for name in tables.REPORT_TABLES for kind in ("csv", "md")
    }
    for name, build in tables.REPORT_TABLES.items():
        frame = build(honest)
        text = (tmp_path / f"{name}.csv").read_text(encoding="utf-8")
        back = pd.read_csv(io.StringIO(text), index_col=0, dtype=str, keep_default_na=False)
        assert back.columns.tolist() == frame.columns.tolist()
        assert back.to_numpy().tolist() == frame.to_numpy().tolist()
        lines = (tmp_path / f"{name}.md").read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(frame) + 2
        cells = [c.strip() for c in lines[2].strip("|").split(" | ")]
        assert cells[0] == str(frame.index[0]).replace("|", "\\|")


def test_markdown_escapes_pipes_and_newlines() -> None:
    frame = pd.DataFrame([["a|b\nc"]], index=pd.Index(["x"], name="row"), columns=["value"])
    assert tables.to_markdown(frame).splitlines()[2] == "| x | a\\|b c |"


@pytest.mark.parametrize("text", ["", "csv,xls", ",", "html"])
def test_bad_formats_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--tables takes"):
        tables.parse_formats(text)


def test_formats_are_parsed() -> None:
    assert tables.parse_formats(" md, csv,md ") == ("md", "csv")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "n/a"),
        (math.nan, "non-finite"),
        (-math.inf, "non-finite"),
        (3, "3"),
        (0.123456, "0.1235"),
    ],
)
def test_number(value, shown: str) -> None:
    assert tables.number(value) == shown


def test_provenance_shows_the_batch_sizes_and_how_they_were_chosen() -> None:
    data = document("honest")
    data["provenance"]["batch_sizes"] = {
        "requested": None,
        "attacks": {
            "size": 300,
            "how": "estimated",
            "per_sample_bytes": 7.1e6,
            "fixed_bytes": 1.3e7,
            "available_bytes": 23_600_000_000,
            "halvings": 0,
        },
        "flatness": {
            "size": 55,
            "how": "estimated",
            "per_sample_bytes": 8.3e7,
            "fixed_bytes": 0.0,
            "available_bytes": 22_000_000_000,
            "halvings": 1,
        },
    }
    rows = tables.provenance_table(AuditResult.from_dict(data))["value"]
    assert rows["batch size requested"] == "auto"
    assert rows["batch size: attacks"] == (
        "300 (estimated: 7.1 MB per sample + 13 MB, 23.6 GB free)"
    )
    assert rows["batch size: flatness"] == (
        "55 (estimated: 83 MB per sample, 22 GB free), halved 1× after running out of memory"
    )
    data["provenance"]["batch_sizes"]["flatness"] = None
    data["provenance"]["batch_sizes"]["requested"] = 64
    rows = tables.provenance_table(AuditResult.from_dict(data))["value"]
    assert rows["batch size requested"] == "64" and "batch size: flatness" not in rows


def test_provenance_states_the_normalisation_and_bounds_and_their_source() -> None:
    data = document("honest")
    info = data["checkpoint"]
    # The zoo MLP's file records no normalisation and the default bounds.
    assert info["mean"] is None and info["normalization_source"] == "recorded in the checkpoint"
    rows = tables.provenance_table(AuditResult.from_dict(data))["value"]
    assert rows["normalisation"] == (
        "none: pixels reach the network as they are (recorded in the checkpoint)"
    )
    assert rows["input bounds"] == "[0, 1] (recorded in the checkpoint)"
    info.update(
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        bounds=[0.0, 255.0],
        normalization_source="--normalization (imagenet)",
        bounds_source="--bounds",
    )
    rows = tables.provenance_table(AuditResult.from_dict(data))["value"]
    assert rows["normalisation"] == (
        "mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225 (--normalization (imagenet))"
    )
    assert rows["input bounds"] == "[0, 255] (--bounds)"
    # A document of schema 1.5 does not say where they came from.
    data["schema_version"] = "1.5"
    del info["normalization_source"], info["bounds_source"]
    rows = tables.provenance_table(AuditResult.from_dict(data))["value"]
    assert rows["input bounds"] == "[0, 255] (source not recorded)"
