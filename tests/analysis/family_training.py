"""How each member of the validation family is built: its recipe, the seeded training loop
(with Madry et al.'s PGD adversarial training) and the checkpoint file a user would bring.

Trained weights are cached in a folder keyed by a hash of the recipe (pytest's cache folder in
the tests), never in the repository.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from validation_family import (
    MLP,
    BatchNormCNN,
    Binarized,
    GeluCNN,
    JpegLike,
    MaxPoolCNN,
    RandomEnsemble,
    RandomInput,
    SmallResNet,
    SoftmaxOutput,
    SteepTanh,
    WrongBackward,
)

from checkpoints import save_checkpoint
from checkpoints.architectures import build_network
from checkpoints.datasets import load_dataset
from checkpoints.layers import LayerSpec
from checkpoints.spec import CheckpointSpec

# Part of every cache key: raise it when a model definition or the training loop changes.
FAMILY_VERSION = 1


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
