"""The browser harness catches what it is meant to catch, on pages written by hand."""

from __future__ import annotations

import io

import pytest
from browser import Browser, colour_count, require_browser
from PIL import Image

GOOD = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>good</title>
<style>body {{ font-family: sans-serif; }} h1 {{ color: #234; }}</style></head>
<body><h1>Verdict</h1><p>no sign of gradient masking</p><h2>Robust accuracy</h2>
<svg width="120" height="60" role="img" aria-label="bar"><rect width="80" height="40"
fill="#c33"/></svg><img alt="dot" src="data:image/png;base64,{dot}"></body></html>"""
# One transparent pixel, inline: a data: URL is part of the file, not a request.
DOT = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAC"
    "hwGA60e6kgAAAABJRU5ErkJggg=="
)

BAD = """<!doctype html><html><head><title>bad</title>
<link rel="stylesheet" href="https://example.invalid/style.css"></head>
<body><h1>Leaky</h1><img alt="x" src="http://example.invalid/pixel.png">
<script>console.error("boom from the page"); undefined_function();</script></body></html>"""

BLANK = "<!doctype html><html><head><title>blank</title></head><body></body></html>"


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with Browser() as opened:
        yield opened


def test_a_self_contained_page_passes_every_check(browser, tmp_path):
    path = tmp_path / "good.html"
    path.write_text(GOOD.format(dot=DOT))
    page = browser.open(path)
    assert page.title == "good"
    assert page.headings == ("Verdict", "Robust accuracy")
    assert "no sign of gradient masking" in page.text
    assert page.console_errors == ()
    assert page.requests == ()
    assert page.scripts == 0
    assert page.screenshot_png.startswith(b"\x89PNG")
    assert colour_count(page.screenshot_png) > 2


def test_external_requests_and_console_errors_are_caught(browser, tmp_path):
    path = tmp_path / "bad.html"
    path.write_text(BAD)
    page = browser.open(path)
    assert set(page.requests) == {
        "https://example.invalid/style.css",
        "http://example.invalid/pixel.png",
    }
    errors = " ".join(page.console_errors)
    assert "boom from the page" in errors
    assert "undefined_function" in errors
    assert "example.invalid" in errors  # the failed loads are errors too
    assert page.scripts == 1


def test_each_page_reports_only_its_own_errors(browser, tmp_path):
    (tmp_path / "bad.html").write_text(BAD)
    (tmp_path / "good.html").write_text(GOOD.format(dot=DOT))
    browser.open(tmp_path / "bad.html")
    page = browser.open(tmp_path / "good.html")
    assert page.console_errors == () and page.requests == ()


def test_a_blank_page_has_one_colour_and_full_page_screenshots_follow_the_content(
    browser, tmp_path
):
    (tmp_path / "blank.html").write_text(BLANK)
    assert colour_count(browser.open(tmp_path / "blank.html").screenshot_png) == 1
    tall = "<!doctype html><title>tall</title><div style='height:3000px;background:#abc'></div>"
    (tmp_path / "tall.html").write_text(tall)
    png = browser.open(tmp_path / "tall.html", full_page_height=2000).screenshot_png
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (1200, 2000)


REPORT_HEADINGS = (
    "Verdict",
    "Robust accuracy",
    "Robustness curves",
    "Who broke what",
    "Red flags",
    "Flatness",
    "Activation statistics",
    "Adversarial examples",
    "Provenance",
)


@pytest.mark.parametrize(
    "name, verdict, extra",
    [
        ("honest", "no sign of gradient masking", ()),
        ("masked", "suspected gradient masking", ("Diagnosis",)),
    ],
)
def test_a_browser_shows_a_report_offline_and_complete(browser, tmp_path, name, verdict, extra):
    from report_fixtures import result

    from reports.html import write_report

    audited = result(name)
    page = browser.open(write_report(audited, tmp_path / "report.html"), full_page_height=3000)
    assert page.console_errors == ()
    assert page.requests == ()
    assert page.scripts == 0
    for heading in (*REPORT_HEADINGS, *extra):
        assert heading in page.headings, (heading, page.headings)
    assert audited.verdict.startswith(verdict) and audited.verdict in page.text
    assert colour_count(page.screenshot_png) > 16
