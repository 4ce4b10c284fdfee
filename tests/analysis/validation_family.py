"""A validation family for the audit: models this project never trained, built here.

Every model is defined, trained and saved by this module alone, independently of
``analysis/masked.py`` and of the zoo recipes in ``checkpoints/train.py``, and reaches the audit
the way a user's model does: as a checkpoint file on disk, loaded by ``commands.audit.main``
(``python -m analysis.audit``).

- Honest models, trained with plain cross-entropy: an MLP, CNNs with max pooling, with batch
  norm, a small residual network and a GELU CNN (sklearn's 8x8 digits), and a max-pooling CNN
  on MNIST.
- One genuinely robust model: a max-pooling CNN trained on MNIST with PGD adversarial training
  (Madry et al. 2018), the training loop written below.
- Masked models, one or more per mechanism class of Athalye et al. (2018) and Pintor et al.
  (2022): shattered gradients (JPEG-like DCT quantisation, a binarising comparison that cuts
  the autograd graph, a custom backward pass that returns the wrong gradient), stochastic
  gradients (a randomised input transform, dropout that stays on at test time), vanishing
  gradients (a steep tanh squashing of the input, a softmax saturated by a low temperature
  folded into the last layer) and probability outputs (a softmax at the end).

``EXPECTED`` is the table of the flags each model must raise, written from its mechanism before
any audit was run; no threshold of the audit is tuned on this family.

Ground truth comes from other people's code only: whether PGD-CE overstates a model's
robustness is decided by torchattacks' PGD against pyautoattack's AutoAttack (standard version:
APGD-CE, APGD-T, FAB-T, Square), never by this project's ``attacks`` package.

Trained weights and AutoAttack's per-sample results are cached in a folder keyed by a hash of
the recipe (pytest's cache folder in the tests), never in the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import Tensor, nn

from checkpoints import save_checkpoint
from checkpoints.architectures import build_network
from checkpoints.datasets import load_dataset
from checkpoints.layers import LayerSpec
from checkpoints.spec import CheckpointSpec

# Part of every cache key: raise it when a model definition or the training loop changes.
FAMILY_VERSION = 1

# ------------------------------------------------------------------------------ the table

RELIABILITY_CHECKS = frozenset(
    {"non-finite-values", "model-in-train-mode", "probability-outputs", "stochastic-model"}
)
MASKING_CHECKS = frozenset(
    {
        "one-step-beats-iterative",
        "black-box-beats-white-box",
        "random-search-beats-gradient",
        "targeted-beats-untargeted",
        "margin-loss-beats-cross-entropy",
        "unbounded-attack-below-100",
        "success-not-increasing-with-epsilon",
        "vanishing-gradients",
        "gradient-disagrees-with-finite-differences",
        "attack-not-converged",
        "silent-success",
    }
)
# Warnings about the attacks' own budget, not about the model: allowed on any model.
BUDGET_WARNINGS = frozenset({"attack-not-converged", "silent-success"})
# A pairwise comparison that beats PGD-CE is what "PGD-CE overstates robustness" looks like.
OVERSTATEMENT_CHECKS = frozenset(
    {
        "one-step-beats-iterative",
        "black-box-beats-white-box",
        "random-search-beats-gradient",
        "targeted-beats-untargeted",
        "margin-loss-beats-cross-entropy",
    }
)
NO_SIGN = "no sign of gradient masking"
SUSPECTED = "suspected gradient masking"
UNRELIABLE = "evaluation unreliable"


@dataclass(frozen=True)
class Expected:
    """What the audit must say about one model, from its mechanism alone.

    Attributes:
        kind: ``honest``, ``robust`` or ``masked``.
        must_fail: checks that must fail.
        must_flag: checks that must warn or fail.
        may_flag: checks that may warn or fail; every other check must pass (or be n/a).
        may_warn: checks that may warn but not fail.
        if_overstated: checks that may fail only where the independent ground truth shows that
            PGD-CE overstates robustness.
        verdicts: accepted verdicts (a verdict matches by its leading words).
        overstated: what the ground truth must say (True, False, or None for "either").
        autoattack: the version of AutoAttack whose robust accuracy, on the same samples, the
            audit's reliable robust accuracy must not significantly exceed (``standard``; ``rand``
            for a random model, AutoAttack's EOT version), or None for no such bound.
        reason: one line from the mechanism.
    """

    kind: str
    reason: str
    must_fail: frozenset[str] = frozenset()
    must_flag: frozenset[str] = frozenset()
    may_flag: frozenset[str] = frozenset()
    may_warn: frozenset[str] = BUDGET_WARNINGS
    if_overstated: frozenset[str] = frozenset()
    verdicts: tuple[str, ...] = (NO_SIGN,)
    overstated: bool | None = False
    autoattack: str | None = None


def _honest(reason: str) -> Expected:
    # No claim about the reference: AutoAttack's ensemble (APGD-T, FAB-T) outdoes a fixed-step
    # PGD-CE on unmasked networks too (Croce & Hein 2020), so "PGD-CE overstates" says nothing
    # about masking here; the audit must stay silent and within AutoAttack's bound regardless.
    return Expected("honest", reason, overstated=None, autoattack="standard")


def _masked(reason: str, *must_fail: str, overstated: bool | None = True) -> Expected:
    return Expected(
        "masked",
        reason,
        must_fail=frozenset(must_fail),
        may_flag=MASKING_CHECKS - frozenset(must_fail),
        verdicts=(SUSPECTED, UNRELIABLE),
        overstated=overstated,
    )


def _stochastic(reason: str, autoattack: str | None = None) -> Expected:
    return Expected(
        "masked",
        reason,
        must_flag=frozenset({"stochastic-model"}),
        may_flag=MASKING_CHECKS | {"model-in-train-mode", "batch-dependent-outputs"},
        verdicts=(SUSPECTED, UNRELIABLE),
        overstated=None,
        autoattack=autoattack,
    )


EXPECTED: dict[str, Expected] = {
    "digits-mlp": _honest("ReLU MLP, plain cross-entropy: piecewise linear, exact gradients"),
    "digits-cnn-maxpool": _honest("ReLU CNN with max pooling: kinks, but exact gradients"),
    "digits-cnn-batchnorm": _honest("batch norm in eval mode is a fixed affine map"),
    "digits-resnet": _honest("residual blocks with batch norm: exact gradients, no saturation"),
    "digits-cnn-gelu": _honest("smooth activation (GELU): exact, smooth gradients"),
    "mnist-cnn-maxpool": _honest("the MNIST max-pool CNN users bring: exact gradients"),
    "mnist-cnn-pgd-at": Expected(
        "robust",
        "PGD adversarial training makes it robust, not masked; a pairwise check may fail only "
        "where AutoAttack shows PGD-CE overstating its robustness",
        if_overstated=OVERSTATEMENT_CHECKS,
        verdicts=(NO_SIGN, SUSPECTED),
        overstated=None,
        autoattack="standard",
    ),
    "mnist-cnn-pgd-at-strong": Expected(
        "robust",
        "PGD adversarial training at MNIST's strength (L∞ 0.3, 10 steps, 4 epochs) makes it "
        "robust at L∞; a network trained against L∞ masks L2 gradients, so under L2 PGD-CE may "
        "overstate its robustness and a pairwise check may fail only where AutoAttack shows that",
        if_overstated=OVERSTATEMENT_CHECKS,
        verdicts=(NO_SIGN, SUSPECTED),
        overstated=None,
        autoattack="standard",
    ),
    "digits-jpeg": _masked(
        "shattered: DCT coefficients rounded (JPEG-like); round has zero gradient everywhere, "
        "so gradient attacks see nothing and Square does not care",
        "vanishing-gradients",
        "black-box-beats-white-box",
    ),
    "digits-binarized": _masked(
        "shattered, graph cut: (x > 0.5).float() leaves no input gradient at all; only "
        "gradient-free attacks can break it",
        "vanishing-gradients",
        "black-box-beats-white-box",
    ),
    "digits-wrong-backward": _masked(
        "shattered: a custom backward multiplies the input gradient by a fixed random sign per "
        "pixel, so the gradient disagrees with finite differences and misleads PGD",
        "gradient-disagrees-with-finite-differences",
        "black-box-beats-white-box",
    ),
    "digits-steep-tanh": _masked(
        "vanishing: the input squashed by 0.5 (1 + tanh(500 (x - 0.47))), saturated in float32 "
        "on every clean pixel, so input gradients are exactly zero",
        "vanishing-gradients",
        "black-box-beats-white-box",
    ),
    "digits-low-temperature": _masked(
        "vanishing: the last layer scaled by 1000 (softmax temperature 1e-3) saturates the "
        "float32 softmax; the cross-entropy gradient underflows, the margin loss does not",
        "vanishing-gradients",
        "margin-loss-beats-cross-entropy",
    ),
    "digits-probabilities": Expected(
        "masked",
        "probability outputs: a softmax at the end; the attacks' cross-entropy is applied on "
        "top of probabilities",
        must_fail=frozenset({"probability-outputs"}),
        may_flag=MASKING_CHECKS,
        verdicts=(UNRELIABLE,),
        overstated=None,
    ),
    "digits-random-input": _stochastic(
        "stochastic: Gaussian noise (sd 0.2) and a random shift of up to one pixel at test time"
    ),
    "digits-test-dropout": _stochastic(
        "stochastic: functional dropout (p 0.3) hard-wired on, whatever the module's mode"
    ),
    "mnist-random-ensemble": _stochastic(
        "stochastic: one of three CNNs picked at random on every call (for the whole batch), "
        "so every prediction is one draw; bounded by AutoAttack's EOT version (rand)",
        autoattack="rand",
    ),
}


def compare_flags(
    expected: Expected, document: dict[str, Any], overstated: bool | None
) -> list[str]:
    """The disagreements between an audit document and its row of ``EXPECTED``.

    Args:
        expected: the row.
        document: the audit's result document.
        overstated: the independent ground truth (None when it was not measured).

    Returns:
        One line per disagreement; empty when the audit says what the table expects.
    """
    statuses = {f["code"]: f["status"] for f in document["findings"]}
    problems = []
    for code in sorted(expected.must_fail):
        if statuses.get(code) != "fail":
            problems.append(f"{code} must fail, got {statuses.get(code, 'missing')}")
    for code in sorted(expected.must_flag):
        if statuses.get(code) not in ("warn", "fail"):
            problems.append(f"{code} must warn or fail, got {statuses.get(code, 'missing')}")
    allowed = expected.must_fail | expected.must_flag | expected.may_flag
    if overstated:
        allowed |= expected.if_overstated
    for code, status in sorted(statuses.items()):
        if status not in ("warn", "fail") or code in allowed:
            continue
        if status == "warn" and code in expected.may_warn:
            continue
        problems.append(f"{code} is not expected to {status}")
    if not any(document["verdict"].startswith(v) for v in expected.verdicts):
        problems.append(f"verdict {document['verdict']!r}, expected one of {expected.verdicts}")
    if expected.overstated is not None and overstated not in (None, expected.overstated):
        problems.append(
            f"ground truth: PGD-CE {'overstates' if overstated else 'does not overstate'} "
            "robustness, against the table"
        )
    return problems


def observed_flags(document: dict[str, Any]) -> str:
    """``fail: a, b; warn: c`` for a document's findings."""
    parts = []
    for status in ("fail", "warn"):
        codes = [f["code"] for f in document["findings"] if f["status"] == status]
        if codes:
            parts.append(f"{status}: {', '.join(codes)}")
    return "; ".join(parts) or "none"


