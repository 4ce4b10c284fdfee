"""Render time and size of the comparison page.

    python -m benchmarks.bench_compare out/zoo/*/audit.json [--repeats 5]

The median wall and CPU time, over the repeats, to read every document (``entries``) and to
render their comparison (``reports.compare.render``), after one warm-up render (imports, fonts
and template compilation are paid once per process), and the page's size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.bench_reports import median_seconds
from reports.compare import entries, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    items = entries(args.documents)
    page = render(items)  # warm-up
    read = median_seconds(lambda: entries(args.documents), args.repeats)
    rendered = median_seconds(lambda: render(items), args.repeats)
    size = sum(path.stat().st_size for path in args.documents)
    print("| documents | documents' size | read: wall / CPU | render: wall / CPU | page size |")
    print("|---|---|---|---|---|")
    print(
        f"| {len(items)} | {size / 1e6:.1f} MB | {read[0]:.2f} / {read[1]:.2f} s | "
        f"{rendered[0]:.2f} / {rendered[1]:.2f} s | {len(page.encode()) / 1e3:.0f} kB |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
