"""Input conventions: normalisations by name, refused when they cannot apply, and where the
normalisation and bounds of a loaded checkpoint came from."""

from __future__ import annotations

import pytest
import torch

from checkpoints import CheckpointError, CheckpointSpec, Description, load_checkpoint
from checkpoints.architectures import build_network
from checkpoints.format import build_model, save_checkpoint
from checkpoints.spec import NAMED_NORMALIZATIONS, normalization_name, parse_normalization
from commands.description import add_description_arguments

# The published constants, copied from their sources rather than from our code: torchvision's
# ImageNet example and the CIFAR-10 training set's per-channel statistics most CIFAR-10 code
# passes to torchvision's Normalize; the NormOut code's CIFAR-10 values (its std differs).
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR10_TORCHVISION = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
NORMOUT_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("imagenet", IMAGENET),
        ("ImageNet", IMAGENET),
        ("cifar10-torchvision", CIFAR10_TORCHVISION),
        ("cifar10", NORMOUT_CIFAR10),
        ("normout-cifar10", NORMOUT_CIFAR10),
        ("mnist", ((0.1307,), (0.3081,))),
        ("0.5:0.25", ((0.5,), (0.25,))),
        ("none", "none"),
        ("default", "default"),
    ],
)
def test_normalisations_by_name(text, expected) -> None:
    assert parse_normalization(text, "--normalization") == expected


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="cifar10-torchvision, imagenet") as caught:
        parse_normalization("imagenet21k", "--normalization")
    assert "--normalization" in str(caught.value) and "MEAN" in str(caught.value)


def test_every_name_is_in_the_help_and_the_readme() -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser()
    add_description_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in NAMED_NORMALIZATIONS:
        assert name in help_text, name
        assert f"`{name}`" in readme, name


def test_normalization_name_is_exact() -> None:
    assert normalization_name(*IMAGENET) == "imagenet"
    assert normalization_name((0.485, 0.456, 0.406), (0.229, 0.224, 0.2251)) is None
    assert normalization_name(None, None) is None


def _plain_mlp(tmp_path, channels_shape=(1, 8, 8)):
    torch.manual_seed(0)
    network = build_network("mlp", channels_shape, 10)
    path = tmp_path / "plain.pt"
    torch.save(network.state_dict(), path)
    return network, path


def test_named_normalisation_is_applied_and_its_source_recorded(tmp_path) -> None:
    network, path = _plain_mlp(tmp_path)
    loaded = load_checkpoint(
        path,
        Description(
            arch="mlp",
            dataset="digits",
            normalization=parse_normalization("mnist", "--normalization"),
        ),
    )
    assert loaded.spec.mean == (0.1307,) and loaded.spec.std == (0.3081,)
    assert loaded.spec.normalization_source == "--normalization (mnist)"
    assert loaded.spec.bounds_source == "default"
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        expected = network.eval()((x - 0.1307) / 0.3081)
        torch.testing.assert_close(loaded.model(x), expected, rtol=0, atol=0)


def test_sources_of_a_sidecar_and_of_nothing(tmp_path) -> None:
    _, path = _plain_mlp(tmp_path)
    bare = load_checkpoint(path, Description(arch="mlp", dataset="digits"))
    assert bare.spec.mean is None and bare.spec.normalization_source == "not given"
    (tmp_path / "plain.toml").write_text(
        'arch = "mlp"\ndataset = "digits"\nnormalization = "0.5:0.1"\nbounds = [0.0, 1.0]\n'
    )
    described = load_checkpoint(path)
    assert described.spec.mean == (0.5,) and described.spec.std == (0.1,)
    assert described.spec.normalization_source == "normalization in plain.toml"
    assert described.spec.bounds_source == "bounds in plain.toml"
    flagged = load_checkpoint(path, Description(bounds=(0.0, 1.0)))
    assert flagged.spec.bounds_source == "--bounds"


def test_normalisation_of_the_wrong_channel_count_is_refused(tmp_path) -> None:
    _, path = _plain_mlp(tmp_path)
    imagenet = parse_normalization("imagenet", "--normalization")
    with pytest.raises(CheckpointError, match="3 values per statistic.*1 input channel"):
        load_checkpoint(path, Description(arch="mlp", dataset="digits", normalization=imagenet))


def test_our_file_records_its_normalisation_and_source(tmp_path) -> None:
    spec = CheckpointSpec("mlp", 10, (1, 8, 8), dataset="digits", mean=(0.5,), std=(0.1,))
    network, _ = build_model(spec)
    path = save_checkpoint(tmp_path / "ours.pt", network, spec)
    loaded = load_checkpoint(path)
    assert loaded.spec.normalization_source == "recorded in the checkpoint"
    assert loaded.spec.bounds_source == "recorded in the checkpoint"
    # Restating it is fine and keeps the source; a name of other values contradicts the file.
    restated = load_checkpoint(path, Description(normalization=((0.5,), (0.1,))))
    assert restated.spec.normalization_source == "recorded in the checkpoint"
    with pytest.raises(CheckpointError, match="records normalization 0.5:0.1"):
        load_checkpoint(path, Description(normalization=parse_normalization("mnist", "x")))