# ------------------------------------------------------------------------------ the networks


class MLP(nn.Module):
    """ReLU MLP over flattened images; optional functional dropout that is always on."""

    def __init__(self, inputs: int, hidden: Sequence[int], always_dropout: float = 0.0) -> None:
        super().__init__()
        widths = [inputs, *hidden]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.out = nn.Linear(widths[-1], 10)
        self.always_dropout = always_dropout

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1)
        for layer in self.hidden:
            h = F.relu(layer(h))
            if self.always_dropout > 0:
                h = F.dropout(h, self.always_dropout, True)
        return self.out(h)


class MaxPoolCNN(nn.Module):
    """Two ReLU convolutions, each followed by 2x2 max pooling, and two linear layers."""

    def __init__(self, size: int, widths: tuple[int, int] = (16, 32), hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, padding=1)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.fc = nn.Linear(widths[1] * (size // 4) ** 2, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return self.out(F.relu(self.fc(h.flatten(1))))


class BatchNormCNN(nn.Module):
    """Three convolution, batch norm, ReLU stages (two with stride 2) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.out = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x).flatten(1))


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the (projected) input, then ReLU."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A stem convolution, three residual blocks, global average pooling, a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.blocks = nn.Sequential(
            ResidualBlock(16, 16, 1), ResidualBlock(16, 32, 2), ResidualBlock(32, 32, 1)
        )
        self.out = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(F.relu(self.stem(x)))
        return self.out(h.mean(dim=(2, 3)))


class GeluCNN(nn.Module):
    """Two GELU convolutions with average pooling and a GELU linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 2 * 2, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(F.gelu(self.conv1(x)), 2)
        h = F.avg_pool2d(F.gelu(self.conv2(h)), 2)
        return self.out(F.gelu(self.fc(h.flatten(1))))


# ------------------------------------------------------------------- masking preprocessing


def _dct_matrix(size: int) -> Tensor:
    """The orthonormal DCT-II matrix [size, size]: coefficients = D @ block @ D.T."""
    k = torch.arange(size, dtype=torch.float64)[:, None]
    n = torch.arange(size, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix.float()


# JPEG's luminance quantisation table (quality 50), in [0, 255] pixel units.
_JPEG_LUMINANCE = [
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
]


class JpegLike(nn.Module):
    """``net(idct(round(dct(x) / Q) * Q))`` on 8x8 blocks: JPEG's lossy step, no entropy code.

    The DCT coefficients of each 8x8 block are rounded to multiples of JPEG's luminance table
    (scaled by ``quality_scale``, in [0, 1] pixel units); rounding has a zero gradient.
    """

    def __init__(self, net: nn.Module, quality_scale: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("dct", _dct_matrix(8))
        self.register_buffer("table", torch.tensor(_JPEG_LUMINANCE) * quality_scale / 255.0)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        blocks = x.reshape(n, c, h // 8, 8, w // 8, 8).transpose(3, 4)
        coefficients = self.dct @ blocks @ self.dct.t()
        coefficients = torch.round(coefficients / self.table) * self.table
        blocks = self.dct.t() @ coefficients @ self.dct
        return self.net(blocks.transpose(3, 4).reshape(n, c, h, w).clamp(0, 1))


class Binarized(nn.Module):
    """``net((x > threshold).float())``: the comparison cuts the autograd graph."""

    def __init__(self, net: nn.Module, threshold: float = 0.5) -> None:
        super().__init__()
        self.net = net
        self.threshold = threshold

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x > self.threshold).float())


class SteepTanh(nn.Module):
    """``net(0.5 (1 + tanh(steepness (x - centre))))``: a differentiable squashing that is
    saturated in float32 wherever ``|x - centre| > 9 / steepness``."""

    def __init__(self, net: nn.Module, steepness: float = 500.0, centre: float = 0.47) -> None:
        super().__init__()
        self.net = net
        self.steepness = steepness
        self.centre = centre

    def forward(self, x: Tensor) -> Tensor:
        return self.net(0.5 * (1 + torch.tanh(self.steepness * (x - self.centre))))


class RandomInput(nn.Module):
    """``net(shift(clamp(x + sd * noise)))``: fresh Gaussian noise and a random shift of up to
    one pixel (the same for the whole batch) on every call."""

    def __init__(self, net: nn.Module, sd: float = 0.2) -> None:
        super().__init__()
        self.net = net
        self.sd = sd

    def forward(self, x: Tensor) -> Tensor:
        noisy = (x + self.sd * torch.randn_like(x)).clamp(0, 1)
        shift = torch.randint(-1, 2, [2], device=x.device)
        return self.net(torch.roll(noisy, [int(shift[0]), int(shift[1])], [2, 3]))


class RandomEnsemble(nn.Module):
    """One of ``members``, chosen uniformly at random on every call (for the whole batch):
    a randomised defence whose prediction is one draw."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        choice = int(torch.randint(0, len(self.members), [1]).item())
        result: Tensor | None = None
        for index, member in enumerate(self.members):
            if index == choice:
                result = member(x)
        if result is None:
            raise RuntimeError("no member was chosen")
        return result


class SoftmaxOutput(nn.Module):
    """``softmax(net(x))``: probabilities instead of logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x), dim=1)


class _SignScrambledGradient(torch.autograd.Function):
    """The identity forward; backward multiplies the gradient by fixed per-pixel signs."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, signs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(signs)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (signs,) = ctx.saved_tensors
        return grad * signs, None


class WrongBackward(nn.Module):
    """``net(x)`` exactly, through a layer whose custom backward pass is wrong: the input
    gradient's sign is flipped on a fixed random half of the pixels."""

    def __init__(self, net: nn.Module, shape: Sequence[int], seed: int = 0) -> None:
        super().__init__()
        self.net = net
        generator = torch.Generator().manual_seed(seed)
        signs = torch.randint(0, 2, (1, *shape), generator=generator).float() * 2 - 1
        self.register_buffer("signs", signs)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_SignScrambledGradient.apply(x, self.signs.to(x.dtype)))


