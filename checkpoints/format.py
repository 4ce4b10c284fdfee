"""Checkpoint files: our self-describing format and the foreign layouts real users have.

Nothing from a file runs without consent: every ``torch.load`` uses ``weights_only=True``. A
file that holds pickled Python objects (a whole ``nn.Module``, a payload) or a TorchScript
archive is refused with the remedy named, and loads only with ``trust=True``
(``--trust-checkpoint``). Every bad file ends in one :class:`CheckpointError` whose one-line
message names the file, what was expected, what arrived and the fix.

Foreign layouts are handled by one remapping function per format, never per model name:

- ``state_dict``: a plain mapping of names to tensors;
- ``lightning``: a PyTorch Lightning ``.ckpt`` (weights under ``state_dict``);
- prefixes ``model.``, ``module.`` and ``_orig_mod.`` (Lightning, DataParallel, compile) are
  stripped while they stand in the way;
- ``torchvision-vgg``: VGG weights as ``features.*`` / ``classifier.{0,3,6}.*``, mapped onto
  the flat Sequential of the NormOut code;
- ``torchscript``: an archive that carries its own graph. It is code (it runs on load and on
  every forward pass), so it loads only with ``trust=True``; torch.export and torch.package
  archives, programs too, are refused.

A network of the user's own (``Description.model``, ``--model FILE.py:NAME``) is built from
their code (``checkpoints.usermodel``) and takes the weights of a state_dict, a Lightning
``.ckpt`` or a file of ours in place of a registered architecture.

The weights are always loaded with ``strict=True``; a mismatch is an error that lists the
missing and unexpected keys and the likely cause.

A description (flags, sidecar) given for a file that describes itself (ours) or carries its
own graph (TorchScript, a pickled module) is applied, with a line in
``LoadedCheckpoint.flag_notes`` for the command to print, or refused; it is never ignored.

This module is the loader, which decides what a file is and routes it, and the public face of
its parts: ``checkpoints.checkfile`` (the error, the file's hashes, quoting what was found),
``checkpoints.ours`` (our format: writer, validator, a description checked against it),
``checkpoints.consent`` (files that are code), ``checkpoints.foreign`` (foreign files of
weights), ``checkpoints.matching`` (fitting weights onto a network), ``checkpoints.given``
(the description as given, and where each value came from) and ``checkpoints.codemodels``
(models built by code: a file's own graph, a class of the user's own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from checkpoints.architectures import Normalized, build_network
from checkpoints.checkfile import (
    CheckpointError,
    check_tensors,
    error_summary,
    file_sha256,
    open_checkpoint,
    weights_sha256,
)
from checkpoints.codemodels import (
    graph_description_error,
    load_user_model,
    refuse_on_graph,
    user_spec,
    wrap_graph,
)
from checkpoints.consent import (
    PickledObjectsError,
    code_archive_kind,
    program_unsupported,
    read_raw,
    torchscript_refused,
)
from checkpoints.foreign import foreign_state_dict, resolve_foreign
from checkpoints.given import Given, check_combination, merge_given, with_sources
from checkpoints.layers import LayerSpec
from checkpoints.matching import build_spec_network, check_match, infer_architectures, remap_keys
from checkpoints.ours import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RESAVE_ADVICE,
    apply_overrides,
    document_error,
    our_weights,
    save_checkpoint,
    spec_from_document,
)
from checkpoints.spec import (
    CheckpointSpec,
    Description,
    read_sidecar,
    shape_and_classes,
    sidecar_path,
)
from checkpoints.usermodel import ModelReference
from core.document import CheckpointInfo, LayerInfo, ModelSource, as_read

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "CodeNotRunError",
    "LoadedCheckpoint",
    "PickledObjectsError",
    "build_model",
    "code_archive_kind",
    "file_sha256",
    "graph_description_error",
    "infer_architectures",
    "load_checkpoint",
    "read_raw",
    "save_checkpoint",
    "weights_sha256",
]


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready for evaluation and what is known about it.

    Attributes:
        model: maps images in ``spec.bounds`` (normally [0, 1]) to logits; normalisation is
            inside; eval mode.
        spec: the full description.
        path: the file it came from.
        sha256: sha256 of the file's bytes.
        weights_sha256: sha256 of the weights (names, dtypes, shapes, values), or None for a
            TorchScript archive.
        notes: what was inferred or remapped while loading, for display.
        model_source: where a model of the user's own class came from (``--model``), the
            document's record (``checkpoints.usermodel.build_user_model``); None for any
            other model.
        flag_notes: what description flags did to a file that describes itself or carries
            its own graph, one line each, for the command to print on stderr (also in
            ``notes``).
    """

    model: nn.Module
    spec: CheckpointSpec
    path: Path
    sha256: str
    weights_sha256: str | None
    notes: tuple[str, ...] = ()
    model_source: ModelSource | None = None
    flag_notes: tuple[str, ...] = ()

    def info(self) -> CheckpointInfo:
        """The result document's ``checkpoint`` section: the spec, and as its loading notes
        ``notes``, what was inferred or remapped while loading (the lines of ``flag_notes``
        among them)."""
        spec = self.spec
        return CheckpointInfo(
            arch=spec.arch,
            num_classes=spec.num_classes,
            input_shape=spec.input_shape,
            layer=LayerInfo(
                kind=spec.layer.kind,
                params=as_read(dict(spec.layer.params)),
                positions=None if spec.layer.positions is None else tuple(spec.layer.positions),
            ),
            arch_kwargs=as_read(dict(spec.arch_kwargs)),
            dataset=spec.dataset,
            mean=None if spec.mean is None else tuple(float(v) for v in spec.mean),
            std=None if spec.std is None else tuple(float(v) for v in spec.std),
            bounds=(float(spec.bounds[0]), float(spec.bounds[1])),
            training=as_read(dict(spec.training)),
            clean_accuracy=None if spec.clean_accuracy is None else float(spec.clean_accuracy),
            source_format=spec.source_format,
            normalization_source=spec.normalization_source,
            bounds_source=spec.bounds_source,
            loading_notes=tuple(self.notes),
        )


