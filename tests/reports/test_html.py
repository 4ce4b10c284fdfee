"""The single-audit report: it parses, carries the document's numbers, escapes what the
document says, is the same bytes every time, needs no torch, and the command lines write it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import Page, close, document, numbers, result

from analysis.redflags import CHECK_FUNCTIONS
from commands import audit
from core.checks import CHECKS
from core.document import AuditResult
from reports import evidence, html, tables
from reports.diagnosis import diagnose

ROOT = Path(__file__).resolve().parents[2]
_FLAGGED = ("fail", "warn")
CHECKPOINT = ROOT / "checkpoints" / "zoo" / "digits-mlp-dropout.pt"


@pytest.fixture(scope="module")
def honest() -> AuditResult:
    return result("honest")


@pytest.fixture(scope="module")
def page(honest: AuditResult) -> Page:
    parsed = Page(html.render(honest))
    assert parsed.errors == []
    return parsed


def _write(tmp_path: Path, data: dict, name: str = "audit.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_every_table_reads_back_as_its_dataframe(honest: AuditResult, page: Page) -> None:
    for name, build in tables.REPORT_TABLES.items():
        if name == "red_flags":
            continue  # its own layout: test_red_flags_show_each_finding_in_words
        frame = build(honest)
        rows = page.tables[f"table-{name}"]
        assert rows[0] == [frame.index.name, *frame.columns], name
        body = [row[1:] for row in rows[1:]]
        assert body == frame.to_numpy().tolist(), name
        assert [row[0] for row in rows[1:]] == [str(i) for i in frame.index]


def _blocks_shown(shown: evidence.Rendered, cell: str, page: Page) -> None:
    """Every sentence of ``shown`` is in ``cell``, and every table is on the page as a table
    with the same header and cells."""
    flat = " ".join(cell.split())
    nested = [rows for key, rows in page.tables.items() if not key.startswith("table-")]
    for block in shown.blocks:
        if isinstance(block, str):
            assert " ".join(block.split()) in flat, (block, flat)
            continue
        expected = [[block.corner, *block.columns]] if block.columns else []
        expected += [[label, *cells] for label, cells in block.rows]
        assert expected in nested, (block, nested)


def test_red_flags_show_each_finding_in_words(honest: AuditResult, page: Page) -> None:
    frame = tables.red_flag_table(honest)
    header, *rows = page.tables["table-red_flags"]
    assert header == ["check", "status", "what was seen", "remedy"]
    assert len(rows) == len(honest.findings)
    for row, finding in zip(rows, honest.findings, strict=True):
        check, status, seen, remedy = row
        assert check == f"{finding.code} {finding.kind}"
        assert status.split(" ", 1)[1] == finding.status  # after its shape
        assert seen.startswith(" ".join(finding.explanation.split()))
        assert remedy == " ".join((finding.remedy or "").split())
        shown = evidence.render(finding.code, finding.evidence)
        assert not shown.generic, finding.code
        assert frame.loc[finding.code, "evidence"] == shown.text()
        if finding.status not in _FLAGGED:
            assert "the numbers" in seen  # folded away
        _blocks_shown(shown, seen, page)
    for text in frame["evidence"]:
        assert not re.search(r"\w=\S", text.replace("ε=", "")), text  # no key=value
        assert not re.search(r"\b[a-z]+_[a-z_]+\b", text), text  # no key of the document


def test_the_banner_carries_the_key_numbers(honest: AuditResult, page: Page) -> None:
    text = " ".join(" ".join(page.text).split())
    assert honest.verdict in text
    assert f"Clean accuracy {tables.interval(honest.clean_accuracy)}" in text
    for section in honest.robustness.norms:
        for k, epsilon in enumerate(section.epsilons):
            label = tables.norm_label(section.norm, epsilon)
            reliable = section.reliable_robust_accuracy[k]
            assert f"Reliable robust accuracy, {label} {tables.interval(reliable)}" in text
            value, *_ = numbers(text.split(f"Reliable robust accuracy, {label}")[1][:8])
            assert close(value, reliable.value)
            # What the figure is the worst case over, and what of AutoAttack's standard
            # version the quick suite does not run.
            over = ", ".join(record.label for record in section.attacks)
            assert f"Worst case over, {label} {over} " in text
            assert (
                f"Not run of AutoAttack's standard version, {label} APGD-CE (not in the suite), "
                "APGD-T (not in the suite), FAB-T (not in the suite) "
            ) in text
    assert "percentage points" in text
    assert "EOT, forward passes" not in text  # a deterministic model: nothing averaged


def test_a_quick_audit_is_called_a_smoke_test_in_the_banner(page: Page) -> None:
    text = " ".join(" ".join(page.text).split())
    assert "Caution: the quick preset is a smoke test" in text
    assert "may overstate robustness" in text and "--preset standard" in text
    data = document("honest")
    data["provenance"]["config"]["suite"]["name"] = "standard"
    assert "smoke test" not in html.render(AuditResult.from_dict(data))


def test_the_subtitle_says_how_pixels_reach_the_model(page: Page) -> None:
    assert "pixels in [0, 1], no normalisation" in " ".join(" ".join(page.text).split())


def test_headings_in_order(page: Page) -> None:
    headings = [attrs.get("id") for tag, attrs in page.tags if tag == "h2"]
    assert headings == [f"{section}-heading" for section, _ in html._SECTIONS]


def test_self_contained_and_accessible(page: Page) -> None:
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "img"), tag
        for key in ("src", "href", "xlink:href"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("#", "data:image/png;base64,")), (tag, key, value)
        if tag == "svg" and attrs.get("role") == "img":
            assert attrs.get("aria-label")
        if tag == "th":
            assert attrs.get("scope") in ("col", "row")
    plots = [a for t, a in page.tags if t == "svg" and a.get("role") == "img"]
    assert len(plots) >= 8  # curves, who broke what, loss, 3 flatness, 2 example sets
    ids = [a["id"] for _, a in page.tags if a.get("id")]
    assert len(ids) == len(set(ids)), "duplicate element ids"
    codes = {f"check-{code}" for code in CHECK_FUNCTIONS}
    assert codes <= set(ids)


def test_the_stylesheet_is_inlined_verbatim(honest: AuditResult) -> None:
    page = html.render(honest)
    style = page[page.index("<style>") + len("<style>") : page.index("</style>")]
    assert style.strip() == html.stylesheet().strip()


def test_every_check_is_explained() -> None:
    assert list(CHECKS) == list(CHECK_FUNCTIONS)  # declared once, in the order they run


def test_renders_are_byte_identical(honest: AuditResult) -> None:
    assert html.render(honest) == html.render(result("honest"))


def test_markup_from_the_document_is_escaped() -> None:
    data = document("honest")
    data["provenance"]["checkpoint"] = "<script>alert(1)</script>.pt"
    data["robustness"]["norms"][0]["attacks"][0]["label"] = "<b>pgd</b>"
    data["findings"][0]["explanation"] = '<img src=x onerror="alert(2)">'
    text = html.render(AuditResult.from_dict(data))
    assert "<script" not in text and "<b>pgd" not in text and "<img" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;pgd&lt;/b&gt;" in text
    assert Page(text).errors == []


@pytest.mark.parametrize(
    ("verdict", "level"),
    [
        ("no sign of gradient masking", "ok"),
        ("suspected gradient masking (2 red flags)", "masking"),
        ("evaluation unreliable", "unreliable"),
    ],
)
def test_every_verdict_and_status(verdict: str, level: str) -> None:
    data = document("honest")
    data["verdict"] = verdict
    for finding, status in zip(data["findings"], ["pass", "warn", "fail", "n/a"] * 4, strict=False):
        finding["status"] = status
    page = Page(html.render(AuditResult.from_dict(data)))
    assert page.errors == []
    banner = [a for t, a in page.tags if t == "div" and "banner" in (a.get("class") or "")]
    assert banner[0]["class"] == f"banner {level}"
    statuses = [
        a["class"] for t, a in page.tags if t == "span" and "status" in (a.get("class") or "")
    ]
    assert {"status pass", "status warn", "status fail", "status na"} <= set(statuses)
    text = "".join(page.text)
    assert "✖ fail" in text and "▲ warn" in text and "✔ pass" in text and "– n/a" in text


def test_without_flatness_and_with_a_note() -> None:
    data = document("honest")
    data["flatness"] = None
    text = "".join(Page(html.render(AuditResult.from_dict(data))).text)
    assert "ran without flatness" in text
    data["flatness_note"] = "not measured: 3 of 60 samples have NaN or Inf clean logits"
    page = Page(html.render(AuditResult.from_dict(data)))
    assert "not measured: 3 of 60 samples" in "".join(page.text)
    assert "table-flatness" not in page.tables


def test_non_finite_values_are_named() -> None:
    data = document("honest")
    data["flatness"]["hessian_trace"]["value"] = "NaN"
    data["flatness"]["hessian_trace"]["stderr"] = "Infinity"
    data["flatness"]["landscape_1d"]["losses"][0] = "NaN"
    data["probes"]["max_repeat_difference"] = None
    page = Page(html.render(AuditResult.from_dict(data)))
    assert page.errors == []
    flatness = dict((row[0], row[1]) for row in page.tables["table-flatness"][1:])
    assert flatness["Hessian trace"] == "non-finite ± non-finite"
    probes = dict((row[0], row[1]) for row in page.tables["table-probes"][1:])
    assert probes["repeated passes: largest logit change"] == "n/a"


def test_a_saturated_softmax_is_diagnosed() -> None:
    masked = result("masked")
    assert masked.verdict.startswith("suspected gradient masking")
    mechanisms = diagnose(masked)
    assert mechanisms[0].title.startswith("Saturated softmax")
    evidence = " ".join(mechanisms[0].evidence)
    assert "exactly zero" in evidence and "margin loss alone broke" in evidence
    # Logits × 10⁴ put the correct samples' margins far beyond float32's softmax range.
    margins = [m for m in masked.probes.clean_margins if m > 0]
    beyond = sum(m > 103.28 for m in masked.probes.clean_margins)
    assert beyond == len(margins) > 0
    assert f"{beyond} of {len(masked.probes.clean_margins)} clean logit margins exceed" in evidence
    page = html.render(masked)
    text = " ".join(Page(page).text)
    assert "Saturated softmax" in text
    figure = page[page.index('id="figure-clean"') :]
    zeros = sum(n == 0 for n in masked.probes.clean_gradient_norms)
    assert zeros > 0 and f"{zeros} exactly zero" in figure[: figure.index("</figure>")]


def test_flatness_shows_both_modes(honest: AuditResult, page: Page) -> None:
    """The honest document's model has dropout: its flatness table has an eval column and a
    layers-active column, each with the document's numbers."""
    active = honest.flatness.active_layers
    assert active is not None and active.config["mode"] == "train"
    rows = {row[0]: row[1:] for row in page.tables["table-flatness"]}
    header = rows.pop("measure")
    assert header == ["eval", "layers active"]
    trace = rows["Hessian trace"]
    assert numbers(trace[0])[0] == pytest.approx(honest.flatness.hessian_trace.value, rel=1e-3)
    assert numbers(trace[1])[0] == pytest.approx(active.hessian_trace.value, rel=1e-3)