# ------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Recipe:
    """How one member of the family is built.

    Attributes:
        name: the model's name (a key of ``EXPECTED``).
        dataset: ``digits`` or ``mnist``.
        network: the network's constructor name in ``NETWORKS``.
        wrapper: a masking wrapper trained with the network (a name in ``TRAINED_WRAPPERS``),
            or None.
        epochs, lr, batch_size, seed, train_samples: training settings (Adam, plain
            cross-entropy); ``train_samples`` None for the whole training split.
        adversarial_epsilon: L∞ radius of PGD adversarial training, or None.
        adversarial_steps: PGD steps of adversarial training.
        ramp_fraction: the share of all training batches over which the radius of adversarial
            training grows linearly to ``adversarial_epsilon``; None for the first epoch.
        base: for a model derived after training from another member, its name.
        derive: how it is derived from ``base`` (a name in ``DERIVED``).
        save_as: ``robaudit`` (our checkpoint format), ``torchscript`` or ``pickle`` (a whole
            module, loaded with ``--trust-checkpoint``).
    """

    name: str
    dataset: str
    network: str = ""
    wrapper: str | None = None
    epochs: int = 30
    lr: float = 2e-3
    batch_size: int = 64
    seed: int = 0
    train_samples: int | None = None
    adversarial_epsilon: float | None = None
    adversarial_steps: int = 7
    ramp_fraction: float | None = None
    base: str | None = None
    derive: str | None = None
    save_as: str = "torchscript"


NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "digits-mlp": lambda: build_network("mlp", (1, 8, 8), 10, LayerSpec(), hidden=[64, 64]),
    "mlp": lambda: MLP(64, [128, 128]),
    "mlp-dropout": lambda: MLP(64, [128, 128], always_dropout=0.3),
    "cnn-maxpool-8": lambda: MaxPoolCNN(8),
    "cnn-maxpool-28": lambda: MaxPoolCNN(28, (16, 32), 128),
    "random-ensemble-28": lambda: RandomEnsemble([MaxPoolCNN(28) for _ in range(3)]),
    "cnn-batchnorm": BatchNormCNN,
    "resnet": SmallResNet,
    "cnn-gelu": GeluCNN,
}
TRAINED_WRAPPERS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "jpeg": JpegLike,
    "binarized": Binarized,
    "steep-tanh": SteepTanh,
    "random-input": RandomInput,
}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("digits-mlp", "digits", "digits-mlp", save_as="robaudit"),
        Recipe("digits-cnn-maxpool", "digits", "cnn-maxpool-8", epochs=20),
        Recipe("digits-cnn-batchnorm", "digits", "cnn-batchnorm", epochs=20),
        Recipe("digits-resnet", "digits", "resnet", epochs=15),
        Recipe("digits-cnn-gelu", "digits", "cnn-gelu", epochs=25),
        Recipe("mnist-cnn-maxpool", "mnist", "cnn-maxpool-28", epochs=2, lr=1e-3, batch_size=128),
        Recipe(
            "mnist-cnn-pgd-at",
            "mnist",
            "cnn-maxpool-28",
            epochs=2,
            lr=1e-3,
            batch_size=128,
            train_samples=10000,
            adversarial_epsilon=0.3,
            adversarial_steps=5,
        ),
        # Madry et al.'s recipe at MNIST's strength: 10 steps of 0.075 from a random start at
        # L∞ 0.3, the radius ramped up over the first 30 % of batches, the whole training set.
        Recipe(
            "mnist-cnn-pgd-at-strong",
            "mnist",
            "cnn-maxpool-28",
            epochs=4,
            lr=1e-3,
            batch_size=128,
            adversarial_epsilon=0.3,
            adversarial_steps=10,
            ramp_fraction=0.3,
        ),
        # Each forward picks one member; trained so, every member sees a third of the batches.
        Recipe(
            "mnist-random-ensemble",
            "mnist",
            "random-ensemble-28",
            epochs=6,
            lr=1e-3,
            batch_size=128,
        ),
        Recipe("digits-jpeg", "digits", "cnn-maxpool-8", wrapper="jpeg", epochs=20),
        Recipe("digits-binarized", "digits", "mlp", wrapper="binarized"),
        Recipe("digits-steep-tanh", "digits", "cnn-maxpool-8", wrapper="steep-tanh", epochs=20),
        Recipe("digits-random-input", "digits", "mlp", wrapper="random-input"),
        Recipe("digits-test-dropout", "digits", "mlp-dropout"),
        Recipe("digits-wrong-backward", "digits", base="digits-cnn-maxpool", save_as="pickle"),
        Recipe("digits-low-temperature", "digits", base="digits-mlp", save_as="robaudit"),
        Recipe("digits-probabilities", "digits", base="digits-cnn-batchnorm"),
    ]
}


