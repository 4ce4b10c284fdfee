"""A finding's evidence in words: every check's own renderer on real audits (zoo models, and
models broken in the known ways that the zoo does not show), the numbers it shows against the
document's own, and the fallback for checks and shapes this version does not know."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from report_fixtures import BROKEN, broken, document, zoo_audits

from analysis.redflags import CHECK_FUNCTIONS
from core.checks import CHECKS as DECLARED
from reports import evidence, evidenceblocks
from reports.evidence import MAX_ROWS, RENDERERS, Table, generic, render

KEY_VALUE = re.compile(r"\w=\S")
DOCUMENT_KEY = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "honest", document("honest")
    yield "masked", document("masked")
    for name in BROKEN:
        yield name, broken(name)
    for kind in ("quick", "many-epsilons"):
        for path in zoo_audits(kind):
            yield f"{kind}/{path.parent.name}", json.loads(path.read_text())


@pytest.fixture(scope="module")
def findings() -> list[tuple[str, dict[str, Any]]]:
    """(source, finding) for every finding of every real audit."""
    return [(source, f) for source, doc in _documents() for f in doc["findings"]]


def _of(findings, code: str) -> list[dict[str, Any]]:
    return [f["evidence"] for _, f in findings if f["code"] == code and f["evidence"]]


def _tables(shown: evidence.Rendered) -> list[Table]:
    return [b for b in shown.blocks if isinstance(b, Table)]


def _sentences(shown: evidence.Rendered) -> str:
    return " ".join(b for b in shown.blocks if isinstance(b, str))


def _width(table: Table) -> int:
    """A table's width in characters, as the renderer estimates it."""
    label = max([len(table.corner), *(len(label) for label, _ in table.rows)]) + 2
    return label + sum(
        max([len(c), *(len(cells[i]) for _, cells in table.rows)]) + 2
        for i, c in enumerate(table.columns)
    )


def test_every_check_has_a_renderer() -> None:
    assert set(RENDERERS) == set(CHECK_FUNCTIONS)


def test_every_finding_of_real_audits_reads_in_words(findings) -> None:
    seen = set()
    for source, finding in findings:
        shown = render(finding["code"], finding["evidence"])
        assert not shown.generic, (source, finding["code"], finding["evidence"])
        text = shown.text()
        assert not KEY_VALUE.search(text.replace("ε=", "")), (source, text)
        assert not DOCUMENT_KEY.search(text), (source, text)
        for table in _tables(shown):
            assert len(table.rows) <= MAX_ROWS, (source, finding["code"])
            if table.by_column:
                assert _width(table) <= evidenceblocks._CHUNK_CHARACTERS, (source, table)
        if finding["evidence"]:
            seen.add(finding["code"])
    assert seen == set(CHECK_FUNCTIONS)


def test_the_real_audits_cover_every_shape_of_evidence(findings) -> None:
    """The documents above reach every branch of the renderers: the shapes each check writes
    when it fails, warns, passes or cannot be measured."""
    fd = _of(findings, "gradient-disagrees-with-finite-differences")
    assert any(set(e) == {"reason"} for e in fd)
    assert any(e.get("median_ratio") is not None for e in fd)
    vanishing = _of(findings, "vanishing-gradients")
    assert {e["input_gradient_exists"] for e in vanishing} == {True, False}
    assert any(e["attacks"] for e in _of(findings, "non-finite-values"))
    assert any("grouped" in e for e in _of(findings, "batch-dependent-outputs"))
    assert any(e["probability_outputs"] for e in _of(findings, "probability-outputs"))
    assert any(e["modules"] for e in _of(findings, "model-in-train-mode"))
    assert any(e["eot_samples"] > 1 for e in _of(findings, "stochastic-model"))
    assert any(len(e) > MAX_ROWS for e in _of(findings, "attack-not-converged"))
    assert any(len(e) > 4 for e in _of(findings, "targeted-beats-untargeted"))  # many ε
    assert any(e["not_applicable"] for e in _of(findings, "attack-failed"))
    silent = _of(findings, "silent-success")
    assert any(sum(r["silent"] > 0 for r in e["samples"].values()) for e in silent)


# Keys of cases the audits above do not reach: a model that raises when its input requires
# grad, and input conventions the model refuses (tests/analysis/test_clean_accuracy.py).
NOT_REACHED = {("vanishing-gradients", "error"), ("low-clean-accuracy", "conventions_not_run")}


