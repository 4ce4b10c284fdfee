"""AutoAttack on the samples of a finished audit: is the audit's robust accuracy too high?

For a large model a full second run of the audit's suite next to AutoAttack
(``bench_autoattack``) costs hours on a CPU. This reads an ``audit.json`` instead, takes the
same test samples (the audit's seeded selection, checked against the document's indices; the
first ``--num-samples`` of them, or with ``--survivors`` only those the audit left robust),
runs pyautoattack's standard AutoAttack on them at each norm's first epsilon, and prints, per
norm, the audit's reliable robust accuracy on those samples (its per-sample worst case over
every attack, from the document), AutoAttack's, the samples only one of them broke, the exact
one-sided McNemar p-value that AutoAttack breaks more, and the 95 % paired interval of
audit − AutoAttack.

    python -m benchmarks.autoattack_on_document out/model_test/audit.json --num-samples 100 \\
        --arch resnet18 --dataset cifar10 --data DATA [--device cuda]

The checkpoint is the document's (``provenance.checkpoint``) unless ``--checkpoint`` names
it; the checkpoint-description flags are the audit's. Exit status 0 when no norm shows a
significant excess of the audit over AutoAttack (p ≥ 0.05), 1 when one does, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from analysis.pipeline import evaluation_set
from attacks import Norm
from benchmarks.bench_autoattack import ALPHA, PairedOutcome, run_autoattack
from checkpoints import load_checkpoint
from commands.description import (
    add_description_arguments,
    description_from_arguments,
    say_flag_notes,
)
from core.document import read_result
from torchutil import full_precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("document", type=Path, help="the audit's audit.json")
    parser.add_argument("--checkpoint", type=Path, help="default: the document's checkpoint")
    parser.add_argument("--data", help="the dataset the audit read (its --data)")
    parser.add_argument("--num-samples", type=int, help="the first N samples (default all)")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="only the samples the audit left robust under some norm (after --num-samples)",
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="where AutoAttack runs"
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="AutoAttack's seed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    add_description_arguments(parser)
    args = parser.parse_args(argv)
    result = read_result(args.document)
    if result.provenance.config is None:
        print(f"error: {args.document} is a baseline, not a full audit result", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda: no CUDA device is available; use --device cpu", file=sys.stderr
        )
        return 2
    torch.set_num_threads(args.threads)
    path = args.checkpoint or Path(result.provenance.checkpoint)
    loaded = load_checkpoint(path, description_from_arguments(args), trust=args.trust_checkpoint)
    say_flag_notes(loaded)
    model = loaded.model.eval().to(args.device)
    evaluation = evaluation_set(
        loaded, args.data, result.evaluation.num_samples, result.provenance.seed
    )
    if tuple(evaluation.indices.tolist()) != tuple(result.evaluation.indices or ()):
        print(
            f"error: the samples of {path} with --data {args.data} are not those of "
            f"{args.document}; give the --data and description flags the audit had",
            file=sys.stderr,
        )
        return 2
    count = min(args.num_samples or len(evaluation.y), len(evaluation.y))
    chosen = torch.arange(count)
    if args.survivors:
        robust = torch.zeros(count, dtype=torch.bool)
        for norm_result in result.robustness.norms:
            robust |= torch.tensor(norm_result.robust[0][:count])
        chosen = robust.nonzero().squeeze(1)
        if chosen.numel() == 0:
            print(f"the audit left no sample robust among the first {count}")
            return 0
    count = chosen.numel()
    x, y = evaluation.x[chosen].to(args.device), evaluation.y[chosen].to(args.device)
    figures: dict[str, object] = {
        "document": str(args.document),
        "samples": count,
        "positions": chosen.tolist(),
    }
    excess = False
    for norm_result in result.robustness.norms:
        norm = Norm.parse(norm_result.norm)
        epsilon = norm_result.epsilons[0]
        audit = torch.tensor(norm_result.robust[0])[chosen]
        start = time.perf_counter()
        # In full float32, as the audit runs (TF32 convolutions are cuDNN's default on a GPU).
        with full_precision(x.device):
            run = run_autoattack(model, x, y, norm, epsilon, args.seed, args.batch_size)
        paired = PairedOutcome.of(audit, run.robust.cpu())
        low, high = paired.interval
        significant = paired.p_value < ALPHA
        excess |= significant
        flag = "  SIGNIFICANT EXCESS" if significant else ""
        print(
            f"{norm.value} eps {epsilon:.4g}, {count} samples: robust accuracy audit "
            f"{paired.audit_robust:.4f}, AutoAttack {paired.autoattack_robust:.4f} "
            f"({time.perf_counter() - start:.0f} s); only the audit broke {paired.only_audit}, "
            f"only AutoAttack broke {paired.only_autoattack}; McNemar p (AutoAttack stronger) "
            f"{paired.p_value:.3g}; audit - AutoAttack 95 % paired interval "
            f"[{100 * low:+.2f}, {100 * high:+.2f}] pp{flag}"
        )
        figures[norm.value] = {
            "epsilon": epsilon,
            "audit_robust_accuracy": paired.audit_robust,
            "autoattack_robust_accuracy": paired.autoattack_robust,
            "only_audit": paired.only_audit,
            "only_autoattack": paired.only_autoattack,
            "p_value": paired.p_value,
            "interval": [low, high],
            "autoattack_robust_after": run.robust_after,
            "autoattack_wall_s": run.wall_time,
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if excess else 0


if __name__ == "__main__":
    raise SystemExit(main())
