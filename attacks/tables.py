"""Per-sample tables of attack results, each declared once, and the operations over them.

An attack result holds one value per sample and epsilon for each of its per-sample tables
(success, margin, the loss trace, ...). Each table is declared once, in its dataclass
attribute's metadata (``dataclasses.field(metadata=per_sample(...))``): its fill (what a
sample that was not attacked or not evaluated holds), its dtype, its shape (where the sample
dimension is) and how the engine and the suite treat it. ``declared`` reads the declarations
back from a dataclass, so that the operations below (``empty``, ``scatter``, ``take``, ``at``,
``cat``, ``inherit``, ``masked``) go over every table there is: a table added to
``AttackResult`` so is allocated, placed, inherited, selected and concatenated wherever
results are assembled, without another line elsewhere.

Tables travel as ``Tables``, a dict from a table's name to its tensor, or None where the
result has none (``targets`` of an untargeted attack). ``tables_of`` reads them from a result,
``arguments`` gives those of some tables (for a result's constructor or
``dataclasses.replace``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = [
    "CLEAN_INPUT",
    "Field",
    "Tables",
    "arguments",
    "at",
    "cat",
    "declared",
    "empty",
    "inherit",
    "masked",
    "per_sample",
    "scatter",
    "tables_of",
    "take",
]

Tables = dict[str, Tensor | None]
"""Per-sample tables by name; None where a result has no such table."""

CLEAN_INPUT = None
"""The fill of the examples: a sample that was not attacked holds its clean input."""

Kind = Literal["bool", "int64", "float"]
"""A table's dtype: bool, int64, or the inputs' floating dtype."""

Unattacked = Literal["kept", "outcome", "merged"]
"""What a table holds where the sample was not attacked at that epsilon: what the run gave
(``"kept"``), the fill in a suite's outcome (``"outcome"``), or the fill also in a result merged
from per-epsilon runs (``"merged"``)."""

_KEY = "robaudit.per_sample"
_DTYPES = {"bool": torch.bool, "int64": torch.int64}


@dataclass(frozen=True)
class Field:
    """One per-sample table.

    Attributes:
        name: the attribute that holds it (set by ``declared``).
        fill: what a sample that was not attacked or not evaluated holds; ``CLEAN_INPUT``
            (None) for the examples, which hold the clean input.
        kind: ``"bool"``, ``"int64"`` or ``"float"`` (the inputs' floating dtype).
        shape: the dimensions by letter: ``K`` epsilons, ``N`` samples, ``T`` the trace's
            length (padded with the fill where results of different lengths meet), ``...``
            the input's own dimensions.
        optional: None where the attack does not produce it (targets of an untargeted
            attack, first gradients of a gradient-free one); a merged result has it when its
            first run has it.
        inherited: a sample that keeps its example from a smaller epsilon (nested balls)
            keeps this value too.
        unattacked: see ``Unattacked``.
    """

    name: str = ""
    fill: bool | int | float | None = None
    kind: Kind = "float"
    shape: tuple[str, ...] = ("K", "N")
    optional: bool = False
    inherited: bool = False
    unattacked: Unattacked = "kept"

    @property
    def sample_dim(self) -> int:
        """Where the sample dimension ``N`` is."""
        return self.shape.index("N")

    @property
    def padded_dim(self) -> int | None:
        """Where the trace's dimension ``T`` is, or None."""
        return self.shape.index("T") if "T" in self.shape else None

    def dtype(self, inputs: torch.dtype) -> torch.dtype:
        """The table's dtype for inputs of dtype ``inputs``."""
        return _DTYPES.get(self.kind, inputs)


def per_sample(
    *,
    fill: bool | int | float | None,
    kind: Kind,
    shape: tuple[str, ...] = ("K", "N"),
    optional: bool = False,
    inherited: bool = False,
    unattacked: Unattacked = "kept",
) -> dict[str, Field]:
    """The metadata of a dataclass attribute that is a per-sample table (see ``Field``):
    ``margin: Tensor = dataclasses.field(metadata=per_sample(fill=nan, kind="float"))``."""
    spec = Field(
        fill=fill,
        kind=kind,
        shape=shape,
        optional=optional,
        inherited=inherited,
        unattacked=unattacked,
    )
    return {_KEY: spec}


def declared(cls: type) -> tuple[Field, ...]:
    """The per-sample tables of dataclass ``cls``, in the order of its attributes."""
    out: list[Field] = []
    for item in dataclasses.fields(cls):
        spec = item.metadata.get(_KEY)
        if isinstance(spec, Field):
            out.append(dataclasses.replace(spec, name=item.name))
    return tuple(out)


def tables_of(result: Any, fields: Iterable[Field] | None = None) -> Tables:
    """The tables of ``result`` (all those its class declares, or ``fields``)."""
    out: Tables = {}
    for field in declared(type(result)) if fields is None else fields:
        out[field.name] = getattr(result, field.name)
    return out


def arguments(tables: Mapping[str, Tensor | None], fields: Iterable[Field]) -> dict[str, Any]:
    """The entries of ``tables`` of the tables ``fields``, for a result's constructor or
    ``dataclasses.replace``."""
    return {f.name: tables[f.name] for f in fields if f.name in tables}


def empty(
    fields: Iterable[Field], num_epsilons: int, x: Tensor, *, length: int = 1
) -> dict[str, Tensor]:
    """Full tables of fills over the ``N`` samples of inputs ``x`` ``[N, ...]``: floating
    tables in ``x``'s dtype, all on ``x``'s device, traces of ``length`` (``T + 1``)."""
    out: dict[str, Tensor] = {}
    for field in fields:
        if field.fill is CLEAN_INPUT:
            out[field.name] = x.unsqueeze(0).repeat(num_epsilons, *([1] * x.dim()))
            continue
        sizes = {"K": (num_epsilons,), "N": (x.shape[0],), "T": (length,), "...": x.shape[1:]}
        shape = tuple(size for letter in field.shape for size in sizes[letter])
        out[field.name] = torch.full(shape, field.fill, dtype=field.dtype(x.dtype), device=x.device)
    return out


def scatter(
    out: Mapping[str, Tensor | None],
    part: Mapping[str, Tensor | None],
    index: Tensor,
    fields: Iterable[Field],
    *,
    row: int | None = None,
) -> None:
    """Place ``part``'s values for samples ``index`` ``[n]`` into the full tables ``out``, in
    place: all rows, or only row ``row`` (then ``part`` has no ``K`` dimension). A trace
    shorter than ``out``'s fills its first steps; a table that ``part`` or ``out`` lacks (or
    holds as None) is left as it is."""
    for field in fields:
        value, table = part.get(field.name), out.get(field.name)
        if value is None or table is None:
            continue
        dest = table if row is None else table[row]
        shift = 0 if row is None else 1
        key: list[Any] = [slice(None)] * (field.sample_dim - shift) + [index.to(dest.device)]
        padded = field.padded_dim
        if padded is not None:
            key[padded - shift] = slice(0, value.shape[padded - shift])
        dest[tuple(key)] = value.to(device=dest.device, dtype=dest.dtype)


def inherit(
    tables: Mapping[str, Tensor | None], k: int, samples: Tensor, fields: Iterable[Field]
) -> None:
    """In place: the samples where ``samples`` (bool ``[N]``) is True take row ``k - 1`` of
    every ``inherited`` table as their row ``k``."""
    for field in fields:
        table = tables.get(field.name)
        if table is None or not field.inherited:
            continue
        key = (slice(None),) * (field.sample_dim - 1) + (samples,)
        table[k][key] = table[k - 1][key]


def take(tables: Mapping[str, Tensor | None], index: Tensor, fields: Iterable[Field]) -> Tables:
    """The samples ``index`` ``[m]`` of every table, in that order."""
    out: Tables = {}
    for field in fields:
        value = tables.get(field.name)
        if field.name in tables:
            out[field.name] = (
                None
                if value is None
                else value.index_select(field.sample_dim, index.to(value.device))
            )
    return out


def at(tables: Mapping[str, Tensor | None], k: int, fields: Iterable[Field]) -> Tables:
    """Row ``k`` (the ``k``-th epsilon) of every table, without the ``K`` dimension."""
    out: Tables = {}
    for field in fields:
        if field.name in tables:
            value = tables[field.name]
            out[field.name] = None if value is None else value[k]
    return out


def cat(parts: Sequence[Mapping[str, Tensor | None]], fields: Iterable[Field]) -> Tables:
    """The tables of ``parts`` side by side along the sample dimension (results of calls on
    disjoint samples), traces padded with their fill to the longest; None where any part
    lacks the table."""
    out: Tables = {}
    for field in fields:
        values = [part.get(field.name) for part in parts]
        if any(v is None for v in values):
            out[field.name] = None
            continue
        tensors: list[Tensor] = [v for v in values if v is not None]
        padded = field.padded_dim
        if padded is not None:
            length = max(v.shape[padded] for v in tensors)
            tensors = [_pad(v, padded, length, field.fill) for v in tensors]
        out[field.name] = torch.cat(tensors, dim=field.sample_dim)
    return out


def masked(
    tables: Mapping[str, Tensor | None],
    fields: Iterable[Field],
    level: Literal["outcome", "merged"],
    attacked: Tensor,
) -> Tables:
    """``tables`` with the fill where ``attacked`` (bool ``[K, N]``, or ``[N]`` for tables of
    one row) is False, in the tables whose ``unattacked`` asks for it at ``level``: every such
    table for an outcome, those marked ``"merged"`` for a merged result. The other tables are
    the same tensors; the examples (filled with the clean input) cannot be masked so."""
    levels = {"merged"} if level == "merged" else {"outcome", "merged"}
    out: Tables = dict(tables)
    for field in fields:
        value = tables.get(field.name)
        if value is None or field.unattacked not in levels:
            continue
        if field.fill is CLEAN_INPUT:
            raise ValueError(f"table {field.name!r} is filled with the clean input, not masked")
        # ``attacked`` spread over the table's other dimensions (a trace's steps).
        shape = [1] * value.dim()
        shape[field.sample_dim - (2 - attacked.dim())] = attacked.shape[-1]
        if attacked.dim() == 2:
            shape[0] = attacked.shape[0]
        where = attacked.reshape(shape)
        if value.dtype == torch.bool:
            out[field.name] = value & where if not field.fill else value | ~where
        else:
            out[field.name] = torch.where(where, value, field.fill)
    return out


def _pad(value: Tensor, dim: int, length: int, fill: Any) -> Tensor:
    """``value`` grown to ``length`` along ``dim`` with ``fill`` at the end."""
    widths = [0] * (2 * value.dim())
    widths[2 * (value.dim() - 1 - dim) + 1] = length - value.shape[dim]
    return torch.nn.functional.pad(value, widths, value=fill)
