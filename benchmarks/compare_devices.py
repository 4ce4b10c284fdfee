"""One zoo model audited on two devices (the CPU and a GPU): are the documents the same?

Runs ``python -m analysis.audit`` on each device with the same seed, preset and fixed batch
size (so no batch depends on a device's memory), then compares the two ``audit.json``.
Every random draw is made on the CPU and moved to the model's device, so both audits attack
from the same starts and estimate flatness from the same probes and mini-batches; they differ
by the rounding of another device's kernels, which an attack can amplify for a sample on the
decision boundary and Lanczos for eigenvalues below its tolerance. Printed:

- every field that differs beyond a relative 10⁻⁴ and an absolute 10⁻⁵ (the first 40, and a
  count per section), times, hosts, devices and the memory behind batch sizes left out;
- the figures side by side: clean accuracy, each norm's reliable robust accuracy, and every
  flatness figure with its standard error;
- the verdict, against stated tolerances: the same clean-correct samples; reliable robust
  accuracy counts within ``max(1, 0.5 %)`` of the samples; every flatness figure within three
  of its combined standard errors (the top eigenvalues within their residual bounds plus 10⁻⁴
  of the value). Exit status 0 when all hold, 1 when one does not, 2 for bad input.

    python -m benchmarks.compare_devices digits-mlp-normout-spatiotemporal --out out/devices
    python -m benchmarks.compare_devices digits-mlp-dropout --devices cpu,cpu   # a dry run
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from analysis.documentdiff import differences, without_timings

ZOO = Path(__file__).resolve().parents[1] / "checkpoints" / "zoo"
REL_TOL, ABS_TOL = 1e-4, 1e-5
FIGURES = ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace", "epsilon_sharpness")


def audit(checkpoint: str, device: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Runs the audit on ``device`` into ``out`` and returns its document."""
    command = [
        sys.executable,
        "-m",
        "analysis.audit",
        checkpoint,
        "--device",
        device,
        "--preset",
        args.preset,
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
        "--quiet",
    ]
    if args.num_samples is not None:
        command += ["--num-samples", str(args.num_samples)]
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    print(f"  {device}: {time.perf_counter() - start:.1f} s, exit status {completed.returncode}")
    if completed.returncode not in (0, 1):
        raise SystemExit(f"error: the audit on {device} failed:\n{completed.stderr[-3000:]}")
    found = sorted(out.glob("*/audit.json"))
    if len(found) != 1:
        raise SystemExit(f"error: expected one audit.json under {out}, found {len(found)}")
    return json.loads(found[0].read_text())


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The document less what differs between machines: times, host, device, command line
    and the memory behind the batch sizes."""
    document = without_timings(document)
    for key in ("host", "device", "command_line", "versions"):
        document["provenance"].pop(key, None)
    return document


def compare(first: dict[str, Any], second: dict[str, Any], names: tuple[str, str]) -> bool:
    """Prints the comparison of two documents; True when every tolerance holds."""
    found = differences(_comparable(first), _comparable(second), REL_TOL, abs_tol=ABS_TOL)
    sections = Counter(line.split("/")[1].split(":")[0] for line in found)
    print(
        f"\n{len(found)} fields differ beyond relative {REL_TOL:g} and absolute {ABS_TOL:g}"
        + (f" (by section: {dict(sections)})" if found else "")
    )
    for line in found[:40]:
        print(f"    {line[:200]}")
    held = True
    left, right = names
    print(f"\n{'figure':44s} {left:>22s} {right:>22s}")
    same_clean = first["clean_correct"] == second["clean_correct"]
    held &= same_clean
    print(
        f"{'clean accuracy':44s} {first['clean_accuracy']['value']:22.4f} "
        f"{second['clean_accuracy']['value']:22.4f}  same samples: {same_clean}"
    )
    total = first["evaluation"]["num_samples"]
    allowed = max(1, math.floor(0.005 * total))
    for a, b in zip(first["robustness"]["norms"], second["robustness"]["norms"], strict=True):
        for k, epsilon in enumerate(a["epsilons"]):
            x, y = a["reliable_robust_accuracy"][k], b["reliable_robust_accuracy"][k]
            ok = abs(x["count"] - y["count"]) <= allowed
            held &= ok
            print(
                f"{'reliable ' + a['norm'] + f' eps {epsilon:.4g}':44s} {x['value']:22.4f} "
                f"{y['value']:22.4f}  within {allowed} samples: {ok}"
            )
    for mode, ours, theirs in (
        ("eval", first["flatness"], second["flatness"]),
        (
            "layers active",
            (first["flatness"] or {}).get("active_layers"),
            (second["flatness"] or {}).get("active_layers"),
        ),
    ):
        if ours is None or theirs is None:
            continue
        for name in FIGURES:
            a, b = ours.get(name), theirs.get(name)
            if a is None or b is None:
                continue
            combined = math.hypot(a["stderr"] or 0.0, b["stderr"] or 0.0)
            ok = abs(a["value"] - b["value"]) <= 3 * combined + 1e-4 * abs(b["value"])
            held &= ok
            print(
                f"{mode + ' ' + name:44s} {a['value']:>13.6g} ± {a['stderr'] or 0:<6.2g} "
                f"{b['value']:>13.6g} ± {b['stderr'] or 0:<6.2g}  within 3 SE: {ok}"
            )
        top, other = ours.get("hessian_eigenvalues"), theirs.get("hessian_eigenvalues")
        if top is not None and other is not None:
            for i, (p, q) in enumerate(zip(top["eigenvalues"], other["eigenvalues"], strict=True)):
                bound = top["residual_norms"][i] + other["residual_norms"][i] + 1e-4 * abs(q)
                ok = abs(p - q) <= bound
                held &= ok
                print(f"{mode + f' eigenvalue {i + 1}':44s} {p:22.6g} {q:22.6g}  within: {ok}")
    print(f"\nverdict: {'the documents agree' if held else 'THE DOCUMENTS DISAGREE'}")
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("model", help="a zoo name (checkpoints/zoo/NAME.pt) or a .pt path")
    parser.add_argument("--devices", default="cpu,cuda", help="two devices (default cpu,cuda)")
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--num-samples", type=int, default=None, help="default: the audit's")
    parser.add_argument("--batch-size", type=int, default=500, help="fixed on both devices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/compare-devices"))
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",")]
    if len(devices) != 2 or any(d not in ("cpu", "cuda") for d in devices):
        print(f"error: --devices takes two of cpu, cuda, got {args.devices!r}", file=sys.stderr)
        return 2
    path = args.model if args.model.endswith(".pt") else str(ZOO / f"{args.model}.pt")
    if not Path(path).is_file():
        print(f"error: no checkpoint at {path}; give a zoo name or a .pt file", file=sys.stderr)
        return 2
    print(
        f"{Path(path).stem}, preset {args.preset}, batch size {args.batch_size}, seed {args.seed}"
    )
    documents = [
        audit(path, device, args.out / f"{index}-{device}", args)
        for index, device in enumerate(devices)
    ]
    return 0 if compare(documents[0], documents[1], (devices[0], devices[1])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
