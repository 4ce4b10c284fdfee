"""The report's provenance table: where a result comes from and how it was computed."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd

from core.document import AuditResult, BatchSize, CheckpointInfo
from reports.cells import NON_FINITE, NOT_AVAILABLE, data_frame, number


def _time(seconds: float | None) -> str:
    if seconds is None:
        return NOT_AVAILABLE
    if not math.isfinite(seconds):
        return NON_FINITE
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def provenance_table(result: AuditResult) -> pd.DataFrame:
    """Where the result comes from: checkpoint and weight hashes, description, samples, seed,
    suite, versions, command line, times and host."""
    provenance = result.provenance
    info = result.checkpoint
    config = provenance.config or {}
    suite = config.get("suite") or {}
    rows: dict[str, str] = {
        "checkpoint": provenance.checkpoint,
        "checkpoint sha256": provenance.checkpoint_sha256,
        "weights sha256": provenance.weights_sha256 or NOT_AVAILABLE,
    }
    if info is not None:
        layer = info.layer
        positions = ",".join(map(str, layer.positions)) if layer.positions else "none"
        params = ", ".join(f"{k}={v}" for k, v in layer.params.items())
        # A model of the user's own or a graph file has no slots: its layers were found by type.
        found = provenance.model_source is not None or info.arch in (
            "torchscript",
            "pickled-module",
        )
        where = "found by type" if found else f"at {positions}"
        rows["architecture"] = info.arch
        rows["layers"] = f"{layer.kind} ({params}) {where}" if params else layer.kind
        rows["input"] = "×".join(map(str, info.input_shape))
        rows["input bounds"] = _convention(
            f"[{info.bounds[0]:g}, {info.bounds[1]:g}]", info.bounds_source
        )
        rows["normalisation"] = _convention(_normalization(info), info.normalization_source)
        rows["source format"] = info.source_format
    source = provenance.model_source
    if source is not None:
        kwargs = ", ".join(f"{k}={v!r}" for k, v in source.kwargs.items())
        rows["model code"] = (
            f"{source.name}({kwargs}) from {source.path or source.module}, "
            f"sha256 {source.sha256 or NOT_AVAILABLE}"
        )
    evaluation = result.evaluation
    rows["dataset"] = f"{evaluation.dataset} ({evaluation.source or NOT_AVAILABLE})"
    rows["samples"] = str(evaluation.num_samples)
    rows["seed"] = str(provenance.seed)
    rows["preset"] = str(suite.get("name", NOT_AVAILABLE))
    rows["schema version"] = result.schema_version
    for package, version in provenance.versions.items():
        rows[f"version: {package}"] = version or "not installed"
    rows["command line"] = " ".join(provenance.command_line or ()) or NOT_AVAILABLE
    rows["started"] = _time(provenance.started)
    rows["finished"] = _time(provenance.finished)
    rows["attack wall time"] = (
        f"{number(result.robustness.wall_time)} s"
        if result.robustness.wall_time is not None
        else NOT_AVAILABLE
    )
    rows["host"] = provenance.host or NOT_AVAILABLE
    rows["device"] = provenance.device or NOT_AVAILABLE
    if provenance.world_size is not None:
        rows["processes"] = str(provenance.world_size)
    sizes = provenance.batch_sizes
    if sizes is not None:
        rows["batch size requested"] = "auto" if sizes.requested is None else str(sizes.requested)
        rows["batch size: attacks"] = _batch_size(sizes.attacks)
        if sizes.flatness is not None:
            rows["batch size: flatness"] = _batch_size(sizes.flatness)
    return data_frame({k: [v] for k, v in rows.items()}, ["value"], "field")


def _normalization(info: CheckpointInfo) -> str:
    """``mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225`` or ``none``."""
    if info.mean is None or info.std is None:
        return "none: pixels reach the network as they are"
    mean, std = (", ".join(f"{v:g}" for v in values) for values in (info.mean, info.std))
    return f"mean {mean}; std {std}"


def _convention(values: str, source: str | None) -> str:
    """What the audit applied, and where it came from (not recorded before schema 1.6)."""
    return f"{values} ({source or 'source not recorded'})"


def _batch_size(choice: BatchSize) -> str:
    """``500 (estimated: 7.1 MB per sample + 13 MB, 23.6 GB free; halved once)``."""
    details = []
    if choice.per_sample_bytes is not None:
        fixed = f" + {choice.fixed_bytes / 1e6:.3g} MB" if choice.fixed_bytes else ""
        details.append(f"{choice.per_sample_bytes / 1e6:.3g} MB per sample{fixed}")
    if choice.available_bytes is not None:
        details.append(f"{choice.available_bytes / 1e9:.3g} GB free")
    text = f"{choice.size} ({choice.how}{': ' + ', '.join(details) if details else ''})"
    if choice.halvings:
        text += f", halved {choice.halvings}× after running out of memory"
    return text