def test_every_finding_of_real_audits_has_only_its_declared_evidence(findings) -> None:
    written: set[tuple[str, str]] = set()
    for source, finding in findings:
        spec = DECLARED[finding["code"]].evidence
        evidence_ = finding["evidence"]
        assert spec.undeclared(evidence_) == [], (source, finding["code"])
        entries = [evidence_] if spec.keyed_by is None else list(evidence_.values())
        written |= {(finding["code"], key) for entry in entries for key in entry}
    declared = {(code, key) for code, spec in DECLARED.items() for key in spec.evidence.fields}
    assert declared - written == NOT_REACHED


class _Reading(Mapping):
    """A mapping that notes each key read from it (iterating over keys reads none)."""

    def __init__(self, data: Mapping[str, Any], read: set[str], wrap: bool) -> None:
        self.data, self.read, self.wrap = data, read, wrap

    def __getitem__(self, key: str) -> Any:
        value = self.data[key]
        if self.wrap:  # an entry of evidence keyed by run or norm
            return _Reading(value, self.read, False)
        self.read.add(key)
        return value

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_every_renderer_reads_only_declared_keys(findings) -> None:
    for source, finding in findings:
        spec = DECLARED[finding["code"]].evidence
        if not finding["evidence"]:
            continue
        read: set[str] = set()
        shown = render(
            finding["code"], _Reading(finding["evidence"], read, spec.keyed_by is not None)
        )
        assert not shown.generic, (source, finding["code"])
        assert read <= set(spec.fields), (source, finding["code"], read - set(spec.fields))


def test_an_evidence_declaration_tells_undeclared_keys_and_entries() -> None:
    flat, by_run = (
        DECLARED["model-in-train-mode"].evidence,
        DECLARED["black-box-beats-white-box"].evidence,
    )
    assert flat.undeclared({"modules": [], "extra": 1}) == ["extra"]
    assert by_run.undeclared({"square/linf/0.03137": {"broken": 1, "odd": 2}}) == [
        "square/linf/0.03137/odd"
    ]
    assert by_run.undeclared({"linf": {"broken": 1}}) == ["linf"]
    assert (
        DECLARED["unbounded-attack-below-100"].evidence.undeclared({"linf": {"epsilon": 1}}) == []
    )
    assert all(spec.evidence.fields for spec in DECLARED.values())


def _runs(evidence_: dict[str, Any]) -> list[tuple[str, str, float, dict[str, Any]]]:
    out = []
    for key, record in evidence_.items():
        label, norm, epsilon = key.rsplit("/", 2)
        out.append((label, norm, float(epsilon), record))
    return out


NORMS = {"linf": "L∞", "l2": "L2"}


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@pytest.mark.parametrize(
    "code, forms",
    [
        ("one-step-beats-iterative", {"by row", "none broken"}),
        ("black-box-beats-white-box", {"by row", "none broken"}),
        ("random-search-beats-gradient", {"by row", "none broken"}),
        ("targeted-beats-untargeted", {"by row", "by column"}),
    ],
)
def test_pairwise_checks_show_what_each_attack_broke(findings, code, forms) -> None:
    """Each run's broken and attempted samples and p from the document: one row per run with
    one or two epsilons per norm, the epsilons as columns with more, one sentence when the
    attack broke nothing anywhere."""
    seen = set()
    for evidence_ in _of(findings, code):
        runs = _runs(evidence_)
        shown = render(code, evidence_)
        cells = {}
        for table in _tables(shown):
            if table.by_column:
                norm = table.corner.split(" ")[-2]
                for i, column in enumerate(table.columns):
                    record = dict((label, values[i]) for label, values in table.rows)
                    cells[norm, float(column)] = (record["broke"], record["p"])
            else:
                for label, values in table.rows:
                    where, epsilon = label.split(" ε=")
                    cells[where.split(" ")[-1], float(epsilon)] = (values[0], values[3])
        if not cells:
            seen.add("none broken")
            assert all(r["broken"] == 0 for *_, r in runs)
            assert f"under any of the {len(runs)} norms and epsilons" in _sentences(shown)
            continue
        seen.add("by column" if _tables(shown)[0].by_column else "by row")
        assert len(cells) == len(runs)
        for _, norm, epsilon, record in runs:
            broke, p = cells[NORMS[norm], epsilon]
            assert broke.replace(" of ", "/") == f"{record['broken']}/{record['attempted']}"
            assert float(p) == pytest.approx(record["p_value"], rel=0.05)
        if len({tuple(r["after"]) for *_, r in runs}) == 1:
            assert f"that {_listed(runs[0][3]['after'])} left robust" in _sentences(shown)
    assert seen >= forms