def test_an_honest_model_has_no_mechanism(honest: AuditResult) -> None:
    assert diagnose(honest) == []


def test_other_mechanisms_follow_their_checks() -> None:
    data = document("honest")
    for finding in data["findings"]:
        if finding["code"] in ("gradient-disagrees-with-finite-differences", "stochastic-model"):
            finding["status"] = "fail"
    titles = [m.title for m in diagnose(AuditResult.from_dict(data))]
    assert titles == ["The backward pass does not describe the function", "A random classifier"]


# --- command lines ---------------------------------------------------------------------------


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_line_writes_report_and_tables(tmp_path: Path, honest: AuditResult) -> None:
    path = _write(tmp_path, document("honest"))
    done = _run("-m", "reports.html", str(path), "--tables", "csv")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == html.render(honest)
    assert (tmp_path / "robust_accuracy.csv").exists() and not (tmp_path / "red_flags.md").exists()
    out = tmp_path / "elsewhere" / "page.html"
    out.parent.mkdir()
    assert _run("-m", "reports.html", str(path), "-o", str(out)).returncode == 0
    assert out.read_bytes() == (tmp_path / "report.html").read_bytes()


@pytest.mark.parametrize(
    ("edit", "args", "message"),
    [
        ("version", (), "schema_version '9.9'"),
        ("missing", (), "does not exist"),
        (None, ("--tables", "csv,pdf"), "--tables takes"),
        (None, ("-o", "FILE/report.html"), "-o"),
    ],
)
def test_command_line_bad_input_is_one_line(tmp_path: Path, edit, args, message) -> None:
    data = document("honest")
    if edit == "version":
        data["schema_version"] = "9.9"
    path = tmp_path / "missing.json" if edit == "missing" else _write(tmp_path, data)
    args = tuple(a.replace("FILE", str(path)) for a in args)  # a folder that is a file
    done = _run("-m", "reports.html", str(path), *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        [] if edit == "missing" else ["audit.json"]
    )


