"""Run a whole suite: every attack × norm × epsilon, the sweep, worst case over attacks.

Per norm, the suite first runs the sweep with nested epsilons on every sample; an attack of
the main list that is the swept attack at an epsilon of the sweep takes its outcomes from
there instead of running again. Then the attacks run in order, each only on the samples still
robust at that epsilon (unless ``skip_broken`` is off), and the robust accuracy after each is
recorded. Last, the independent per-epsilon sweep runs on a random subsample: every epsilon
afresh (not nested), with the swept attack's own early stopping, so a sample stops once it is
broken at that radius (its outcome is decided; the steps after it could only change its last
iterate and its loss trace).

No exception inside one attack stops a suite: an attack that raises is recorded as
``"failed"`` at that norm and epsilon with the error's text, and its samples count as not
attacked; a gradient attack on a model whose output has no input gradient (a cut graph) is
recorded as ``"not-applicable"`` with the reason ``"the input gradient does not exist"``,
while black-box attacks still run.

Logits holding NaN or Inf have no prediction (see ``attacks.engine``): a sample whose clean
logits are not finite is not clean-correct (``clean_nonfinite``), so it is not robust and no
attack runs on it; an attack's example whose logits are not finite never counts as broken, so
the sample stays robust unless another attack breaks it with finite logits; each outcome marks
such samples in its ``nonfinite`` table.

``run_suite`` is a plan and its executor: ``attacks.plan`` lists the stages up front from the
configuration, ``attacks.execute`` runs them in order (``attacks.shards`` runs one stage on
its samples, across batches and processes) and assembles the types of ``attacks.outcomes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import Tensor, nn

from attacks import registry
from attacks.engine import as_generator
from attacks.execute import Progress, execute
from attacks.outcomes import AttackOutcome, NormOutcome, SuiteResult
from attacks.plan import plan_suite
from attacks.presets import SuiteConfig
from attacks.result import AttackResult
from attacks.shards import expected_cost_order, run_attack_spec
from attacks.threat import check_inputs
from torchutil import Memo

__all__ = [
    "ATTACKS",
    "AttackOutcome",
    "NormOutcome",
    "Progress",
    "SuiteResult",
    "expected_cost_order",
    "run_attack_spec",
    "run_suite",
]

ATTACKS: Mapping[str, Callable[..., AttackResult]] = MappingProxyType(
    {kind: registry.get(kind).function for kind in registry.list_attacks()}
)
"""Every attack a suite can name, by ``AttackSpec.kind`` (a read-only view of the registry)."""


def run_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: SuiteConfig,
    generator: torch.Generator | int | None = None,
    *,
    progress: Progress | bool = False,
    memo: Memo[str] | None = None,
) -> SuiteResult:
    """Run every attack of ``config`` under each of its norms, AutoAttack style.

    An attack that raises is recorded as failed where it raised (see the module's
    docstring); the suite goes on.

    Args:
        model: maps inputs ``[N, ...]`` in the bounds to logits ``[N, C]``.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        config: the suite, e.g. ``preset("standard", "mnist")``.
        generator: a ``torch.Generator`` or an int seed (default 0); every stage draws its
            own seed from it, so equal seeds give equal results.
        progress: a callback ``(done, total, label)``, or True for a tqdm bar on stderr.
        memo: keeps each finished stage (one attack at one norm and epsilon, a norm's sweep
            and independent sweep) and returns it instead of running it again, so that an
            interrupted suite resumes (``analysis.resume``). Each stage's generator is drawn
            either way, so the result is that of an uninterrupted run.

    Returns:
        ``SuiteResult``.

    Example:
        >>> result = run_suite(model, x, y, preset("quick", "digits"), generator=0)
        >>> result.norm("linf").robust_accuracy
    """
    check_inputs(x, y, config.bounds)
    gen = as_generator(generator)
    y = y.to(x.device).long()
    plan = plan_suite(config, x.shape[1:])
    return execute(plan, model, x, y, config, gen, progress=progress, memo=memo)