def test_unbounded_attack_says_how_many_survived(findings) -> None:
    for evidence_ in _of(findings, "unbounded-attack-below-100"):
        text = render("unbounded-attack-below-100", evidence_).text()
        for norm, row in evidence_.items():
            assert (
                f"{NORMS[norm]} at ε = {row['epsilon']:g}: {row['survived']} of "
                f"{row['samples']} samples survived ({100 * row['success_rate']:.1f} % success)"
            ) in text


def test_success_per_epsilon_is_a_table_with_epsilons_as_columns(findings) -> None:
    for evidence_ in _of(findings, "success-not-increasing-with-epsilon"):
        shown = render("success-not-increasing-with-epsilon", evidence_)
        for norm, row in evidence_.items():
            parts = [t for t in _tables(shown) if t.corner == f"{NORMS[norm]} ε"]
            columns = [c for t in parts for c in t.columns]
            assert columns == [f"{e:g}" for e in row["epsilons"]]
            success = [v for t in parts for v in dict(t.rows)["success"]]
            assert success == [f"{100 * r:.1f} %" for r in row["success_rate"]]
            changes = [v for t in parts for v in dict(t.rows)["lost/gained"]]
            assert changes == ["–"] + [f"{s['lost']}/{s['gained']}" for s in row["steps"]]
        plateaus = [NORMS[n] for n, row in evidence_.items() if row["plateau_below_90"]]
        assert ("success stalls below 90 %" in shown.text()) == bool(plateaus)


def test_margin_loss_shows_the_discordant_samples(findings) -> None:
    for evidence_ in _of(findings, "margin-loss-beats-cross-entropy"):
        text = render("margin-loss-beats-cross-entropy", evidence_).text()
        for label, norm, epsilon, record in _runs(evidence_):
            assert f"{label} against {record['peer']}" in text
            by_row = (
                f"{NORMS[norm]} ε={epsilon:g}: only margin {record['only_margin_loss']}, only CE "
                f"{record['only_cross_entropy']}"
            )
            by_column = f"margin/CE {record['only_margin_loss']}/{record['only_cross_entropy']}"
            assert by_row in text or by_column in text


def test_attack_not_converged_keeps_the_most_concerning_runs(findings) -> None:
    capped = 0
    for evidence_ in _of(findings, "attack-not-converged"):
        shown = render("attack-not-converged", evidence_)
        (table,) = _tables(shown)
        runs = _runs(evidence_)
        assert len(table.rows) == min(len(runs), MAX_ROWS)
        shown_names = {label for label, _ in table.rows}
        for label, norm, epsilon, record in runs:
            name = f"{label} {NORMS[norm]} ε={epsilon:g}"
            if name in shown_names:
                cells = dict(table.rows)[name]
                assert cells[0] == f"{record['robust_samples']} of {record['attacked']}"
                late = record["broken_in_last_10pct"]
                assert cells[3] == ("unknown" if late is None else str(late))
        if len(runs) > MAX_ROWS:
            capped += 1
            late = sorted((r["broken_in_last_10pct"] or 0 for *_, r in runs), reverse=True)
            kept = sorted(
                (int(cells[3]) if cells[3] != "unknown" else 0 for _, cells in table.rows),
                reverse=True,
            )
            assert kept == late[:MAX_ROWS]
            assert f"{len(runs) - MAX_ROWS} other runs not shown" in shown.text()
    assert capped


