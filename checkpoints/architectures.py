"""Architectures, in one registry, each with slots for a dropout-family layer.

Every builder takes the input shape, the number of classes and a :class:`LayerSpec`, and
returns a network that maps *normalised* images to logits; :class:`Normalized` wraps it so the
model the rest of the toolkit sees takes [0, 1] pixels. A dropout-family layer has no
parameters, so its kind and positions never change the state_dict keys.

Slots (``LayerSpec.positions``) per architecture:

- ``mlp``: 0, 1, 2 (after each hidden ReLU); default all.
- ``lenet5``: 0, 1, 2, 3 (after each of the four ReLUs); default all.
- ``vgg16_bn`` / ``vgg16``: indices into the flat Sequential of the NormOut code. The classifier
  slots (48, 51 with batch norm; 35, 38 without) hold the layer itself and are the default;
  the index of any ReLU in the feature extractor puts the layer right after that ReLU.
- ``resnet18``: 0..7 (inside each residual block, after its first ReLU) and 8 (before the
  final linear layer); default 8.
- ``wrn16``: 0..5 (inside each block, between the second ReLU and the second convolution, as
  in the QSD paper); default all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from checkpoints.layers import LayerSpec, make_layer

__all__ = [
    "Architecture",
    "Normalized",
    "architecture_names",
    "build_network",
    "get_architecture",
    "vgg_classifier_slots",
]

Shape = tuple[int, int, int]


class Normalized(nn.Module):
    """``net((x - mean) / std)``: a model that takes pixels in [0, 1].

    The mean and std are non-persistent buffers: the state_dict is the wrapped network's, with
    the prefix ``net.``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        self.net = net
        if (mean is None) != (std is None):
            raise ValueError("normalisation needs both mean and std, or neither")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"normalisation std must be positive, got {list(std)}")
        self.register_buffer(
            "mean", None if mean is None else torch.tensor(mean).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", None if std is None else torch.tensor(std).view(1, -1, 1, 1), persistent=False
        )

    mean: Tensor | None
    std: Tensor | None

    def forward(self, x: Tensor) -> Tensor:
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.net(x)

    def extra_repr(self) -> str:
        if self.mean is None or self.std is None:
            return "no normalisation"
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class _Slots:
    """Hands out a dropout-family layer for the slots named in the spec, Identity elsewhere."""

    def __init__(self, spec: LayerSpec, valid: Sequence[int], default: Sequence[int], arch: str):
        positions = default if spec.positions is None else spec.positions
        bad = sorted(set(positions) - set(valid))
        if bad and spec.kind != "none":
            raise ValueError(
                f"layer positions {bad} do not exist in {arch}; valid positions: {list(valid)}"
            )
        self.spec = spec
        self.active = set(positions) if spec.kind != "none" else set()

    def __call__(self, position: int) -> nn.Module:
        return make_layer(self.spec) if position in self.active else nn.Identity()


# ------------------------------------------------------------------------------------------ MLP


def _mlp(
    shape: Shape, num_classes: int, layer: LayerSpec, hidden: Sequence[int] = (128, 256, 512)
) -> nn.Module:
    slots = _Slots(layer, range(len(hidden)), range(len(hidden)), "mlp")
    modules: list[nn.Module] = [nn.Flatten()]
    width = shape[0] * shape[1] * shape[2]
    for i, h in enumerate(hidden):
        modules += [nn.Linear(width, h), nn.ReLU(), slots(i)]
        width = h
    modules.append(nn.Linear(width, num_classes))
    return nn.Sequential(*modules)


# --------------------------------------------------------------------------------------- LeNet-5