def load_checkpoint(
    path: str | Path,
    description: Description | None = None,
    trust: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load a checkpoint of any supported layout as an eval-mode model taking [0, 1] pixels.

    Nothing from the file runs unless ``trust`` is set: pickled Python objects and TorchScript
    archives (programs that run on load and on every forward pass) are refused without it.
    The user's own model code (``description.model``) runs because they named it; code that
    a sidecar file names runs only with ``trust``.

    Args:
        path: the file (ours, a state_dict, a Lightning ``.ckpt``, a TorchScript archive).
        description: what flags say about it; overrides a sidecar ``FILE.toml``/``FILE.json``.
            For a file that describes itself or carries its own graph, each given field is
            applied (with a line in ``flag_notes``) or refused.
        trust: allow code from the file (unpickling Python objects, TorchScript) and a file of
            ours without its recorded weights hash: only for files from a trusted source.
        device: where the model goes.

    Returns:
        The model with its spec, file hash and notes.

    Raises:
        CheckpointError: the file cannot be read, carries code without ``trust``, or does not
            match its description, or the user's model code fails; the one-line message names
            the file, what was expected, what arrived and how to fix it. No other exception
            escapes.
    """
    return load_with_options(Path(path), description, trust, trust, device)


class CodeNotRunError(CheckpointError):
    """The file would load into a model built from the user's code, which was not run
    (``checkpoints.inspect`` never runs code); ``reference`` names that code."""

    def __init__(self, message: str, reference: ModelReference) -> None:
        super().__init__(message)
        self.reference = reference


def load_with_options(
    path: Path,
    description: Description | None,
    trust: bool,
    run_code: bool,
    device: str | torch.device,
    inspect_only: bool = False,
) -> LoadedCheckpoint:
    """:func:`load_checkpoint`; ``run_code`` False refuses code from the file even when
    ``trust`` is set (``trust`` then only accepts a file of ours without its weights hash);
    ``inspect_only`` never runs the user's model code either (:class:`CodeNotRunError`)."""
    open_checkpoint(path).close()  # a regular file within the limit, before anything else is read
    flags = description or Description()
    sidecar = sidecar_path(path)
    side, notes = Description(), []
    if sidecar is not None:
        try:
            side = read_sidecar(sidecar)
        except ValueError as err:
            raise CheckpointError(str(err)) from None
        notes.append(f"description from {sidecar}")
    given = merge_given(flags, side, sidecar)
    described = given.merged
    check_combination(given, path)
    if described.model is not None and flags.model is None and not trust and not inspect_only:
        reference = described.model
        named = f"{reference.target}:{reference.name}" if reference.kind == "file" else reference
        raise CheckpointError(
            f"{sidecar} names model code {reference}, which would run to build the model, and "
            f"code named by a file runs only with consent: pass --model {named} yourself, or "
            "--trust-checkpoint if you trust the sidecar"
        )
    try:
        sha = file_sha256(path)
    except OSError as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({error_summary(err)}); check its permissions"
        ) from None

    kind = code_archive_kind(path)
    if kind is not None:
        if kind != "torchscript":
            raise CheckpointError(program_unsupported(path, kind))
        refuse_on_graph(given, path, "a TorchScript archive")
        if not run_code:
            raise CheckpointError(torchscript_refused(path))
        try:
            with open_checkpoint(path) as handle:
                graph = torch.jit.load(handle, map_location="cpu")
        except CheckpointError:
            raise
        except Exception as err:
            # Trusted TorchScript runs its own code while loading; any failure is the file's.
            raise CheckpointError(
                f"{path}: loading the trusted TorchScript archive failed "
                f"({error_summary(err)}); expected a file written by torch.jit.save: re-save it"
            ) from None
        return _finish_graph(
            graph,
            "torchscript",
            "ran the TorchScript archive's code (--trust-checkpoint)",
            given,
            path,
            sha,
            notes,
            device,
        )

    raw = read_raw(path, run_code)
    if isinstance(raw, nn.Module):
        refuse_on_graph(given, path, "a pickled whole module")
        return _finish_graph(
            raw,
            "pickled-module",
            "unpickled a whole module (--trust-checkpoint)",
            given,
            path,
            sha,
            notes,
            device,
        )

    flag_notes: list[str] = []
    classes_known = True
    if (
        isinstance(raw, Mapping)
        and isinstance(raw.get("format"), str)
        and raw["format"] == FORMAT_NAME
    ):
        spec, flag_notes = apply_overrides(spec_from_document(raw, path), given, path)
        weights = our_weights(raw, path)
        recorded = raw.get("weights_sha256")
        if recorded is None:
            if not trust:
                raise CheckpointError(
                    f"{path}: a {FORMAT_NAME} file must record its 'weights_sha256' "
                    "(save_checkpoint always writes it), got none, so damage or edits to the "
                    f"weights cannot be detected; {RESAVE_ADVICE}, or pass --trust-checkpoint "
                    "to load it unchecked"
                )
            notes.append("no recorded weights sha256: loaded unchecked (--trust-checkpoint)")
        elif not isinstance(recorded, str):
            raise document_error(path, "weights_sha256", "a hex string", recorded)
        elif recorded != weights_sha256(weights):
            raise CheckpointError(
                f"{path}: the weights do not match their recorded sha256 (file damaged or edited); "
                "re-create it from its source"
            )
        if described.model is not None:
            flag_notes.append(
                f"{given.origin('model')} {described.model} is applied to {path}: the model is "
                f"built from that code instead of the recorded architecture {spec.arch} "
                f"({spec.layer} layers), and the file's weights load into it strictly"
            )
    else:
        weights, fmt = foreign_state_dict(raw, path)
        check_tensors(weights, path, "weight ")
        if described.model is not None:
            spec = user_spec(given, path, fmt)
            classes_known = (
                shape_and_classes(described.dataset, None, described.num_classes)[1] is not None
            )
        else:
            spec = resolve_foreign(described, path, fmt, weights)
    notes += flag_notes

    if described.model is not None:
        if inspect_only:
            raise CodeNotRunError(
                f"--model {described.model} would build the model from that code and load the "
                "weights into it; inspect never runs code",
                described.model,
            )
        network, spec, source, user_notes = load_user_model(
            given, spec, classes_known, weights, path
        )
        return _finish(
            network,
            with_sources(spec, given, path),
            path,
            sha,
            weights_sha256(network.state_dict()),
            notes + user_notes,
            device,
            model_source=source,
            flag_notes=flag_notes,
        )

    # Keys and shapes are checked on a meta-device skeleton first, so a description that does
    # not fit the weights costs no memory however large it claims the network is. Dropout-family
    # layers hold no weights (and some draw numbers while built), so the skeleton has none.
    with torch.device("meta"):
        skeleton = build_spec_network(replace(spec, layer=LayerSpec()), path)
    weights, remap_notes = remap_keys(weights, skeleton, spec.arch)
    check_match(skeleton, weights, path, spec)
    network = build_spec_network(spec, path)
    notes += remap_notes
    if any("torchvision-style" in n for n in remap_notes):
        spec = replace(spec, source_format="torchvision-vgg")
    spec = with_sources(spec, given, path)
    try:
        network.load_state_dict(weights, strict=True)
        model_sha = weights_sha256(network.state_dict())
        return _finish(network, spec, path, sha, model_sha, notes, device, flag_notes=flag_notes)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path}: the weights cannot be loaded into {spec.arch!r} ({error_summary(err)}); "
            "re-save them from the trained model (model.state_dict())"
        ) from None


