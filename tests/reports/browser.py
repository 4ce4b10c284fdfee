"""A real browser for the report tests: headless Chromium driven through chromedriver.

chromedriver speaks the W3C WebDriver protocol, plain JSON over HTTP, so the standard library
drives it (no selenium). :class:`Browser` starts one chromedriver and one headless Chromium
session; :meth:`Browser.open` loads a file and returns what a reader and a reviewer would check:
the headings, the visible text, the console errors (Chromium's browser log at level SEVERE:
``console.error`` calls, uncaught exceptions, resources that failed to load), every request
the page made beyond itself (Chromium's performance log, ``Network.requestWillBeSent``) and a
PNG screenshot.

Example::

    with Browser() as browser:
        page = browser.open("out/digits-mlp-dropout/report.html")
    assert not page.console_errors and not page.requests

Chromium comes from Debian's ``chromium`` and ``chromium-driver`` packages; :func:`missing`
says why the browser cannot run here, and :func:`require_browser` skips a test for that
reason, or fails it when ``ROBAUDIT_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs
both packages).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "ARGUMENTS",
    "Browser",
    "BrowserError",
    "PageReport",
    "colour_count",
    "missing",
    "require_browser",
]

ARGUMENTS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--hide-scrollbars",
)
"""Chromium's flags: headless, runnable as root in a container, no traffic of its own, and
screenshots as wide as the window (no scroll bar)."""

REQUIRE_VARIABLE = "ROBAUDIT_REQUIRE_BROWSER"

_HEADINGS = "return Array.from(document.querySelectorAll('h1,h2,h3,h4')).map(e => e.innerText)"
_TEXT = "return document.body ? document.body.innerText : ''"
_SCRIPTS = "return document.querySelectorAll('script').length"


class BrowserError(RuntimeError):
    """chromedriver or Chromium could not be started or answered with an error."""


@dataclass(frozen=True)
class PageReport:
    """What one page load showed.

    Attributes:
        url: the ``file://`` URL loaded.
        title: the document's title.
        headings: text of every h1-h4, in document order.
        text: the body's visible text (``innerText``).
        console_errors: messages of the browser log at level SEVERE.
        requests: URLs the page requested beyond itself (``data:`` URLs are inline, not
            requests, and are left out).
        scripts: number of ``<script>`` elements.
        screenshot_png: a PNG of the page (the viewport, or the whole page up to the height
            asked for).
    """

    url: str
    title: str
    headings: tuple[str, ...]
    text: str
    console_errors: tuple[str, ...]
    requests: tuple[str, ...]
    scripts: int
    screenshot_png: bytes


def missing() -> str | None:
    """Why the browser cannot run here (None when chromium and chromedriver are installed)."""
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if absent:
        return (
            f"{' and '.join(absent)} not found on PATH; install Debian's chromium and "
            "chromium-driver (.ci/run does)"
        )
    return None


def require_browser() -> None:
    """Skip the calling test when the browser is absent, or fail it under
    ``ROBAUDIT_REQUIRE_BROWSER=1``."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{REQUIRE_VARIABLE}=1 but {reason}")
    pytest.skip(reason)


def colour_count(png: bytes, limit: int = 256) -> int:
    """How many distinct colours a PNG holds, counted up to ``limit`` (1: a blank image)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        colours = image.convert("RGB").getcolors(maxcolors=limit)
    return limit if colours is None else len(colours)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Browser:
    """One chromedriver process and one headless Chromium session; a context manager."""

    def __init__(self, *, width: int = 1200, height: int = 900, timeout: float = 60.0) -> None:
        self.timeout = timeout
        port = _free_port()
        self._base = f"http://127.0.0.1:{port}"
        self._driver = subprocess.Popen(
            ["chromedriver", f"--port={port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._session: str | None = None
        try:
            self._wait_ready()
            options = {"args": [*ARGUMENTS, f"--window-size={width},{height}"]}
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": options,
                "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
            }
            answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
            self._session = str(answer["sessionId"])
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the session (Chromium quits with it) and stop chromedriver."""
        if self._session is not None:
            with contextlib.suppress(BrowserError):
                self._call("DELETE", f"/session/{self._session}")
            self._session = None
        if self._driver.poll() is None:
            self._driver.terminate()
            try:
                self._driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
                self._driver.wait()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._driver.poll() is not None:
                raise BrowserError(f"chromedriver exited with status {self._driver.returncode}")
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (BrowserError, OSError):
                pass
            time.sleep(0.05)
        raise BrowserError(f"chromedriver did not become ready within {self.timeout} s")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(self._base + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read())["value"]
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}").get("value", {})
            raise BrowserError(
                f"{method} {path}: {detail.get('error', err.code)}: {detail.get('message', '')}"
            ) from None
        except urllib.error.URLError as err:
            raise BrowserError(f"{method} {path}: {err.reason}") from None

    def _session_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self._session}{path}", body)

    def _script(self, script: str) -> Any:
        return self._session_call("POST", "/execute/sync", {"script": script, "args": []})

    def _log(self, kind: str) -> list[dict[str, Any]]:
        return list(self._session_call("POST", "/se/log", {"type": kind}))

    def open(self, path: str | Path, *, full_page_height: int = 0) -> PageReport:
        """Load ``path`` from ``file://`` and report what it showed.

        Args:
            path: an HTML file.
            full_page_height: 0 for a screenshot of the viewport; otherwise the whole page,
                cut at this many CSS pixels.
        """
        url = Path(path).resolve().as_uri()
        self._log("browser")  # reading a log empties it: start from this page alone
        self._log("performance")
        self._session_call("POST", "/url", {"url": url})
        requests = []
        for entry in self._log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                target = str(message["params"]["request"]["url"])
                if target != url and not target.startswith("data:"):
                    requests.append(target)
        errors = [str(e["message"]) for e in self._log("browser") if e.get("level") == "SEVERE"]
        return PageReport(
            url=url,
            title=str(self._session_call("GET", "/title")),
            headings=tuple(str(h).strip() for h in self._script(_HEADINGS)),
            text=str(self._script(_TEXT)),
            console_errors=tuple(errors),
            requests=tuple(requests),
            scripts=int(self._script(_SCRIPTS)),
            screenshot_png=self._screenshot(full_page_height),
        )

    def _screenshot(self, full_page_height: int) -> bytes:
        if not full_page_height:
            return base64.b64decode(self._session_call("GET", "/screenshot"))
        metrics = self._cdp("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": metrics["width"],
            "height": min(metrics["height"], full_page_height),
            "scale": 1,
        }
        shot = self._cdp(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        return base64.b64decode(shot["data"])

    def _cdp(self, command: str, params: dict[str, Any]) -> Any:
        return self._session_call("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def emulate(self, width: int, height: int = 800, media: str = "screen") -> None:
        """Lay the pages out in a viewport of ``width`` × ``height`` CSS pixels for ``media``
        (``screen``, or ``print`` for the print stylesheet), until the next call; the page
        open now is laid out again at once."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self._cdp("Emulation.setDeviceMetricsOverride", metrics)
        self._cdp("Emulation.setEmulatedMedia", {"media": media})

    def script(self, script: str) -> Any:
        """Run ``script`` (a function body) in the page and return what it returns."""
        return self._script(script)

    def pdf(self) -> bytes:
        """The page printed to PDF as Chromium prints it, on the paper its ``@page`` rule asks
        for."""
        printed = self._cdp("Page.printToPDF", {"preferCSSPageSize": True, "printBackground": True})
        return base64.b64decode(printed["data"])