def _lenet5(shape: Shape, num_classes: int, layer: LayerSpec) -> nn.Module:
    slots = _Slots(layer, range(4), range(4), "lenet5")
    # Padding 2 on the first convolution keeps the classic 32x32 geometry for 28x28 inputs.
    features = nn.Sequential(
        nn.Conv2d(shape[0], 6, 5, padding=2),
        nn.ReLU(),
        slots(0),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        slots(1),
        nn.AvgPool2d(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        width = features(torch.zeros(1, *shape)).shape[1]
    return nn.Sequential(
        *features,
        nn.Linear(width, 120),
        nn.ReLU(),
        slots(2),
        nn.Linear(120, 84),
        nn.ReLU(),
        slots(3),
        nn.Linear(84, num_classes),
    )


# ---------------------------------------------------------------------------------------- VGG-16

_VGG16_CONFIG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def vgg_classifier_slots(batch_norm: bool) -> tuple[int, int]:
    """Flat indices of the two classifier dropout slots (48, 51 with batch norm; 35, 38 without)."""
    return (48, 51) if batch_norm else (35, 38)


def _vgg16(
    shape: Shape, num_classes: int, layer: LayerSpec, batch_norm: bool, hidden: int = 4096
) -> nn.Module:
    modules: list[nn.Module] = []
    relu_indices: list[int] = []
    channels = shape[0]
    for c in _VGG16_CONFIG:
        if c == "M":
            modules.append(nn.MaxPool2d(2))
            continue
        modules.append(nn.Conv2d(channels, int(c), 3, padding=1))
        if batch_norm:
            modules.append(nn.BatchNorm2d(int(c)))
        relu_indices.append(len(modules))
        modules.append(nn.ReLU(inplace=True))
        channels = int(c)
    classifier_slots = vgg_classifier_slots(batch_norm)
    name = "vgg16_bn" if batch_norm else "vgg16"
    slots = _Slots(layer, [*relu_indices, *classifier_slots], classifier_slots, name)
    for i in relu_indices:
        if i in slots.active:
            modules[i] = nn.Sequential(nn.ReLU(inplace=True), slots(i))
    modules += [
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(512 * 7 * 7, hidden),
        nn.ReLU(inplace=True),
        slots(classifier_slots[0]),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        slots(classifier_slots[1]),
        nn.Linear(hidden, num_classes),
    ]
    return nn.Sequential(*modules)


# ------------------------------------------------------------------------------------- ResNet-18


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, drop: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.drop = drop
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.drop(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(out)


class _ResNet18(nn.Module):
    """The widely used CIFAR-10 ResNet-18 (conv1, bn1, layerK.J, linear)."""

    def __init__(self, shape: Shape, num_classes: int, layer: LayerSpec) -> None:
        super().__init__()
        slots = _Slots(layer, range(9), (8,), "resnet18")
        self.conv1 = nn.Conv2d(shape[0], 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes, index = 64, 0
        for k, (planes, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            blocks = []
            for s in (stride, 1):
                blocks.append(_BasicBlock(in_planes, planes, s, slots(index)))
                in_planes, index = planes, index + 1
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
        self.drop = slots(8)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for k in range(1, 5):
            out = getattr(self, f"layer{k}")(out)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(self.drop(out))


# ---------------------------------------------------------------------------------- Wide ResNet


class _WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, drop: nn.Module) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = drop
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.equal = in_planes == planes and stride == 1
        self.shortcut = (
            None if self.equal else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.drop(F.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class _WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko and Komodakis 2016) of depth 16, pre-activation blocks."""

    def __init__(
        self, shape: Shape, num_classes: int, layer: LayerSpec, widen_factor: int = 4
    ) -> None:
        super().__init__()
        if widen_factor < 1:
            raise ValueError(f"wrn16 widen_factor must be a positive integer, got {widen_factor}")
        per_group = 2  # (depth 16 - 4) / 6
        slots = _Slots(layer, range(3 * per_group), range(3 * per_group), "wrn16")
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(shape[0], widths[0], 3, padding=1, bias=False)
        in_planes, index = widths[0], 0
        for g, stride in enumerate((1, 2, 2), start=1):
            blocks = []
            for s in (stride,) + (1,) * (per_group - 1):
                blocks.append(_WideBlock(in_planes, widths[g], s, slots(index)))
                in_planes, index = widths[g], index + 1
            setattr(self, f"block{g}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        for g in range(1, 4):
            out = getattr(self, f"block{g}")(out)
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# ------------------------------------------------------------------------------------- Registry


@dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    Attributes:
        name: registry name.
        build: ``build(input_shape, num_classes, layer, **kwargs) -> nn.Module``.
        description: one line for listings.
    """

    name: str
    build: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, Architecture] = {}


def _register(name: str, build: Callable[..., nn.Module], description: str) -> None:
    _REGISTRY[name] = Architecture(name, build, description)


_register("mlp", _mlp, "fully connected 128-256-512, a layer slot after each ReLU")
_register(
    "lenet5", _lenet5, "LeNet-5: two ReLU convolutions with average pooling, two hidden FC layers"
)
_register(
    "vgg16_bn",
    lambda shape, classes, layer, **kw: _vgg16(shape, classes, layer, True, **kw),
    "VGG-16 with batch norm (flat 53-module layout)",
)
_register(
    "vgg16",
    lambda shape, classes, layer, **kw: _vgg16(shape, classes, layer, False, **kw),
    "VGG-16 without batch norm (flat layout)",
)
_register("resnet18", _ResNet18, "CIFAR-10 ResNet-18 (conv1, bn1, layerK.J, linear)")
_register("wrn16", _WideResNet, "wide ResNet of depth 16 (widen_factor, default 4)")


def architecture_names() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; known architectures: {', '.join(architecture_names())}"
        ) from None


def build_network(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    layer: LayerSpec | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build architecture ``name`` for inputs of ``input_shape`` (C, H, W).

    Returns the bare network (it expects normalised inputs); wrap it in :class:`Normalized`.
    """
    arch = get_architecture(name)
    if len(input_shape) != 3 or any(int(d) <= 0 for d in input_shape):
        raise ValueError(
            f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    try:
        return arch.build(shape, int(num_classes), layer or LayerSpec(), **kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments {kwargs} for architecture {name!r}: {err}") from None
    except RuntimeError as err:
        raise ValueError(
            f"input shape {shape} is too small for architecture {name!r} ({err}); "
            "check --dataset / --input-shape"
        ) from None
