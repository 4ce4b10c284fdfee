"""A validation family for the audit: models this project never trained, built here.

Every model is defined (this module), trained and saved (``family_training``) by these test
modules alone, independently of ``analysis/masked.py`` and of the zoo recipes in
``checkpoints/train.py``, and reaches the audit the way a user's model does: as a checkpoint
file on disk, loaded by ``commands.audit.main`` (``python -m analysis.audit``;
``family_audit``).

- Honest models, trained with plain cross-entropy: an MLP, CNNs with max pooling, with batch
  norm, a small residual network and a GELU CNN (sklearn's 8x8 digits), and a max-pooling CNN
  on MNIST.
- One genuinely robust model: a max-pooling CNN trained on MNIST with PGD adversarial training
  (Madry et al. 2018), the training loop written in ``family_training``.
- Masked models, one or more per mechanism class of Athalye et al. (2018) and Pintor et al.
  (2022): shattered gradients (JPEG-like DCT quantisation, a binarising comparison that cuts
  the autograd graph, a custom backward pass that returns the wrong gradient), stochastic
  gradients (a randomised input transform, dropout that stays on at test time), vanishing
  gradients (a steep tanh squashing of the input, a softmax saturated by a low temperature
  folded into the last layer) and probability outputs (a softmax at the end).

``family_expected.EXPECTED`` is the table of the flags each model must raise, written from its
mechanism before any audit was run; no threshold of the audit is tuned on this family.

Ground truth comes from other people's code only (``family_reference``): whether PGD-CE
overstates a model's robustness is decided by torchattacks' PGD against pyautoattack's
AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square), never by this project's
``attacks`` package.

Trained weights and AutoAttack's per-sample results are cached in a folder keyed by a hash of
the recipe (pytest's cache folder in the tests), never in the repository.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
