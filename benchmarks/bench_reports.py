"""Render time and size of the single-audit report.

    python benchmarks/bench_reports.py out/*/audit.json [--repeats 5]

For each document: the median wall and CPU time to read it (``read_result``) and to render its page
(``reports.html.render``) over the repeats, after one warm-up render (imports, fonts and
template compilation are paid once per process, not per report), and the page's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from core.document import read_result
from reports.html import render


def median_seconds(function, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``function()``: on a shared machine the CPU time is the
    steadier figure."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("documents", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print("| document | document size | read: wall / CPU | render: wall / CPU | report size |")
    print("|---|---|---|---|---|")
    for path in args.documents:
        result = read_result(path)
        page = render(result)  # warm-up
        read = median_seconds(lambda path=path: read_result(path), args.repeats)
        rendered = median_seconds(lambda result=result: render(result), args.repeats)
        print(
            f"| {path} | {path.stat().st_size / 1e3:.0f} kB | {read[0]:.2f} / {read[1]:.2f} s | "
            f"{rendered[0]:.2f} / {rendered[1]:.2f} s | {len(page.encode()) / 1e3:.0f} kB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
