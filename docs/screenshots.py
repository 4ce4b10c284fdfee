"""Regenerate the README's screenshots with headless Chromium.

    python docs/screenshots.py            # or: make screenshots

Audits the demo's two models with the standard preset (the thesis' plain cross-entropy NormOut
MLP, masked, and its label-smoothed fix) and every zoo model with ``--zoo-preset`` (standard
by default, 15 to 30 minutes on 2 cores; the MNIST models need ``ROBAUDIT_DATA``), renders
the pages with the current code and photographs the top of each:

- ``docs/report-masked.png``: the report of ``digits-mlp-normout-spatiotemporal-ce``;
- ``docs/report-unmasked.png``: the report of ``digits-mlp-normout-spatiotemporal``;
- ``docs/comparison-zoo.png``: the comparison of the whole zoo;
- ``out/screenshots/zoo/table.md`` (also printed): the README's table of what the audit finds
  in the zoo.

Under the quick preset (10 PGD steps) the MNIST LeNet-5s with dropout and QSD raise
``margin-loss-beats-cross-entropy`` (PGD-CE has not converged), so the README's picture uses
the standard one.

The audits are written under ``out/screenshots/``; the PNGs are reduced to a 64-colour palette
so that each stays well under 300 KB. Needs Debian's ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reports")]

from browser import Browser, missing  # noqa: E402  (the harness lives with the tests)

from core.document import AuditResult, read_result  # noqa: E402
from reports.tables import alone_accuracy  # noqa: E402

ZOO = ROOT / "checkpoints" / "zoo"
MASKED, FIXED = "digits-mlp-normout-spatiotemporal-ce", "digits-mlp-normout-spatiotemporal"


def _run(*command: str) -> None:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # small models: one thread is fastest
    subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=environment, check=True)


def _audit(out: Path, checkpoints: list[Path], *flags: str) -> None:
    _run("analysis.audit", *map(str, checkpoints), "--out", str(out), "--quiet", *flags)


def _save(png: bytes, target: Path) -> int:
    """Write ``png`` reduced to a 64-colour palette; returns the size in bytes."""
    with Image.open(io.BytesIO(png)) as image:
        reduced = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    reduced.save(buffer, format="PNG", optimize=True)
    target.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def _flagged(result: AuditResult) -> str:
    """The verdict, with the checks that failed named (warnings left out)."""
    names = ", ".join(f.code.replace("-", " ") for f in result.findings if f.status == "fail")
    if not names:
        return result.verdict
    if result.verdict.endswith(")"):
        return f"{result.verdict[:-1]}: {names})"
    return f"{result.verdict} ({names})"


def zoo_table(documents: list[str]) -> str:
    """The README's zoo table: per checkpoint, PGD-CE alone and the reliable worst case per
    norm, the empirical Fisher-Rao norm in eval mode and with the dropout-family layers
    active, and the verdict with the checks that failed."""
    lines = [
        "| checkpoint | L∞ PGD-CE → reliable | L2 PGD-CE → reliable "
        "| Fisher-Rao² eval / layers active | verdict |",
        "|---|---|---|---|---|",
    ]
    for path in documents:
        result = read_result(path)
        cells = [Path(path).parent.name]
        for norm in ("linf", "l2"):
            section = result.norm(norm)
            alone = alone_accuracy(result, section.attack("pgd-ce"), 0)
            reliable = section.reliable_robust_accuracy[0].value
            shown = "–" if alone is None or alone.value is None else f"{alone.value:.3f}"
            cells.append(f"{shown} → {reliable:.3f}")
        flat = result.flatness
        active = flat.active_layers if flat else None
        figures = [
            f"{m.fisher_rao_empirical.value:.3g}" if m and m.fisher_rao_empirical else "–"
            for m in (flat, active)
        ]
        cells.append(" / ".join(figures))
        cells.append(_flagged(result))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/screenshots.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "screenshots")
    parser.add_argument(
        "--zoo-preset",
        choices=("standard", "quick"),
        default="standard",
        help="preset of the zoo's audits (standard: 15 to 30 minutes on 2 cores; quick: 3)",
    )
    parser.add_argument(
        "--skip-audits", action="store_true", help="re-render the documents already in --out"
    )
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    demo, zoo = args.out / "demo", args.out / "zoo"
    if not args.skip_audits:
        _audit(demo, [ZOO / f"{MASKED}.pt", ZOO / f"{FIXED}.pt"])
        _audit(zoo, sorted(ZOO.glob("*.pt")), "--preset", args.zoo_preset, "--no-report")
    for name in (MASKED, FIXED):  # the pages of the current code, even from older documents
        _run("reports.html", str(demo / name / "audit.json"))
    documents = sorted(str(path) for path in zoo.glob("*/audit.json"))
    _run("reports.compare", *documents, "-o", str(zoo / "comparison.html"), "--quiet")
    table = zoo_table(documents)
    (zoo / "table.md").write_text(table, encoding="utf-8")
    print(table)
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
