"""Audit the validation family and print expected against observed flags, and the audit's
reliable robust accuracy against AutoAttack's on the same samples.

Run from the repository root::

    ROBAUDIT_DATA=... python tests/analysis/validation_report.py [--preset standard]
        [--num-samples 1000] [--models digits-mlp,digits-jpeg] [--json results.json]

Trained weights and AutoAttack's results are cached (default: pytest's cache folder), so a
second run audits again but trains and runs AutoAttack only for what changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parents[1]), str(_HERE)]

import torch  # noqa: E402
from family_audit import Observation, default_cache, observe  # noqa: E402
from family_expected import EXPECTED, Expected, observed_flags  # noqa: E402
from family_training import RECIPES  # noqa: E402


def _expected_text(expected: Expected) -> str:
    parts = []
    if expected.must_fail:
        parts.append("fail: " + ", ".join(sorted(expected.must_fail)))
    if expected.must_flag:
        parts.append("flag: " + ", ".join(sorted(expected.must_flag)))
    return "; ".join(parts) or "none"


def _bound_text(observation: Observation) -> str:
    parts = []
    version = EXPECTED[observation.name].autoattack
    for norm, bound in observation.bounds.items():
        low, high = bound.interval
        parts.append(
            f"{norm} {bound.audit:.3f} vs {bound.autoattack:.3f}"
            f"{' (rand)' if version == 'rand' else ''} "
            f"(+{bound.only_audit_robust}/-{bound.only_autoattack_robust}, "
            f"{low:+.3f}..{high:+.3f})"
        )
    return "; ".join(parts) or "-"


def _reference_text(observation: Observation) -> str:
    parts = []
    for norm, reference in observation.references.items():
        parts.append(
            f"{norm} PGD {float(reference.pgd_robust.double().mean()):.3f} → AA "
            f"{float(reference.autoattack_robust.double().mean()):.3f}"
            + (" (Square only)" if reference.autoattack_version != "standard" else "")
            + (" overstated" if reference.overstated else "")
        )
    return "; ".join(parts) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--models", help="comma-separated members (default: all)")
    parser.add_argument("--cache", type=Path, default=default_cache())
    parser.add_argument("--out", type=Path, default=Path("out/validation-family"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-references", action="store_true", help="skip AutoAttack")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    names = list(RECIPES) if args.models is None else args.models.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown members {unknown}; expected some of {list(RECIPES)}")
    print(
        "| model | kind | must raise | expected verdict | observed flags | observed verdict "
        "| as expected | audit vs AutoAttack (reliable vs AA, discordant, 95 % interval) "
        "| torchattacks PGD-CE → AutoAttack | audit time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = 0
    results = []
    for name in names:
        observation = observe(
            name,
            args.cache,
            args.out,
            args.preset,
            args.num_samples,
            references=not args.no_references,
        )
        expected = EXPECTED[name]
        problems = observation.problems()
        failures += bool(problems)
        document = observation.document
        observed = observed_flags(document) if document else observation.status
        verdict = document["verdict"] if document else "crashed"
        print(
            f"| {name} | {expected.kind} | {_expected_text(expected)} | "
            f"{' or '.join(expected.verdicts)} | {observed} | {verdict} | "
            f"{'yes' if not problems else 'NO: ' + '; '.join(problems)} | "
            f"{_bound_text(observation)} | {_reference_text(observation)} | "
            f"{observation.seconds:.0f} s |",
            flush=True,
        )
        results.append(
            {
                "model": name,
                "kind": expected.kind,
                "reason": expected.reason,
                "observed": observed,
                "verdict": verdict,
                "problems": problems,
                "bounds": {
                    norm: {
                        "audit": b.audit,
                        "autoattack": b.autoattack,
                        "only_audit_robust": b.only_audit_robust,
                        "only_autoattack_robust": b.only_autoattack_robust,
                        "interval": list(b.interval),
                    }
                    for norm, b in observation.bounds.items()
                },
                "references": {
                    norm: {
                        "pgd": float(r.pgd_robust.double().mean()),
                        "autoattack": float(r.autoattack_robust.double().mean()),
                        "version": r.autoattack_version,
                        "overstated": r.overstated,
                        "seconds": r.seconds,
                    }
                    for norm, r in observation.references.items()
                },
                "audit_seconds": observation.seconds,
            }
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(f"\n{len(names) - failures} of {len(names)} members as expected", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
