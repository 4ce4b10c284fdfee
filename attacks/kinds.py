"""Every attack kind a suite can name, each registered with ``attacks.registry.register``.

The registration order is the order ``list_attacks`` gives and the suite's ``ATTACKS`` keeps.
The package imports this module before anything else, so the registry is complete wherever it
is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attacks import backends
from attacks.apgd import APGD_LOSSES, apgd, autoattack
from attacks.backends import BACKENDS
from attacks.fab import fab
from attacks.fgsm import fgsm
from attacks.losses import LOSSES
from attacks.noise import random_noise
from attacks.pgd import TARGET_MODES, pgd, pgd_targeted, step_fraction
from attacks.registry import Family, Param, register
from attacks.square import SQUARE_BACKENDS, square
from core.document import AUTOATTACK_VERSIONS


def _native(params: Mapping[str, Any]) -> bool:
    """The native loop draws per sample; the libraries per batch (see ``batch_independent``)."""
    return bool(params["backend"] == "native")


def _one_step_size(params: Mapping[str, Any]) -> str | None:
    if params["rel_step_size"] is not None and params["abs_step_size"] is not None:
        return (
            "give rel_step_size or abs_step_size, not both; got "
            f"rel_step_size={params['rel_step_size']}, abs_step_size={params['abs_step_size']}"
        )
    return None


def _library_settings(params: Mapping[str, Any]) -> str | None:
    """What a library backend cannot compute (``backends.unsupported``)."""
    fraction = None
    if "num_steps" in params:
        fraction = step_fraction(
            params["num_steps"], params["rel_step_size"], params["abs_step_size"]
        )
    return backends.unsupported(
        params["backend"],
        loss=params["loss"],
        eot_samples=params["eot_samples"],
        target_mode=params.get("target_mode"),
        step_fraction=fraction,
    )


# Upper bounds of the counts a suite sets: each multiplies the forward (and backward) passes of
# every attacked sample, so a value past its bound would run for weeks, not finish.
_STEPS = Param(
    int,
    minimum=1,
    maximum=100_000,
    why="each step is a forward and backward pass of every attacked sample; 100,000 steps "
    "are 1,000 times the standard preset's 100",
)
_RESTARTS = Param(
    int,
    minimum=1,
    maximum=1_000,
    why="each restart runs the whole attack again; 1,000 is 200 times the thorough preset's 5",
)
_EOT = Param(
    int,
    minimum=1,
    maximum=10_000,
    why="each gradient averages this many forward and backward passes of every attacked "
    "sample; the audit's own EOT takes 8",
)
_TARGETS = Param(
    int,
    minimum=1,
    maximum=1_000,
    why="each target class is one more run of the attack, and a model has one wrong class "
    "fewer than classes: 999 for ImageNet's 1,000, the most of any common benchmark",
)
_STEP = Param(float, minimum=0, exclusive_minimum=True, optional=True)
_BOOL = Param(bool)
_BACKEND = Param(str, choices=BACKENDS)
_GRADIENT_LOSS = Param(str, choices=LOSSES)
_PGD_PARAMS = {
    "num_steps": _STEPS,
    "rel_step_size": _STEP,
    "abs_step_size": _STEP,
    "random_start": _BOOL,
    "num_restarts": _RESTARTS,
    "loss": _GRADIENT_LOSS,
    "keep": Param(str, choices=("best", "last")),
    "early_stop": _BOOL,
    "nested": _BOOL,
    "eot_samples": _EOT,
    "backend": _BACKEND,
}

register(
    "fgsm",
    fgsm,
    family=Family.ONE_STEP,
    backends=BACKENDS,
    params={
        "loss": _GRADIENT_LOSS,
        "nested": _BOOL,
        "eot_samples": _EOT,
        "backend": _BACKEND,
    },
    rules=(_library_settings,),
    independence=_native,
)
register(
    "pgd",
    pgd,
    family=Family.ITERATIVE,
    backends=BACKENDS,
    params=_PGD_PARAMS,
    rules=(_one_step_size, _library_settings),
    independence=_native,
)
register(
    "pgd-t",
    pgd_targeted,
    family=Family.TARGETED,
    backends=BACKENDS,
    params={
        "target_mode": Param(str, choices=TARGET_MODES),
        "num_target_classes": Param(
            int, minimum=1, maximum=_TARGETS.maximum, optional=True, why=_TARGETS.why
        ),
        **_PGD_PARAMS,
    },
    rules=(_one_step_size, _library_settings),
    independence=_native,
)
register(
    "square",
    square,
    family=Family.BLACK_BOX,
    backends=SQUARE_BACKENDS,
    params={
        "num_queries": Param(
            int,
            minimum=1,
            maximum=1_000_000,
            why="each query is a forward pass of every attacked sample; 1,000,000 queries are "
            "200 times the standard preset's 5,000",
        ),
        "p_init": Param(float, minimum=0, maximum=1, exclusive_minimum=True),
        "num_restarts": _RESTARTS,
        "rescale_schedule": _BOOL,
        "nested": _BOOL,
        "backend": Param(str, choices=SQUARE_BACKENDS),
    },
    independence=_native,
)
register(
    "noise",
    random_noise,
    family=Family.RANDOM,
    params={
        "num_draws": Param(
            int,
            minimum=1,
            maximum=100_000,
            why="each draw is a forward pass of every attacked sample; 100,000 draws are "
            "1,000 times the standard preset's 100",
        ),
        "nested": _BOOL,
    },
    independence=lambda params: True,
)
register(
    "apgd",
    apgd,
    family=Family.ITERATIVE,
    backends=("pyautoattack",),
    params={
        "loss": Param(str, choices=APGD_LOSSES),
        "targeted": _BOOL,
        "num_steps": _STEPS,
        "num_restarts": _RESTARTS,
        "num_target_classes": _TARGETS,
        "nested": _BOOL,
        "eot_samples": _EOT,
    },
    independence=lambda params: True,
)
register(
    "fab",
    fab,
    family=Family.MINIMUM_NORM,
    backends=("pyautoattack",),
    params={
        "targeted": _BOOL,
        "num_steps": _STEPS,
        "num_restarts": _RESTARTS,
        "num_target_classes": _TARGETS,
        "nested": _BOOL,
    },
    independence=lambda params: params["num_restarts"] == 1,
)
register(
    "autoattack",
    autoattack,
    family=Family.ENSEMBLE,
    backends=("pyautoattack",),
    params={"version": Param(str, choices=AUTOATTACK_VERSIONS), "nested": _BOOL},
)