def test_the_probes_read_as_sentences(findings) -> None:
    for evidence_ in _of(findings, "stochastic-model"):
        text = render("stochastic-model", evidence_).text()
        flips = evidence_["prediction_flips"]
        assert f"{flips} prediction{'' if flips == 1 else 's'} flipped" in text
        assert f"{evidence_['num_repeats']} forward passes" in text
    for evidence_ in _of(findings, "model-in-train-mode"):
        text = render("model-in-train-mode", evidence_).text()
        assert all(module in text for module in evidence_["modules"])
    for evidence_ in _of(findings, "vanishing-gradients"):
        text = render("vanishing-gradients", evidence_).text()
        if evidence_["input_gradient_exists"]:
            assert f"{100 * evidence_['clean_zero_fraction']:.1f} % of the clean" in text
        else:
            assert evidence_["reason"] in text
    for evidence_ in _of(findings, "gradient-disagrees-with-finite-differences"):
        shown = render("gradient-disagrees-with-finite-differences", evidence_)
        if "reason" in evidence_:
            assert shown.text() == f"Not measured: {evidence_['reason']}."
            continue
        assert f"{evidence_['disagreeing']} of {evidence_['pairs']} sample-direction" in (
            shown.text()
        )
        (table,) = _tables(shown)
        assert table.columns == tuple(f"{h:g}" for h in evidence_["steps"])
    for evidence_ in _of(findings, "non-finite-values"):
        shown = render("non-finite-values", evidence_)
        assert f"Under attack: {evidence_['attack_samples']} sample" in shown.text() or not any(
            v for k, v in evidence_.items() if k != "attacks"
        )
        for table in _tables(shown):
            evaluations = sorted((int(cells[1]) for _, cells in table.rows), reverse=True)
            every = sorted((r["evaluations"] for r in evidence_["attacks"].values()), reverse=True)
            assert evaluations == every[:MAX_ROWS] or len(every) > MAX_ROWS
    for evidence_ in _of(findings, "silent-success"):
        text = render("silent-success", evidence_).text()
        hit = [r for r in evidence_["samples"].values() if r["silent"]]
        assert all(f"{r['silent']} of {r['attacked']}" in text for r in hit)
        if hit:
            assert f"{evidence_['total']} sample" in text


def test_clean_accuracy_shows_every_comparison(findings) -> None:
    for evidence_ in _of(findings, "low-clean-accuracy"):
        shown = render("low-clean-accuracy", evidence_)
        text = shown.text()
        assert f"({evidence_['correct']} of {evidence_['samples']} samples)" in text
        if evidence_.get("recorded_clean_accuracy") is not None:
            assert f"records {evidence_['recorded_clean_accuracy']:.3g} from its" in text
        tried = evidence_.get("conventions") or {}
        better = sorted(
            (r["accuracy"] for r in tried.values() if r["accuracy"] > evidence_["clean_accuracy"]),
            reverse=True,
        )
        tables = _tables(shown)
        assert len(tables) == (1 if better else 0)
        if better:
            (table,) = tables
            assert table.columns == ("accuracy", "gained", "lost", "p", "flag")
            for name, cells in table.rows:
                row = tried[name]
                assert cells[:3] == (
                    f"{row['accuracy']:.3g}",
                    str(row["only_this"]),
                    str(row["only_current"]),
                )
            # The best of those that scored higher, at most three.
            shown_values = [float(cells[0]) for _, cells in table.rows]
            assert len(shown_values) == min(3, len(better))
            assert all(
                math.isclose(a, b, rel_tol=1e-3) for a, b in zip(shown_values, better, strict=False)
            )
        elif tried:
            assert "none scored higher" in text


def test_vanishing_gradients_describes_two_populations() -> None:
    shown = render(
        "vanishing-gradients",
        {
            "input_gradient_exists": True,
            "zero_fraction": 0.9,
            "clean_zero_fraction": 0.9,
            "clean_vanishing_fraction": 0.95,
            "clean_measured": 20,
            "attack_zero_fraction": 0.5,
            "vanishing_fraction": 0.7,
            "threshold": 1e-10,
            "measured": 40,
        },
    )
    assert not shown.generic
    assert shown.text() == (
        "90.0 % of the clean input gradients (20 samples) are exactly zero and 95.0 % below "
        "1e-10. Of the attacks' first input gradients (40 gradients measured), 50.0 % are "
        "exactly zero and 70.0 % below 1e-10."
    )


def test_failed_runs_are_grouped_by_their_error(findings) -> None:
    oom = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    run = {"norm": "linf", "stage": "attack", "attack": "square", "epsilon": 0.1, "message": oom}
    shown = render(
        "attack-failed",
        {
            "failed": [
                run,
                {**run, "norm": "l2", "epsilon": 0.5},
                {**run, "stage": "sweep", "attack": "pgd-ce", "epsilon": None, "message": "boom"},
            ],
            "not_applicable": [
                {**run, "attack": "fgsm", "message": "the input gradient does not exist"}
            ],
        },
    )
    assert not shown.generic
    assert shown.blocks[0] == (
        "3 runs failed and broke nothing: the samples they would have attacked count as "
        "robust. 1 run could not run: the worst case is over the attacks that ran."
    )
    (table,) = _tables(shown)
    assert table.wraps and table.columns == ("runs", "error")
    assert table.rows == (
        ("failed", ("square L∞ ε=0.1 and square L2 ε=0.5", oom)),
        ("failed", ("pgd-ce L∞ (sweep)", "boom")),
        ("could not run", ("fgsm L∞ ε=0.1", "the input gradient does not exist")),
    )
    for evidence_ in _of(findings, "attack-failed"):
        text = render("attack-failed", evidence_).text()
        if not evidence_["failed"] and not evidence_["not_applicable"]:
            assert text == "Every attack of the suite ran at every norm and epsilon."
        for row in evidence_["not_applicable"]:
            assert row["message"] in text and row["attack"] in text