def _pgd_linf_training_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    num_steps: int,
    generator: torch.Generator,
) -> Tensor:
    """Madry et al.'s inner maximisation: L∞ PGD on the cross-entropy from a uniform start,
    step 2.5 epsilon / steps, in the unit box."""
    step = 2.5 * epsilon / num_steps
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    adversarial = (x + (2 * noise - 1) * epsilon).clamp(0, 1)
    for _ in range(num_steps):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(model(adversarial), y)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step * gradient.sign()
        adversarial = torch.min(torch.max(adversarial, x - epsilon), x + epsilon).clamp(0, 1)
    return adversarial.detach()


def train_recipe(recipe: Recipe, data_dir: Path | None = None) -> nn.Module:
    """Train ``recipe``'s network (with its wrapper) from a seeded initialisation.

    Args:
        recipe: a recipe with ``network`` set.
        data_dir: the folder holding ``mnist/`` (None: ``$ROBAUDIT_DATA``).

    Returns:
        The trained model in eval mode, taking [0, 1] pixels [N, 1, H, W] to logits [N, 10].
    """
    data = load_dataset(recipe.dataset, "train", _data_path(recipe.dataset, data_dir))
    x, y = data.x, data.y
    generator = torch.Generator().manual_seed(recipe.seed)
    if recipe.train_samples is not None:
        chosen = torch.randperm(len(y), generator=generator)[: recipe.train_samples]
        x, y = x[chosen], y[chosen]
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        network = NETWORKS[recipe.network]()
        model = network if recipe.wrapper is None else TRAINED_WRAPPERS[recipe.wrapper](network)
        optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
        # Ramp epsilon up (over the first epoch unless said otherwise), the usual start for
        # MNIST at 0.3.
        ramp = steps_per_epoch
        if recipe.ramp_fraction is not None:
            ramp = max(1, round(recipe.ramp_fraction * steps_per_epoch * recipe.epochs))
        for epoch in range(recipe.epochs):
            order = torch.randperm(len(y), generator=generator)
            model.train()
            for index, start in enumerate(range(0, len(y), recipe.batch_size)):
                batch = order[start : start + recipe.batch_size]
                inputs, labels = x[batch], y[batch]
                if recipe.adversarial_epsilon is not None:
                    progress = min(1.0, (epoch * steps_per_epoch + index + 1) / ramp)
                    model.eval()
                    inputs = _pgd_linf_training_examples(
                        model,
                        inputs,
                        labels,
                        recipe.adversarial_epsilon * progress,
                        recipe.adversarial_steps,
                        generator,
                    )
                    model.train()
                loss = F.cross_entropy(model(inputs), labels)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


