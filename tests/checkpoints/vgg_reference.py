"""The NormOut code's VGG-16-BN, written out independently of our builder, in both of its
checkpoint layouts: the flat Sequential saved inside a Lightning module, and torchvision's
``features.*`` / ``avgpool`` / ``classifier.*``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = [
    "LAYOUTS",
    "NORMOUT_POSITIONS",
    "TorchvisionStyleVGG",
    "randomise_batch_norm",
    "reference_vgg",
    "reference_vgg_layers",
    "write_vgg_checkpoint",
]

LAYOUTS = ("flat", "torchvision")
# The flat indices of the two classifier dropouts, where the thesis puts NormOut.
NORMOUT_POSITIONS = (48, 51)


def reference_vgg_layers(hidden: int, num_classes: int = 10) -> list[nn.Module]:
    """The NormOut code's flat VGG-16-BN layer list (53 layers, dropouts at 48 and 51)."""
    layers: list[nn.Module] = []
    channels = 3
    for c in [
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
    ]:
        if c == "M":
            layers.append(nn.MaxPool2d(kernel_size=2))
        else:
            layers += [
                nn.Conv2d(channels, c, kernel_size=3, padding=1),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            channels = c
    layers += [nn.AdaptiveAvgPool2d(7), nn.Flatten()]
    layers += [
        nn.Linear(512 * 7 * 7, hidden),
        nn.ReLU(True),
        nn.Dropout(0.5),
        nn.Linear(hidden, hidden),
        nn.ReLU(True),
        nn.Dropout(0.5),
        nn.Linear(hidden, num_classes),
    ]
    return layers


class TorchvisionStyleVGG(nn.Module):
    """The same layers under torchvision's names."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers[:44])
        self.avgpool = layers[44]
        self.classifier = nn.Sequential(*layers[46:])

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def randomise_batch_norm(model: nn.Module) -> None:
    """Non-trivial running statistics and scales, so a mislaid batch norm changes outputs."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


def reference_vgg(layout: str, hidden: int) -> tuple[nn.Module, list[nn.Module]]:
    """A seeded reference model in ``layout`` and its flat layer list (the same modules)."""
    torch.manual_seed(0)
    layers = reference_vgg_layers(hidden)
    model = nn.Sequential(*layers) if layout == "flat" else TorchvisionStyleVGG(layers)
    randomise_batch_norm(model)
    return model.eval(), layers


def write_vgg_checkpoint(path: Path, model: nn.Module, layout: str, hidden: int) -> None:
    """Save ``model`` as the NormOut code does in ``layout``, with a sidecar TOML beside it
    describing NormOut spatiotemporal at 48 and 51 on CIFAR-10."""
    if layout == "flat":
        # The Lightning module holds the Sequential as `model`.
        state = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    else:
        state = model.state_dict()
    torch.save(state, path)
    positions = ",".join(str(p) for p in NORMOUT_POSITIONS)
    path.with_suffix(".toml").write_text(
        f'arch = "vgg16_bn"\nlayers = "normout:spatiotemporal@{positions}"\n'
        'dataset = "cifar10"\n' + ("" if hidden == 4096 else f"[arch_kwargs]\nhidden = {hidden}\n")
    )