# --- checks and shapes this version does not know --------------------------------------------


def test_an_unknown_check_is_a_small_table_of_humanised_names() -> None:
    shown = render(
        "clean-accuracy",
        {"clean_accuracy": 0.1, "chance_level": 0.1, "recorded_accuracy": 0.981, "ok": False},
    )
    assert shown.generic
    (table,) = _tables(shown)
    assert table.columns == ()
    assert table.rows == (
        ("Clean accuracy", ("10.0 %",)),
        ("Chance level", ("0.1",)),
        ("Recorded accuracy", ("98.1 %",)),
        ("Ok", ("no",)),
    )
    assert shown.text() == (
        "Clean accuracy: 10.0 %; Chance level: 0.1; Recorded accuracy: 98.1 %; Ok: no."
    )


def test_records_become_a_row_table_and_long_lists_a_summary() -> None:
    failed = [
        {"attack": "square", "norm": "linf", "epsilon": 0.1, "error": "out of memory"},
        {"attack": "apgd-t", "norm": "l2", "epsilon": 0.5, "error": "RuntimeError: boom"},
    ]
    shown = render(
        "stage-errors",
        {
            "stages": failed,
            "epsilons": [round(0.1 * k, 1) for k in range(1, 13)],
            "p_value": 0.000123,
            "labels": [f"attack-{k}" for k in range(9)],
            "note": None,
        },
    )
    assert shown.generic
    summary, records = _tables(shown)
    assert dict(summary.rows) == {
        "ε": ("12 values from 0.1 to 1.2",),
        "p": ("0.00012",),
        "Labels": ("9 items: attack-0, attack-1, attack-2, …",),
        "Note": ("n/a",),
    }
    assert records.caption == "Stages"
    assert records.columns == ("Attack", "Norm", "ε", "Error")
    assert records.rows == (
        ("1", ("square", "linf", "0.1", "out of memory")),
        ("2", ("apgd-t", "l2", "0.5", "RuntimeError: boom")),
    )


def test_many_records_are_capped_and_runs_named() -> None:
    runs = {f"pgd/linf/{k / 100:g}": {"broken": k, "total_loss": 1.5} for k in range(1, 13)}
    shown = render("some-future-check", runs)
    (table,) = _tables(shown)
    assert len(table.rows) == MAX_ROWS
    assert table.rows[0] == ("pgd L∞ ε=0.01", ("1", "1.5"))
    assert "4 more rows not shown." in shown.blocks


def test_a_known_check_of_another_shape_falls_back_and_extra_keys_are_kept() -> None:
    old = render("unbounded-attack-below-100", {"linf": {"epsilon": 1.0, "survivors": 3}})
    assert old.generic
    assert old.text() == "L∞: ε 1, Survivors 3."
    newer = render("probability-outputs", {"probability_outputs": False, "row_sum_error": 0.25})
    assert newer.generic
    assert newer.blocks[0] == "The outputs are logits, not rows of probabilities."
    assert _tables(newer)[0].rows == (("Row sum error", ("0.25",)),)
    assert render("model-in-train-mode", {}).blocks == ()
    assert generic("a plain string") == ["a plain string"]
    assert render("stochastic-model", [1, 2]).generic


def test_table_text_reads_records_in_their_direction() -> None:
    by_row = Table("", ("broke", "p"), (("L∞ ε=0.1", ("3 of 40", "0.5")),))
    assert by_row.text() == "L∞ ε=0.1: broke 3 of 40, p 0.5"
    by_column = Table("L∞ ε", ("0.1", "0.2"), (("broke", ("3/40", "5/37")),), by_column=True)
    assert by_column.text() == "L∞ ε 0.1: broke 3/40; L∞ ε 0.2: broke 5/37"
    pairs = Table("", (), (("Chance level", ("0.1",)),), caption="Numbers")
    assert pairs.text() == "Numbers: Chance level: 0.1"