def _derive(recipe: Recipe, base: nn.Module) -> nn.Module:
    """A model derived from a trained one after training, by ``recipe.derive`` / its name."""
    if recipe.name == "digits-wrong-backward":
        return WrongBackward(base, (1, 8, 8)).eval()
    if recipe.name == "digits-probabilities":
        return SoftmaxOutput(base).eval()
    if recipe.name == "digits-low-temperature":
        with torch.no_grad():
            last = [m for m in base.modules() if isinstance(m, nn.Linear)][-1]
            last.weight.mul_(1000.0)
            last.bias.mul_(1000.0)
        return base.eval()
    raise ValueError(f"no derivation for {recipe.name!r}; expected one of the RECIPES")


def _data_path(dataset: str, data_dir: Path | None) -> str | None:
    if dataset == "digits":
        return None
    root = data_dir if data_dir is not None else os.environ.get("ROBAUDIT_DATA")
    if root is None:
        raise ValueError(f"{dataset} needs the reference data: set ROBAUDIT_DATA")
    return str(Path(root) / dataset)


# Fields added to ``Recipe`` after the first version: left out of the key while at their
# default, so that the weights cached for the earlier recipes stay valid.
_LATER_FIELDS = {"adversarial_steps": 7, "ramp_fraction": None}


def recipe_key(recipe: Recipe) -> str:
    """A short hash of the recipe (and of its base's recipe) and ``FAMILY_VERSION``."""
    text = repr(recipe)
    for name, default in _LATER_FIELDS.items():
        if getattr(recipe, name) == default:
            text = text.replace(f", {name}={default!r}", "")
    parts = [text, str(FAMILY_VERSION)]
    if recipe.base is not None:
        parts.append(recipe_key(RECIPES[recipe.base]))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _suffix(recipe: Recipe) -> str:
    return {"robaudit": ".pt", "torchscript": ".ts.pt", "pickle": ".module.pt"}[recipe.save_as]


