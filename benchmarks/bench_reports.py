"""Render time and size of the single-audit report.

    python benchmarks/bench_reports.py out/*/audit.json [--repeats 5]

For each document: the median time to read it (``read_result``) and to render its page
(``reports.html.render``) over the repeats, after one warm-up render (imports, fonts and
template compilation are paid once per process, not per report), and the page's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from reports.document import read_result
from reports.html import render


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| document | document size | read (median) | render (median) | report size |")
    print("|---|---|---|---|---|")
    for path in args.documents:
        result = read_result(path)
        page = render(result)  # warm-up
        read = _median_seconds(lambda path=path: read_result(path), args.repeats)
        rendered = _median_seconds(lambda result=result: render(result), args.repeats)
        print(
            f"| {path} | {path.stat().st_size / 1e3:.0f} kB | {read:.2f} s | {rendered:.2f} s | "
            f"{len(page.encode()) / 1e3:.0f} kB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