def _finish(
    network: nn.Module,
    spec: CheckpointSpec,
    path: Path,
    sha: str,
    weights_sha: str | None,
    notes: list[str],
    device: str | torch.device,
    *,
    model_source: ModelSource | None = None,
    flag_notes: list[str] | tuple[str, ...] = (),
) -> LoadedCheckpoint:
    model = Normalized(network, spec.mean, spec.std).to(device).eval()
    return LoadedCheckpoint(
        model, spec, path, sha, weights_sha, tuple(notes), model_source, tuple(flag_notes)
    )


def _finish_graph(
    graph: nn.Module,
    source_format: str,
    note: str,
    given: Given,
    path: Path,
    sha: str,
    notes: list[str],
    device: str | torch.device,
) -> LoadedCheckpoint:
    """A whole module loaded as it is (TorchScript or pickled), its spec from its outputs and
    the flags (``wrap_graph``), ``note`` saying what ran to load it."""
    spec, flag_notes = wrap_graph(graph, given, path, source_format)
    notes += [note, *flag_notes]
    return _finish(
        graph,
        with_sources(spec, given, path),
        path,
        sha,
        None,
        notes,
        device,
        flag_notes=flag_notes,
    )


def build_model(spec: CheckpointSpec) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (network, normalised model) pair for ``spec``."""
    network = build_network(
        spec.arch, spec.input_shape, spec.num_classes, spec.layer, **spec.arch_kwargs
    )
    return network, Normalized(network, spec.mean, spec.std)
