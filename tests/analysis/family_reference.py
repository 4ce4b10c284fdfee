"""Ground truth for the validation family from other people's code only: torchattacks' PGD-CE
against pyautoattack's AutoAttack on the audit's own samples, and the audit's reliable robust
accuracy against AutoAttack's.

AutoAttack's per-sample results are cached in a folder keyed by the model and the samples
(pytest's cache folder in the tests), never in the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from family_training import FAMILY_VERSION
from scipy.stats import binomtest
from torch import Tensor, nn


def _material(count: int, base: int) -> bool:
    """At least 5 samples and a fifth of ``base`` (the samples PGD-CE left robust)."""
    return count >= max(5, 0.2 * base)


@dataclass(frozen=True)
class Reference:
    """Independent attacks on one model, one norm and epsilon, on the audit's samples.

    Attributes:
        norm: ``linf`` or ``l2``.
        epsilon: the radius.
        pgd_robust: torchattacks PGD-CE (100 steps of 0.1 epsilon, random start) left the
            sample correctly classified [N]; clean-correct samples when the model has no input
            gradient.
        autoattack_robust: pyautoattack's standard AutoAttack left it correctly classified [N];
            Square alone (5000 queries) when the model has no input gradient.
        autoattack_version: ``standard`` or ``square only``.
        seconds: AutoAttack's wall time.
    """

    norm: str
    epsilon: float
    pgd_robust: Tensor
    autoattack_robust: Tensor
    autoattack_version: str
    seconds: float

    @property
    def overstated(self) -> bool:
        """Does PGD-CE materially and significantly overstate robustness? AutoAttack breaks at
        least a fifth (and 5) of the samples PGD-CE left robust, more than the reverse, and
        significantly so (exact McNemar, scipy's binomial test, one-sided, alpha 0.01)."""
        only_autoattack = int((self.pgd_robust & ~self.autoattack_robust).sum())
        only_pgd = int((self.autoattack_robust & ~self.pgd_robust).sum())
        if not _material(only_autoattack - only_pgd, int(self.pgd_robust.sum())):
            return False
        test = binomtest(only_autoattack, only_autoattack + only_pgd, 0.5, alternative="greater")
        return bool(test.pvalue < 0.01)


def _predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )


def torchattacks_pgd_robust(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, epsilon: float, seed: int = 0
) -> Tensor:
    """torchattacks' PGD-CE (100 steps of 0.1 epsilon, random start): robust mask [N]."""
    import torchattacks

    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        if norm == "linf":
            attack = torchattacks.PGD(model, eps=epsilon, alpha=epsilon / 10, steps=100)
        else:
            attack = torchattacks.PGDL2(model, eps=epsilon, alpha=epsilon / 10, steps=100)
        try:
            adversarial = torch.cat(
                [attack(x[i : i + 500], y[i : i + 500]) for i in range(0, len(x), 500)]
            )
        except RuntimeError as err:
            if "does not require grad" not in str(err) and "not have been used" not in str(err):
                raise
            adversarial = x
    return _predict(model, adversarial) == y


def autoattack_robust(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, epsilon: float, seed: int = 0
) -> tuple[Tensor, str]:
    """pyautoattack's standard AutoAttack: robust mask [N] and the version run (Square alone
    when the model has no input gradient, which APGD and FAB need)."""
    from pyautoattack import AutoAttack

    name = "Linf" if norm == "linf" else "L2"
    runner = AutoAttack(model, norm=name, eps=epsilon, seed=seed, version="standard")
    runner.logger.setLevel(logging.ERROR)
    version = "standard"
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        try:
            adversarial, _ = runner.run_standard_evaluation(x, y, batch_size=500)
        except RuntimeError as err:
            if "does not require grad" not in str(err) and "not have been used" not in str(err):
                raise
            runner = AutoAttack(
                model, norm=name, eps=epsilon, seed=seed, version="custom", attacks=["square"]
            )
            runner.logger.setLevel(logging.ERROR)
            runner.square.n_queries = 5000
            adversarial, _ = runner.run_standard_evaluation(x, y, batch_size=500)
            version = "square only"
    return _predict(model, adversarial) == y, version