def test_reports_import_no_torch(tmp_path: Path, honest: AuditResult) -> None:
    blocker = tmp_path / "blocker" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    path = _write(tmp_path, document("honest"))
    script = (
        "import pkgutil, importlib, sys, reports\n"
        "for module in pkgutil.iter_modules(reports.__path__):\n"
        "    importlib.import_module('reports.' + module.name)\n"
        "from commands.report import main\n"
        f"status = main([{str(path)!r}, '-o', {str(tmp_path / 'page.html')!r}, '--tables', 'md'])\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
        "sys.exit(status)\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)])}
    done = _run("-c", script, env=env)
    assert done.returncode == 0, done.stderr
    # Another process, other hash seeds: the same bytes.
    assert (tmp_path / "page.html").read_text(encoding="utf-8") == html.render(honest)


def _audit(out: Path, *flags: str) -> int:
    return audit.main(
        [
            str(CHECKPOINT),
            "--preset",
            "quick",
            "--num-samples",
            "40",
            "--no-flatness",
            "--out",
            str(out),
            "--quiet",
            *flags,
        ]
    )


def test_audit_writes_the_report_unless_told_not_to(tmp_path: Path) -> None:
    assert _audit(tmp_path / "a", "--tables", "csv,md") == 0
    folder = tmp_path / "a" / CHECKPOINT.stem
    result_ = AuditResult.from_dict(json.loads((folder / "audit.json").read_text()))
    assert (folder / "report.html").read_text(encoding="utf-8") == html.render(result_)
    robust = (folder / "robust_accuracy.csv").read_text(encoding="utf-8").splitlines()
    reliable = [line for line in robust if line.startswith("reliable")][0]
    shown = numbers(reliable.split(",", 1)[1])[::3]
    expected = [s.reliable_robust_accuracy[0].value for s in result_.robustness.norms]
    assert all(close(a, b) for a, b in zip(shown, expected, strict=True))
    assert (folder / "robust_accuracy.md").exists() and not (folder / "flatness.csv").exists()
    assert _audit(tmp_path / "b", "--no-report") == 0
    assert sorted(p.name for p in (tmp_path / "b" / CHECKPOINT.stem).iterdir()) == ["audit.json"]


def test_audit_refuses_bad_tables_before_any_work(tmp_path: Path, capsys) -> None:
    assert _audit(tmp_path / "c", "--tables", "xlsx") == 2
    assert capsys.readouterr().err.startswith("error: --tables takes")
    assert not (tmp_path / "c").exists()


SATURATED_ZOO = ROOT / "checkpoints" / "zoo" / "digits-mlp-normout-spatiotemporal-ce.pt"


@pytest.mark.skipif(not SATURATED_ZOO.exists(), reason="the zoo has no plain cross-entropy NormOut")
def test_the_zoos_plain_cross_entropy_normout_is_a_saturated_softmax() -> None:
    """The NormOut thesis' SpatiotemporalMax recipe (no label smoothing) masks by saturating
    the softmax, and the diagnosis must say so."""
    from audit_helpers import audit_document, quick_config

    data = audit_document(SATURATED_ZOO, quick_config(num_samples=100))
    mechanisms = diagnose(AuditResult.from_dict(data))
    assert mechanisms and mechanisms[0].title.startswith("Saturated softmax")


@pytest.mark.parametrize(
    ("wrapper", "title"),
    [
        ("QuantizedInput", "Shattered gradients"),
        ("WrongGradient", "The backward pass does not describe the function"),
        ("DropoutAtTest", "A random classifier"),
    ],
)
def test_each_known_mechanism_is_diagnosed(wrapper: str, title: str) -> None:
    """Models masked in known ways (analysis.masked): the first mechanism is theirs."""
    from audit_helpers import audit_document, quick_config

    from analysis import masked

    data = audit_document(
        "digits-mlp-dropout", quick_config(num_samples=100), getattr(masked, wrapper)
    )
    mechanisms = diagnose(AuditResult.from_dict(data))
    assert mechanisms and mechanisms[0].title.startswith(title)


def test_a_schema_1_0_document_renders() -> None:
    """Older documents lack statuses, success steps, failures and exact examples."""
    data = document("honest")
    data["schema_version"] = "1.0"
    for section in data["robustness"]["norms"]:
        del section["failures"]
        for attack in section["attacks"]:
            for key in ("success_step", "statuses", "messages"):
                del attack[key]
        for example in section["examples"]:
            for key in (
                "success_step",
                "dtype",
                "original_exact",
                "adversarial_exact",
                "predicted",
            ):
                del example[key]
    page = Page(html.render(AuditResult.from_dict(data)))
    assert page.errors == [] and "predicted n/a" in " ".join(page.text) + _alt_texts(page)


def _alt_texts(page: Page) -> str:
    return " ".join(a.get("aria-label") or "" for t, a in page.tags if t == "svg")


def test_a_failed_attack_is_shown_as_failed() -> None:
    data = document("honest")
    attack = data["robustness"]["norms"][0]["attacks"][-1]
    attack["statuses"][0] = "failed"
    attack["messages"][0] = "RuntimeError: out of memory"
    edited = AuditResult.from_dict(data)
    frame = tables.robust_accuracy_table(edited)
    assert frame.loc[attack["label"], "L∞ ε=0.05"] == "failed"
    assert frame.loc[attack["label"], "L∞ ε=0.1"] != "failed"
    assert Page(html.render(edited)).errors == []
