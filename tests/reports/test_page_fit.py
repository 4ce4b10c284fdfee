"""The pages fit a 1280-pixel window and an A4 page, and every finding's evidence stays short.

Real audits of zoo checkpoints (five digits MLPs; four of them again with ten epsilons per
norm; one model broken in each of the ways the zoo does not show), rendered and laid out by
headless Chromium: on screen in a 1280 × 800 window, and with the print stylesheet in a
viewport as wide as an A4 page between its print margins. Nothing may reach past the right
edge (the document scrolls no wider than the window, and no element, table or cell ends
beyond it), and every finding's evidence, unfolded, is under 400 pixels high.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import Browser, require_browser
from report_fixtures import BROKEN, broken, zoo_audits

from core.document import read_result, write_json
from reports import compare
from reports.html import write_report

WINDOW = (1280, 800)
A4_CONTENT = 703
"""CSS pixels between the 12 mm margins of the print stylesheet's A4 page (186 mm)."""
EVIDENCE_HEIGHT = 400
LAYOUTS = {"screen 1280": (WINDOW[0], "screen"), "print A4": (A4_CONTENT, "print")}

MEASURE = r"""
document.querySelectorAll('details').forEach(d => { d.open = true; });
const width = window.innerWidth;
const past = [];
for (const e of document.querySelectorAll('body *')) {
  if (!(e instanceof HTMLElement) && e.tagName.toLowerCase() !== 'svg') continue;
  const r = e.getBoundingClientRect();
  if (r.width > 0 && (r.right > width + 0.5 || r.left < -0.5)) {
    const name = `${e.tagName.toLowerCase()}#${e.id}`;
    past.push(`${name} from ${Math.round(r.left)} to ${Math.round(r.right)}`);
  }
}
return {
  width: width,
  scrollWidth: document.documentElement.scrollWidth,
  past: past.slice(0, 12),
  tables: Array.from(document.querySelectorAll('table')).map(t => t.getBoundingClientRect().right),
  evidence: Array.from(document.querySelectorAll('div.evidence')).map(
    e => [e.closest('tr').id, e.getBoundingClientRect().height]),
};
"""


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with Browser(width=WINDOW[0], height=WINDOW[1]) as opened:
        yield opened


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, Path | None]]:
    """The comparison of each set of audits and the report of every audit in it: the page,
    and the document of a report."""
    folder = tmp_path_factory.mktemp("pages")
    out: dict[str, tuple[Path, Path | None]] = {}
    for kind in ("quick", "many-epsilons"):
        documents = zoo_audits(kind)
        compare.write_comparison(documents, folder / kind / "comparison.html")
        out[f"comparison {kind}"] = (folder / kind / "comparison.html", None)
        for path in documents:
            report = folder / kind / f"{path.parent.name}.html"
            write_report(read_result(path), report)
            out[f"report {kind}/{path.parent.name}"] = (report, path)
    for name in BROKEN:  # evidence the zoo does not show: NaN logits, a random model, ...
        path = folder / "broken" / name / "audit.json"
        path.parent.mkdir(parents=True)
        write_json(path, broken(name))
        out[f"report broken/{name}"] = (
            write_report(read_result(path), path.with_suffix(".html")),
            path,
        )
    return out


def _measure(browser: Browser, page: Path, layout: str) -> dict:
    width, media = LAYOUTS[layout]
    browser.emulate(width, WINDOW[1], media)
    browser.open(page)
    return browser.script(MEASURE)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", ["quick", "many-epsilons"])
def test_the_comparison_fits(browser, pages, kind, layout) -> None:
    measured = _measure(browser, pages[f"comparison {kind}"][0], layout)
    assert measured["width"] == LAYOUTS[layout][0]
    assert measured["scrollWidth"] <= measured["width"], measured["past"]
    assert measured["past"] == []
    assert len(measured["tables"]) >= 8
    assert max(measured["tables"]) <= measured["width"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_report_fits_and_its_evidence_is_short(browser, pages, layout) -> None:
    reports = {name: entry for name, entry in pages.items() if name.startswith("report ")}
    assert len(reports) == 9 + len(BROKEN)
    for name, (page, document) in reports.items():
        measured = _measure(browser, page, layout)
        assert measured["scrollWidth"] <= measured["width"], (name, measured["past"])
        assert measured["past"] == [], name
        assert max(measured["tables"]) <= measured["width"], name
        assert document is not None
        codes = [f"finding-{f.code}" for f in read_result(document).findings if f.evidence]
        assert [row for row, _ in measured["evidence"]] == codes, name
        tall = [(row, round(h)) for row, h in measured["evidence"] if h >= EVIDENCE_HEIGHT]
        assert tall == [], (name, tall)


def test_the_comparison_prints_on_a4(browser, pages) -> None:
    browser.emulate(*WINDOW)
    browser.open(pages["comparison many-epsilons"][0])
    pdf = browser.pdf()
    assert pdf.startswith(b"%PDF")
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)
    assert len(boxes) > 2  # several pages
    for width, height in boxes:  # A4 in points: 595.3 × 841.9
        assert float(width) == pytest.approx(595.3, abs=1.5)
        assert float(height) == pytest.approx(841.9, abs=1.5)
