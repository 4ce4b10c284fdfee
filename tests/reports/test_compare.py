"""The comparison page, on documents written by the audit's command line.

The oracle for every number is the document itself, read as plain JSON (not through the
reader the comparison uses); the page's cells are read back with the standard library's HTML
parser.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from browser import Browser, colour_count, require_browser

from commands.compare import main as compare_main
from core.stats import wilson_interval
from reports import compare

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "checkpoints" / "zoo"
MASKED, FIXED = "digits-mlp-normout-spatiotemporal-ce", "digits-mlp-normout-spatiotemporal"
NUM_SAMPLES = 80


@pytest.fixture(scope="session")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One audit of the masked zoo model and its fix (quick preset, with flatness): the
    output folder and the command's stdout."""
    out = tmp_path_factory.mktemp("compare") / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.audit",
            str(ZOO / f"{MASKED}.pt"),
            str(ZOO / f"{FIXED}.pt"),
            "--preset",
            "quick",
            "--num-samples",
            str(NUM_SAMPLES),
            "--flatness-samples",
            "40",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out, done.stdout


@pytest.fixture(scope="session")
def documents(audited) -> list[Path]:
    out, _ = audited
    return [out / MASKED / "audit.json", out / FIXED / "audit.json"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _variant(tmp_path: Path, source: Path, name: str, change) -> Path:
    """A copy of the document at ``source`` changed by ``change(dict)``."""
    data = copy.deepcopy(_json(source))
    change(data)
    target = tmp_path / name / "audit.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(data))
    return target


class _Tables(HTMLParser):
    """Every table of a page: id -> rows of (text, data-value or None) cells, header row
    first; and the page's text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.text: list[str] = []
        self.tags: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell, self._value = [], attributes.get("data-value")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(("".join(self._cell).strip(), self._value))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Tables:
    parser = _Tables()
    parser.feed(path.read_text())
    parser.close()
    return parser


def _rows(parser: _Tables, table: str) -> list[dict[str, tuple[str, str | None]]]:
    """The rows of ``table``, put together from the parts the page splits it into where it
    is too wide for A4 (``table-x``, ``table-x-2``, ...; each repeats the key columns)."""
    parts = [rows for name, rows in parser.tables.items() if re.fullmatch(rf"{table}(-\d+)?", name)]
    assert parts, table
    merged: list[dict[str, tuple[str, str | None]]] = [{} for _ in parts[0][1:]]
    for header, *rows in parts:
        assert len(rows) == len(merged)
        for whole, row in zip(merged, rows, strict=True):
            cells = dict(zip([h for h, _ in header], row, strict=True))
            assert all(whole.get(k, cell) == cell for k, cell in cells.items())  # keys agree
            whole.update(cells)
    return merged


def test_an_audit_of_several_checkpoints_writes_the_comparison(audited):
    out, stdout = audited
    assert (out / "comparison.html").is_file()
    assert f"comparison written to {out / 'comparison.html'}" in stdout


def test_cells_read_back_equal_the_documents(audited, documents):
    parser = _parse(audited[0] / "comparison.html")
    raw = [_json(path) for path in documents]
    verdicts = _rows(parser, "table-verdicts")
    assert [row["checkpoint"][0] for row in verdicts] == [MASKED, FIXED]
    for row, document in zip(verdicts, raw, strict=True):
        clean = document["clean_accuracy"]
        assert float(row["clean accuracy"][1]) == clean["value"]
        assert row["clean accuracy"][0] == (
            f"{clean['value']:.3f} [{clean['wilson_95'][0]:.3f}, {clean['wilson_95'][1]:.3f}]"
        )
        assert row["verdict"][0] == document["verdict"]
        assert int(row["samples"][0]) == document["evaluation"]["num_samples"]
    for norm, name in (("linf", "L∞"), ("l2", "L2")):
        rows = _rows(parser, f"table-robust-accuracy-{norm}")
        assert len(rows) == len(raw)
        for row, document in zip(rows, raw, strict=True):
            (section,) = [n for n in document["robustness"]["norms"] if n["norm"] == norm]
            for attack in section["attacks"]:
                after = attack["robust_accuracy_after"][0]["value"]
                assert float(row[attack["label"]][1]) == after, (norm, attack["label"])
            reliable = section["reliable_robust_accuracy"][0]["value"]
            assert float(row["reliable"][1]) == reliable
            summary = verdicts[rows.index(row)]
            assert float(summary[f"{name} reliable"][1]) == reliable
            assert (
                float(summary[f"{name} PGD-CE"][1])
                == (section["attacks"][0]["robust_accuracy_after"][0]["value"])
            )
    flatness = _rows(parser, "table-flatness")
    for row, document in zip(flatness, raw, strict=True):
        trace = document["flatness"]["hessian_trace"]
        assert float(row["Hessian trace"][1]) == trace["value"]
        assert row["Hessian trace"][0].endswith(f"± {trace['stderr']:.2g}")
        fisher = document["flatness"]["fisher_rao_empirical"]["value"]
        assert float(row["Fisher-Rao (empirical)"][1]) == fisher
    activations = _rows(parser, "table-activations")
    expected = [(d["checkpoint"], layer) for d in raw for layer in d["activations"]]
    assert len(activations) == len(expected) == 4
    for row, (_, layer) in zip(activations, expected, strict=True):
        assert float(row["sparsity"][1]) == layer["zero_fraction"]
        assert float(row["variance"][1]) == pytest.approx(layer["std"] ** 2, rel=1e-12)
    flags = {row["check"][0]: row for row in _rows(parser, "table-red-flags")}
    for number, document in enumerate(raw, 1):
        for finding in document["findings"]:
            cell = next(v for k, v in flags[finding["code"]].items() if k.startswith(f"#{number}"))
            assert cell[0] == compare.STATUS_SHOWN[finding["status"]]


def test_pgd_ce_far_above_the_reliable_accuracy_is_marked(audited, documents):
    parser = _parse(audited[0] / "comparison.html")
    masked, fixed = _rows(parser, "table-verdicts")
    for document, row in ((_json(documents[0]), masked), (_json(documents[1]), fixed)):
        for section in document["robustness"]["norms"]:
            name = compare.NORM_NAMES[section["norm"]]
            # The oracle: PGD-CE's robust count less the reliable one, out of all samples.
            pgd = section["attacks"][0]["robust_accuracy_after"][0]
            reliable = section["reliable_robust_accuracy"][0]
            count = pgd["count"] - reliable["count"]
            low, high = wilson_interval(count, reliable["total"])
            assert float(row[f"{name} gap"][1]) == pytest.approx(count / reliable["total"])
            shown = f"[{low:.3f}, {high:.3f}]"
            if low > compare.FAR_ABOVE:
                shown += f" {compare.FAR_MARK}"
            assert row[f"{name} gap"][0].endswith(shown)
    assert masked["L∞ gap"][0].endswith(compare.FAR_MARK)
    assert not fixed["L∞ gap"][0].endswith(compare.FAR_MARK)
    assert masked["verdict"][0].startswith("suspected gradient masking")
    assert fixed["verdict"][0] == "no sign of gradient masking"


def test_renders_are_byte_identical_and_tables_are_data(documents, tmp_path):
    for name in ("a", "b"):
        assert (
            compare_main(
                [
                    *map(str, documents),
                    "-o",
                    str(tmp_path / name / "c.html"),
                    "--tables",
                    "csv,md",
                    "--quiet",
                ]
            )
            == 0
        )
    first = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert first == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert len(first) == 1 + 2 * 6  # the page, and six tables as CSV and Markdown
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    verdicts = pd.read_csv(tmp_path / "a" / "c.verdicts.csv")
    raw = [_json(path) for path in documents]
    assert list(verdicts["clean accuracy"]) == [d["clean_accuracy"]["value"] for d in raw]
    assert list(verdicts["verdict"]) == [d["verdict"] for d in raw]
    markdown = (tmp_path / "a" / "c.verdicts.md").read_text().splitlines()
    assert markdown[0].startswith("| # | checkpoint | clean accuracy |") and markdown[1].startswith(
        "|---|"
    )
    assert len(markdown) == 2 + len(raw)


def test_like_audits_carry_no_warning(documents, tmp_path, capsys):
    assert compare_main([*map(str, documents), "-o", str(tmp_path / "c.html")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "not run alike" not in (tmp_path / "c.html").read_text()


def _other_samples(data: dict) -> None:
    data["evaluation"]["indices"] = [i + 1000 for i in data["evaluation"]["indices"]]


def _other_preset(data: dict) -> None:
    data["provenance"]["config"]["suite"]["name"] = "standard"


def _other_epsilon(data: dict) -> None:
    data["robustness"]["norms"][0]["epsilons"] = [0.2]


@pytest.mark.parametrize(
    "change, words",
    [
        (_other_samples, "audited on different samples"),
        (_other_preset, "ran different presets or suites"),
        (_other_epsilon, "epsilons differ"),
    ],
)
def test_audits_not_run_alike_are_compared_under_a_visible_warning(
    documents, tmp_path, capsys, change, words
):
    other = _variant(tmp_path, documents[1], "other", change)
    output = tmp_path / "c.html"
    assert compare_main([str(documents[0]), str(other), "-o", str(output)]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and words in err
    parser = _parse(output)
    text = " ".join(" ".join(parser.text).split())
    assert "⚠ Warning: these audits were not run alike" in text and words in text


def test_markup_in_a_document_is_escaped(documents, tmp_path):
    def rename(data: dict) -> None:
        data["provenance"]["checkpoint"] = "models/<script>alert(1)<b>x.pt"
        data["verdict"] = "<img src=x onerror=alert(2)></script>"

    evil = _variant(tmp_path, documents[1], "evil", rename)
    output = tmp_path / "c.html"
    assert compare_main([str(documents[0]), str(evil), "-o", str(output), "--quiet"]) == 0
    page = output.read_text()
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;b&gt;x" in page  # the label: the file's stem
    assert "&lt;img src=x onerror=alert(2)&gt;&lt;/script&gt;" in page
    parser = _parse(output)
    assert "script" not in parser.tags and "img" not in parser.tags


def _fails_with_one_line(argv: list[str], capsys, words: str) -> None:
    try:
        status = compare_main(argv)
    except SystemExit as exit:  # the argument parser's errors
        status = exit.code
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert words in captured.err


def test_bad_input_is_one_line_and_exit_2_and_writes_nothing(documents, tmp_path, capsys):
    unknown = _variant(tmp_path, documents[1], "v9", lambda d: d.update(schema_version="9.0"))
    output = tmp_path / "c.html"
    _fails_with_one_line([str(documents[0]), str(unknown), "-o", str(output)], capsys, "9.0")
    _fails_with_one_line([str(tmp_path / "absent.json"), "-o", str(output)], capsys, "absent")
    _fails_with_one_line([str(documents[0]), "-o", str(output), "--tables", "xlsx"], capsys, "xlsx")
    _fails_with_one_line([str(documents[0]), "-o", str(tmp_path)], capsys, "folder")
    _fails_with_one_line(["-o", str(output)], capsys, "documents")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v9"]


def test_the_comparison_imports_and_runs_without_torch(documents, tmp_path):
    argv = [*map(str, documents), "-o", str(tmp_path / "c.html"), "--quiet"]
    script = (
        "import sys; sys.modules['torch'] = None\n"  # import torch now raises ImportError
        "from commands import compare\n"
        f"status = compare.main({argv!r})\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m]]\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.html").is_file()


def test_a_browser_shows_the_comparison_offline_and_complete(audited):
    require_browser()
    with Browser() as browser:
        page = browser.open(audited[0] / "comparison.html", full_page_height=4000)
    assert page.console_errors == ()
    assert page.requests == ()
    assert page.scripts == 0
    for heading in (
        "Comparison of 2 audits",
        "Verdicts",
        "Robust accuracy under L∞",
        "Robust accuracy under L2",
        "Robustness curves",
        "Red flags",
        "Flatness against robustness",
        "Activation statistics",
    ):
        assert heading in page.headings
    assert "suspected gradient masking" in page.text
    assert "no sign of gradient masking" in page.text
    assert colour_count(page.screenshot_png) > 16
