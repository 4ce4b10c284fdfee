"""FAB (Croce and Hein, 2020): AutoAttack's minimum-norm attack, through pyautoattack.

FAB does not climb a loss inside the ball: from the clean input it repeatedly linearises the
decision boundary between the true class and a target class, projects onto that hyperplane
(and the box) and steps slightly beyond it, mixing the step with one from the clean input
(``alpha_max`` 0.1, overshoot ``eta`` 1.05) and pulling back towards the clean input
(``beta`` 0.9) after each success, so that it ends at the smallest perturbation it found. A
sample counts as broken when that perturbation is within epsilon. Its steps are not bounded by
epsilon, and they follow the linearised margin rather than the loss, so it finds the way
through where a fixed-step loss attack stalls: on an MNIST network adversarially trained at
L∞ 0.3 and attacked at L2 2.0, PGD and Square leave robust samples that FAB breaks.

AutoAttack's standard version runs FAB-T: targeted (toward each of the 9 most likely wrong
classes at the clean input in turn, on the samples the earlier targets left robust), one run
per target from the clean input, 100 iterations. This is pyautoattack's ``FABAttack_PT`` with
those settings (``perturb``, its whole loop, unchanged); its only change is that gradients are
taken with ``torch.autograd.grad``, with the same values, where pyautoattack's ``backward``
would also fill the ``.grad`` of the model's parameters.

With one run (``num_restarts=1``) FAB draws nothing: every step is a deterministic, per-sample
function of that sample's input and the model, so a sample's result does not depend on its
batch (``registry.batch_independent``). More runs start from random points drawn by
pyautoattack from torch's global RNG per batch, and do depend on the batch. It runs under a
forked RNG, so the caller's global state is untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attacks.call import library_batch, library_seed, prepare, pyautoattack_norm
from attacks.engine import Batch, BatchResult
from attacks.result import AttackResult
from attacks.threat import Bounds, Norm


@functools.cache
def fab_runner() -> type:
    """pyautoattack's ``FABAttack_PT`` with its gradients taken by ``torch.autograd.grad``
    (same values; the parameters' ``.grad`` stay as they were)."""
    from pyautoattack.fab_pt import FABAttack_PT

    class FAB(FABAttack_PT):  # type: ignore[misc]
        def get_diff_logits_grads_batch(self, imgs: Tensor, la: Tensor) -> tuple[Tensor, Tensor]:
            im = imgs.clone().requires_grad_()
            with torch.enable_grad():
                y = self.predict(im)
            g2 = torch.zeros([y.shape[-1], *imgs.size()]).to(self.device)
            grad_mask = torch.zeros_like(y)
            for counter in range(y.shape[-1]):
                grad_mask[:, counter] = 1.0
                (g2[counter],) = torch.autograd.grad(y, im, grad_mask, retain_graph=True)
                grad_mask[:, counter] = 0.0
            g2 = torch.transpose(g2, 0, 1).detach()
            y2 = y.detach()
            rows = torch.arange(imgs.shape[0])
            df = y2 - y2[rows, la].unsqueeze(1)
            dg = g2 - g2[rows, la].unsqueeze(1)
            df[rows, la] = 1e10
            return df, dg

        def get_diff_logits_grads_batch_targeted(
            self, imgs: Tensor, la: Tensor, la_target: Tensor
        ) -> tuple[Tensor, Tensor]:
            rows = torch.arange(imgs.shape[0])
            im = imgs.clone().requires_grad_()
            with torch.enable_grad():
                y = self.predict(im)
                diffy = -(y[rows, la] - y[rows, la_target])
                (graddiffy,) = torch.autograd.grad(diffy.sum(), im)
            return diffy.detach().unsqueeze(1), graddiffy.unsqueeze(1)

    return FAB


def fab(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    norm: Norm | str = Norm.LINF,
    targeted: bool = True,
    num_steps: int = 100,
    num_restarts: int = 1,
    num_target_classes: int = 9,
    nested: bool = True,
    bounds: Bounds | Sequence[float] = (0.0, 1.0),
    batch_size: int | None = None,
    stochastic: bool = False,
    generator: torch.Generator | int | None = None,
    sample_ids: Tensor | None = None,
) -> AttackResult:
    """FAB, as AutoAttack's standard version runs it by default (FAB-T).

    Args:
        model: maps inputs ``[N, ...]`` in ``[0, 1]`` to logits ``[N, C]``; float32.
        x: clean inputs ``[N, ...]``; never modified.
        y: true labels ``[N]``.
        epsilons: ascending, non-negative radii; a sample is broken when FAB's smallest
            adversarial perturbation is within the radius.
        norm: ``"linf"`` or ``"l2"``.
        targeted: FAB-T, toward each of the ``num_target_classes`` most likely wrong classes
            in turn; False: untargeted FAB (the closest boundary of any class).
        num_steps: iterations per run.
        num_restarts: runs per target; the first starts at the clean input, the others at
            random points (drawn per batch from torch's global RNG).
        num_target_classes: targets tried by FAB-T (at most ``C - 1``).
        nested: a sample broken at a smaller epsilon keeps that example at larger ones.
        bounds: must be ``(0, 1)``.
        batch_size: samples per batch; None for all at once.
        stochastic: evaluate the model in train mode (batch norm excepted).
        generator: a ``torch.Generator`` or an int seed (default 0); seeds the random starts of
            runs after the first.
        sample_ids: int64 ``[N]``, distinct: the samples' identities (checked; with one run
            nothing is drawn, so a sample's result is its own whatever its batch).

    Returns:
        ``AttackResult`` with ``T = 0`` (the final margin loss only); ``success_step`` is
        ``STEP_UNKNOWN`` (-2) for every broken sample, as pyautoattack returns only the
        examples.
    """
    call = prepare(model, x, y, epsilons, (norm, bounds), (generator, sample_ids), unit_box="FAB")
    config = call.config
    runner_class = fab_runner()

    def attack(batch: Batch) -> BatchResult:
        wrapper, seed = library_seed(config)
        classes = min(num_target_classes, batch.clean_logits.shape[1] - 1)
        runner: Any = runner_class(
            wrapper,
            norm=pyautoattack_norm(config.norm),
            n_restarts=num_restarts,
            n_iter=num_steps,
            eps=float(batch.eps[0]),
            seed=seed,
            targeted=targeted,
            device=x.device,
            n_target_classes=classes,
        )
        return library_batch(config, batch, lambda: runner.perturb(batch.x0, batch.y))

    return call.run_library(
        "fab-t" if targeted else "fab",
        attack,
        engine=(nested, batch_size, stochastic),
        params={
            "targeted": targeted,
            "num_steps": num_steps,
            "num_restarts": num_restarts,
            "num_target_classes": num_target_classes,
            "nested": nested,
        },
    )
