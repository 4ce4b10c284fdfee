"""Regenerate the README's screenshots with headless Chromium.

    python docs/screenshots.py            # or: make screenshots

Audits the demo's two models with the standard preset (the thesis' plain cross-entropy NormOut
MLP, masked, and its label-smoothed fix) and every zoo model with the quick preset (the MNIST
models need ``ROBAUDIT_DATA``), then photographs the top of each page:

- ``docs/report-masked.png``: the report of ``digits-mlp-normout-spatiotemporal-ce``;
- ``docs/report-unmasked.png``: the report of ``digits-mlp-normout-spatiotemporal``;
- ``docs/comparison-zoo.png``: the comparison of the whole zoo (quick preset).

The audits are written under ``out/screenshots/``; the PNGs are reduced to a 64-colour palette
so that each stays well under 300 KB. Needs Debian's ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reports"))

from browser import Browser, missing  # noqa: E402  (the harness lives with the tests)

ZOO = ROOT / "checkpoints" / "zoo"
MASKED, FIXED = "digits-mlp-normout-spatiotemporal-ce", "digits-mlp-normout-spatiotemporal"


def _audit(out: Path, checkpoints: list[Path], *flags: str) -> None:
    command = [sys.executable, "-m", "analysis.audit", *map(str, checkpoints), "--out", str(out)]
    subprocess.run([*command, "--quiet", *flags], cwd=ROOT, check=True)


def _save(png: bytes, target: Path) -> int:
    """Write ``png`` reduced to a 64-colour palette; returns the size in bytes."""
    with Image.open(io.BytesIO(png)) as image:
        reduced = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    reduced.save(buffer, format="PNG", optimize=True)
    target.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/screenshots.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "screenshots")
    parser.add_argument("--skip-audits", action="store_true", help="reuse the documents in --out")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    demo, zoo = args.out / "demo", args.out / "zoo"
    if not args.skip_audits:
        _audit(demo, [ZOO / f"{MASKED}.pt", ZOO / f"{FIXED}.pt"])
        _audit(zoo, sorted(ZOO.glob("*.pt")), "--preset", "quick")
    pages = {
        "report-masked.png": (demo / MASKED / "report.html", 2200),
        "report-unmasked.png": (demo / FIXED / "report.html", 2200),
        "comparison-zoo.png": (zoo / "comparison.html", 2600),
    }
    with Browser(width=1200, height=900) as browser:
        for name, (page, height) in pages.items():
            report = browser.open(page, full_page_height=height)
            if report.console_errors or report.requests:
                print(f"error: {page}: {report.console_errors} {report.requests}", file=sys.stderr)
                return 1
            size = _save(report.screenshot_png, ROOT / "docs" / name)
            print(f"docs/{name}: {size / 1024:.0f} KB from {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
