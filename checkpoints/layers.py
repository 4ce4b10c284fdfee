"""Dropout-family layers that model synaptic failure: NormOut, QSD and plain dropout.

Layers are described by a :class:`LayerSpec` (kind, parameters, positions), written on the
command line as ``KIND[:ARG,key=value,...][@POS,POS,...]``, for example
``normout:spatiotemporal@48,51``, ``qsd:drop_rate=0.2,alpha=0.2`` or ``dropout:0.5``.

This module describes layers, builds them and finds them in a model; the layers themselves,
each a pure function plus a thin ``nn.Module`` that is the identity in eval mode, are in
``checkpoints.dropouts``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from checkpoints.dropouts import (
    NORMOUT_METHODS,
    QSD,
    QSD_VARIANTS,
    Dropout,
    NormOut,
    dropout,
    normout,
    normout_keep_probability,
    qsd,
    qsd_coefficients,
    qsd_expected_coefficient,
    sample_beta,
)

__all__ = [
    "NORMOUT_METHODS",
    "QSD_VARIANTS",
    "Dropout",
    "LayerSpec",
    "NormOut",
    "QSD",
    "dropout",
    "family_kind",
    "family_layers",
    "found_layer_spec",
    "layer_defaults",
    "layer_kinds",
    "make_layer",
    "normout",
    "normout_keep_probability",
    "qsd",
    "qsd_coefficients",
    "qsd_expected_coefficient",
    "sample_beta",
]


# ------------------------------------------------------------------------------------- Registry

# kind -> (module class, name of the first positional argument, defaults)
_KINDS: dict[str, tuple[type[nn.Module], str, dict[str, Any]]] = {
    "normout": (
        NormOut,
        "method",
        {"method": "spatiotemporal", "use_abs": True, "temperature": None},
    ),
    "qsd": (
        QSD,
        "drop_rate",
        {"drop_rate": 0.2, "alpha": 0.2, "variant": "full", "unit_expectation": False},
    ),
    "dropout": (Dropout, "p", {"p": 0.5}),
}


def layer_kinds() -> list[str]:
    """Names of the registered dropout-family layer kinds (plus ``none``)."""
    return ["none", *sorted(_KINDS)]


def layer_defaults(kind: str) -> dict[str, Any]:
    """The parameters of layer kind ``kind`` with their defaults (empty for ``none``)."""
    return dict(_KINDS[kind][2]) if kind in _KINDS else {}


def _convert(value: str, default: Any) -> Any:
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if text.lower() == "none":
        return None
    if isinstance(default, (float, int)) or default is None:
        try:
            return float(text)
        except ValueError:
            if default is None:
                raise
            raise ValueError(f"expected a number, got {value!r}") from None
    return text


@dataclass(frozen=True)
class LayerSpec:
    """Which dropout-family layer an architecture uses and where.

    Attributes:
        kind: ``none``, ``dropout``, ``qsd`` or ``normout``.
        params: keyword arguments of the layer's module (all primitives).
        positions: architecture slots that hold the layer; ``None`` means the
            architecture's default slots.
    """

    kind: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if "+" in self.kind:
            self._check_mixed()
            return
        if self.kind not in layer_kinds():
            raise ValueError(
                f"unknown layer kind {self.kind!r}; known kinds: {', '.join(layer_kinds())}"
            )
        if self.kind != "none":
            defaults = _KINDS[self.kind][2]
            unknown = sorted(set(self.params) - set(defaults))
            if unknown:
                raise ValueError(
                    f"unknown parameter(s) {unknown} for layer kind {self.kind!r}; "
                    f"known: {sorted(defaults)}"
                )
        object.__setattr__(self, "params", dict(self.params))
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))
        make_layer(self)  # validates parameter values early

    def _check_mixed(self) -> None:
        """A mix of kinds (``dropout+normout``) describes the layers found in a model of the
        user's own: it names them and cannot be built."""
        parts = self.kind.split("+")
        if parts != sorted(set(parts)) or len(parts) < 2 or not set(parts) <= set(_KINDS):
            raise ValueError(
                f"a mix of layer kinds must join two or more of {', '.join(sorted(_KINDS))} "
                f"with '+' in alphabetical order, got {self.kind!r}"
            )
        if self.params or self.positions is not None:
            raise ValueError(f"a mix of layer kinds ({self.kind}) has no parameters or positions")
        object.__setattr__(self, "params", {})

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        """Parse ``KIND[:ARG,key=value,...][@POS,POS,...]``.

        >>> LayerSpec.parse("normout:spatiotemporal@48,51").positions
        (48, 51)
        """
        body, _, where = text.strip().partition("@")
        kind, _, args = body.partition(":")
        kind = kind.strip().lower()
        if kind not in layer_kinds():
            raise ValueError(
                f"unknown layer kind {kind!r} in {text!r}; known kinds: {', '.join(layer_kinds())}"
            )
        params: dict[str, Any] = {}
        if args and kind != "none":
            _, first, defaults = _KINDS[kind]
            for i, item in enumerate(a for a in args.split(",") if a.strip()):
                key, eq, value = item.partition("=")
                if not eq:
                    if i != 0:
                        raise ValueError(
                            f"in {text!r}: only the first argument may omit its name; "
                            f"write key=value for {item!r}"
                        )
                    key, value = first, item
                key = key.strip()
                if key not in defaults:
                    raise ValueError(
                        f"unknown parameter {key!r} for layer kind {kind!r} in {text!r}; "
                        f"known: {sorted(defaults)}"
                    )
                params[key] = _convert(value, defaults[key])
        positions = None
        if where.strip():
            try:
                positions = tuple(int(p) for p in where.split(",") if p.strip())
            except ValueError:
                raise ValueError(
                    f"layer positions must be integers after '@', got {where!r} in {text!r}"
                ) from None
        return cls(kind, params, positions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": dict(self.params),
            "positions": None if self.positions is None else list(self.positions),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSpec:
        positions = data.get("positions")
        return cls(
            str(data.get("kind", "none")),
            dict(data.get("params") or {}),
            None if positions is None else tuple(positions),
        )

    def __str__(self) -> str:
        text = self.kind
        if self.params:
            text += ":" + ",".join(f"{k}={v}" for k, v in self.params.items())
        if self.positions is not None:
            text += "@" + ",".join(str(p) for p in self.positions)
        return text


def make_layer(spec: LayerSpec) -> nn.Module:
    """A fresh module for ``spec`` (``nn.Identity`` for kind ``none``)."""
    if spec.kind == "none":
        return nn.Identity()
    if "+" in spec.kind:
        raise ValueError(
            f"layers of kinds {spec.kind} were found in a model, and cannot be built as one layer"
        )
    module_cls, _, defaults = _KINDS[spec.kind]
    kwargs = {**defaults, **spec.params}
    if spec.kind == "normout" and kwargs["temperature"] is not None:
        kwargs["temperature"] = float(kwargs["temperature"])
    return module_cls(**kwargs)


# ------------------------------------------------------------------------- found by type

# Torch's dropout layers count as plain dropout: each is the identity in eval mode and drops
# units in train mode, as ours do.
_TORCH_DROPOUT = (
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "AlphaDropout",
    "FeatureAlphaDropout",
)
# A TorchScript archive keeps each submodule's original class name (``original_name``).
_SCRIPTED_KINDS = {
    **{name: "dropout" for name in _TORCH_DROPOUT},
    "NormOut": "normout",
    "QSD": "qsd",
}


def family_kind(module: nn.Module) -> str | None:
    """``normout``, ``qsd`` or ``dropout`` for a dropout-family layer, else None.

    Found by type: ours (:class:`NormOut`, :class:`QSD`, :class:`Dropout`) and torch's dropout
    layers (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout``)
    and their subclasses; in a TorchScript archive, by the submodule's original class name.
    """
    if isinstance(module, torch.jit.RecursiveScriptModule):
        return _SCRIPTED_KINDS.get(str(getattr(module, "original_name", "")))
    for kind, (cls, _, _) in _KINDS.items():
        if isinstance(module, cls):
            return kind
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return "dropout"
    return None


def family_layers(model: nn.Module) -> list[tuple[str, str]]:
    """``(qualified name, kind)`` of each dropout-family layer of ``model``, in module order
    (see :func:`family_kind`)."""
    found = [(name, family_kind(module)) for name, module in model.named_modules()]
    return [(name, kind) for name, kind in found if kind is not None]


_ABSENT = object()


def _shared_params(modules: list[nn.Module], kind: str) -> dict[str, Any]:
    """The kind's parameters on which every module agrees (read from its attributes)."""
    shared: dict[str, Any] = {}
    for key in _KINDS[kind][2]:
        values = [getattr(module, key, _ABSENT) for module in modules]
        first = values[0]
        if (
            first is not _ABSENT
            and (first is None or isinstance(first, bool | int | float | str))
            and all(type(v) is type(first) and v == first for v in values)
        ):
            shared[key] = first
    return shared


def found_layer_spec(model: nn.Module) -> LayerSpec:
    """The :class:`LayerSpec` that names the dropout-family layers found in ``model``.

    One kind: that kind, with the parameters all its layers share; several: their kinds joined
    with ``+`` (``dropout+normout``); none: ``none``. Positions are None: such a model has no
    registered slots, and its layers go by their names (:func:`family_layers`).
    """
    modules = dict(model.named_modules())
    found = family_layers(model)
    kinds = sorted({kind for _, kind in found})
    if not kinds:
        return LayerSpec()
    if len(kinds) > 1:
        return LayerSpec("+".join(kinds))
    params = _shared_params([modules[name] for name, _ in found], kinds[0])
    try:
        return LayerSpec(kinds[0], params)
    except (ValueError, TypeError):
        # Values our own layer would refuse (torch allows dropout p = 1): the kind alone.
        return LayerSpec(kinds[0])