def _trained(recipe: Recipe, cache: Path, data_dir: Path | None) -> nn.Module:
    """The trained (or derived) model of ``recipe``, its weights cached as a state_dict."""
    weights = cache / f"{recipe.name}-{recipe_key(recipe)}.weights.pt"
    if recipe.base is not None:
        model = _derive(recipe, _trained(RECIPES[recipe.base], cache, data_dir))
        return model
    if recipe.wrapper is None:
        model = NETWORKS[recipe.network]()
    else:
        model = TRAINED_WRAPPERS[recipe.wrapper](NETWORKS[recipe.network]())
    if weights.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()
    started = time.time()
    model = train_recipe(recipe, data_dir)
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    print(f"trained {recipe.name} in {time.time() - started:.0f} s", file=sys.stderr)
    return model


def build(name: str, cache: Path, data_dir: Path | None = None) -> tuple[Path, list[str]]:
    """The checkpoint file of family member ``name`` and the audit flags that describe it.

    Args:
        name: a key of ``RECIPES``.
        cache: folder for trained weights and checkpoints (created if needed).
        data_dir: the reference data folder (None: ``$ROBAUDIT_DATA``).

    Returns:
        (path, flags): the file, and the command-line flags a user would pass with it.
    """
    recipe = RECIPES[name]
    path = cache / f"{name}-{recipe_key(recipe)}{_suffix(recipe)}"
    flags = ["--dataset", recipe.dataset]
    if recipe.save_as != "robaudit":
        flags.append("--trust-checkpoint")
    if path.is_file():
        return path, flags
    model = _trained(recipe, cache, data_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if recipe.save_as == "robaudit":
        network = model
        spec = CheckpointSpec(
            arch="mlp",
            num_classes=10,
            input_shape=(1, 8, 8),
            arch_kwargs={"hidden": [64, 64]},
            dataset=recipe.dataset,
            training={"recipe": repr(recipe)},
        )
        save_checkpoint(path, network, spec)
    elif recipe.save_as == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    else:
        torch.save(model, path)
    return path, flags


# ------------------------------------------------------------------------------ ground truth


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


# ------------------------------------------------------------------------- running the audit


@dataclass(frozen=True)
class Observation:
    """One audited member of the family.

    Attributes:
        name: the member.
        document: the audit document (None when the audit did not complete).
        status: the audit's exit status, or the exception that escaped it.
        references: independent attacks per norm (empty when not measured).
        bounds: the audit against AutoAttack per norm.
        seconds: the audit's wall time.
    """

    name: str
    document: dict[str, Any] | None
    status: str
    references: dict[str, Reference]
    bounds: dict[str, Bound]
    seconds: float

    @property
    def overstated(self) -> bool | None:
        if not self.references:
            return None
        return any(r.overstated for r in self.references.values())

    def problems(self) -> list[str]:
        """Disagreements with ``EXPECTED`` and the AutoAttack bound (empty: all as expected)."""
        if self.document is None:
            return [f"the audit did not complete: {self.status}"]
        problems = [] if self.status == "0" else [f"exit status {self.status}"]
        problems += compare_flags(EXPECTED[self.name], self.document, self.overstated)
        for norm, bound in self.bounds.items():
            if not bound.holds:
                problems.append(
                    f"{norm}: audit {bound.audit:.3f} exceeds AutoAttack {bound.autoattack:.3f} "
                    f"(interval of the difference "
                    f"{bound.interval[0]:+.3f}..{bound.interval[1]:+.3f})"
                )
        return problems


def _robust_mask(norm_section: dict[str, Any]) -> Tensor:
    row = norm_section["robust"][0]
    return torch.tensor([c == "1" for c in row], dtype=torch.bool)


def observe(
    name: str,
    cache: Path,
    out: Path,
    preset: str = "standard",
    num_samples: int = 1000,
    data_dir: Path | None = None,
    references: bool = True,
) -> Observation:
    """Build ``name``, audit it through the command line's ``main`` and, if asked, measure the
    independent references and the AutoAttack bound on the audit's own samples."""
    from commands.audit import main

    path, flags = build(name, cache, data_dir)
    argv = [str(path), *flags, "--preset", preset, "--num-samples", str(num_samples)]
    argv += ["--no-flatness", "--out", str(out), "--quiet", "--device", "cpu"]
    started = time.time()
    try:
        status = str(main(argv))
    except Exception as err:  # noqa: BLE001 - the point is to report what escaped the audit
        return Observation(name, None, f"{type(err).__name__}: {err}", {}, {}, 0.0)
    seconds = time.time() - started
    document = json.loads((out / path.stem / "audit.json").read_text())
    # Stochastic models and probability outputs get no ground truth for PGD-CE: it would need
    # EOT and logits; their rows expect reliability flags instead. A random model is still
    # bounded by AutoAttack's EOT version where its row says so.
    expected = EXPECTED[name]
    ground_truth = not (expected.overstated is None and expected.kind == "masked")
    if not references or not (ground_truth or expected.autoattack):
        return Observation(name, document, status, {}, {}, seconds)
    from checkpoints import load_checkpoint
    from checkpoints.spec import Description

    loaded = load_checkpoint(path, Description(dataset=RECIPES[name].dataset), trust=True)
    test = load_dataset(RECIPES[name].dataset, "test", _data_path(RECIPES[name].dataset, data_dir))
    indices = torch.tensor(document["evaluation"]["indices"])
    x, y = test.x[indices], test.y[indices]
    found: dict[str, Reference] = {}
    bounds: dict[str, Bound] = {}
    key = f"{name}-{recipe_key(RECIPES[name])}"
    for section in document["robustness"]["norms"]:
        norm, epsilon = section["norm"], section["epsilons"][0]
        if ground_truth:
            found[norm] = reference_attacks(loaded.model, x, y, norm, epsilon, cache, key)
        if expected.autoattack == "standard":
            bounds[norm] = paired_bound(_robust_mask(section), found[norm].autoattack_robust)
        elif expected.autoattack == "rand":
            theirs = autoattack_rand_robust(loaded.model, x, y, norm, epsilon, cache, key)
            bounds[norm] = paired_bound(_robust_mask(section), theirs)
    return Observation(name, document, status, found, bounds, seconds)


def default_cache() -> Path:
    """pytest's cache folder of this repository (shared by the tests and the report)."""
    return Path(__file__).resolve().parents[2] / ".pytest_cache" / "d" / "validation-family"