def autoattack_rand_robust(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str,
    epsilon: float,
    cache: Path | None = None,
    key: str = "",
    seed: int = 0,
) -> Tensor:
    """pyautoattack's AutoAttack ``rand`` version (APGD-CE and APGD-DLR, each averaging the
    gradients of 20 forward passes per step) on a random model: robust mask [N] as AutoAttack
    itself reports it (the labels it returns: a sample is broken when one pass at the clean
    input, or at an attack's example, misclassifies it). Cached under ``cache`` by ``key``
    (which must identify the model) and the samples."""
    from pyautoattack import AutoAttack

    digest = hashlib.sha256(
        f"rand|{key}|{norm}|{epsilon}|{seed}|{FAMILY_VERSION}".encode() + x.cpu().numpy().tobytes()
    ).hexdigest()[:16]
    path = None if cache is None else cache / f"reference-{digest}.json"
    if path is not None and path.is_file():
        return torch.tensor(json.loads(path.read_text())["robust"], dtype=torch.bool)
    name = "Linf" if norm == "linf" else "L2"
    runner = AutoAttack(model.eval(), norm=name, eps=epsilon, seed=seed, version="rand")
    runner.logger.setLevel(logging.ERROR)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        _, labels = runner.run_standard_evaluation(x, y, batch_size=500)
        robust = (labels == y).cpu()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"robust": robust.tolist()}))
    return robust


def reference_attacks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str,
    epsilon: float,
    cache: Path | None = None,
    key: str = "",
) -> Reference:
    """torchattacks' PGD-CE and pyautoattack's AutoAttack on ``x``, cached under ``cache`` by
    ``key`` (which must identify the model) and the samples."""
    digest = hashlib.sha256(
        f"{key}|{norm}|{epsilon}|{FAMILY_VERSION}".encode() + x.cpu().numpy().tobytes()
    ).hexdigest()[:16]
    path = None if cache is None else cache / f"reference-{digest}.json"
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        return Reference(
            norm,
            epsilon,
            torch.tensor(data["pgd_robust"], dtype=torch.bool),
            torch.tensor(data["autoattack_robust"], dtype=torch.bool),
            data["autoattack_version"],
            data["seconds"],
        )
    model.eval()
    pgd_robust = torchattacks_pgd_robust(model, x, y, norm, epsilon)
    started = time.time()
    aa_robust, version = autoattack_robust(model, x, y, norm, epsilon)
    reference = Reference(
        norm, epsilon, pgd_robust.cpu(), aa_robust.cpu(), version, time.time() - started
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "pgd_robust": reference.pgd_robust.tolist(),
                    "autoattack_robust": reference.autoattack_robust.tolist(),
                    "autoattack_version": version,
                    "seconds": reference.seconds,
                }
            )
        )
    return reference


@dataclass(frozen=True)
class Bound:
    """The audit's reliable robust accuracy against AutoAttack's on the same samples.

    Attributes:
        audit: the audit's reliable robust accuracy.
        autoattack: AutoAttack's robust accuracy.
        only_audit_robust: samples the audit left robust and AutoAttack broke.
        only_autoattack_robust: samples AutoAttack left robust and the audit broke.
        difference: audit minus AutoAttack.
        interval: 95 % interval of the paired difference (exact, conditional on the
            discordant samples: Clopper-Pearson on their split, as in McNemar's test).
    """

    audit: float
    autoattack: float
    only_audit_robust: int
    only_autoattack_robust: int
    difference: float
    interval: tuple[float, float] = field(default=(0.0, 0.0))

    @property
    def holds(self) -> bool:
        """The audit is at most AutoAttack plus the interval: no significant excess."""
        return self.interval[0] <= 0


def paired_bound(audit_robust: Tensor, autoattack_robust: Tensor) -> Bound:
    """Compare two robust masks [N] on the same samples."""
    n = audit_robust.numel()
    b = int((audit_robust & ~autoattack_robust).sum())
    c = int((autoattack_robust & ~audit_robust).sum())
    interval = (0.0, 0.0)
    if b + c:
        ci = binomtest(b, b + c, 0.5).proportion_ci(0.95, method="exact")
        scale = (b + c) / n
        interval = (scale * (2 * ci.low - 1), scale * (2 * ci.high - 1))
    return Bound(
        float(audit_robust.double().mean()),
        float(autoattack_robust.double().mean()),
        b,
        c,
        (b - c) / n,
        interval,
    )
