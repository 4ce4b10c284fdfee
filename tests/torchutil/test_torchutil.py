"""The plumbing attacks and flatness share: modes, seeds, default device, precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchutil import (
    apply_mode,
    child_generator,
    draw_seed,
    draw_seeds,
    full_precision,
    keyed_generators,
    make_generator,
    mix_seeds,
    model_mode,
    seeded_global_rng,
    splitmix64,
    torch_default_device,
)


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.InstanceNorm2d(2, track_running_stats=True),
        nn.Dropout2d(0.5),
        nn.Flatten(),
        nn.Dropout(0.5),
    )


def test_train_mode_freezes_normalisation_and_the_flags_come_back_exactly() -> None:
    model = _model().train()
    model[3].eval()  # a mixed state
    before = [m.training for m in model.modules()]
    with model_mode(model, train=True):
        assert [m.training for m in model] == [True, False, False, True, True, True]
    assert [m.training for m in model.modules()] == before
    with model_mode(model, train=False):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before


def test_flags_come_back_after_an_exception() -> None:
    model = _model().eval()
    with pytest.raises(RuntimeError), model_mode(model, train=True):
        raise RuntimeError("inside")
    assert not any(m.training for m in model.modules())


def test_apply_mode_leaves_running_statistics_alone() -> None:
    model = _model()
    apply_mode(model, train=True)
    stats = model[1].running_mean.clone()
    model(torch.randn(4, 1, 5, 5, generator=make_generator(0)))
    assert torch.equal(model[1].running_mean, stats)


def test_seeds_are_the_draws_of_the_generator_on_its_device() -> None:
    # The formula every stage used before: the same seed gives the same children.
    expected = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(5)))
    assert draw_seed(make_generator(5)) == expected
    assert draw_seeds(make_generator(5), 3)[0] == expected
    assert draw_seed(make_generator(5), bound=2**31) < 2**31
    child = child_generator(make_generator(5))
    assert child.device == torch.device("cpu") and child.initial_seed() == expected


def test_keyed_generators_depend_on_the_seed_the_key_and_the_stream_only() -> None:
    # SplitMix64's reference outputs: the first two of the generator started at 0.
    assert splitmix64(0) == 0xE220A8397B1DCDAF
    assert splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    h = splitmix64(splitmix64(splitmix64(0 ^ 9) ^ 4) ^ 1)
    assert mix_seeds(9, 4, 1) == h >> 32
    assert mix_seeds(9, -1, 1) == mix_seeds(9, 2**64 - 1, 1)
    seeds = {
        mix_seeds(seed, key, stream) for seed in (0, 1) for key in range(50) for stream in (0, 1)
    }
    assert len(seeds) == 200 and max(seeds) < 2**32
    generators = keyed_generators(9, [4, 8, 2], stream=1)
    alone = keyed_generators(9, [2], stream=1)
    assert all(g.device == torch.device("cpu") for g in generators)
    assert generators[2].initial_seed() == alone[0].initial_seed() == mix_seeds(9, 2, 1)
    assert torch.equal(torch.rand(3, generator=generators[2]), torch.rand(3, generator=alone[0]))


def test_generators_ignore_the_default_device() -> None:
    torch.set_default_device("meta")
    try:
        generator = make_generator(1)
        seed = draw_seed(generator)
        with torch_default_device():
            assert torch.empty(1).device == torch.device("cpu")
        assert torch.empty(1).device == torch.device("meta")
    finally:
        torch.set_default_device(None)
    assert generator.device == torch.device("cpu")
    assert seed == draw_seed(make_generator(1))


def test_the_global_rng_is_seeded_inside_and_restored_after() -> None:
    state = torch.get_rng_state()
    with seeded_global_rng(3, torch.device("cpu")):
        inside = torch.rand(2)
    with seeded_global_rng(3, torch.device("cpu")):
        assert torch.equal(torch.rand(2), inside)
    assert torch.equal(torch.get_rng_state(), state)


def test_full_precision_turns_tf32_off_and_restores_it() -> None:
    precision = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast("cpu"), full_precision(torch.device("cpu")):
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.is_autocast_enabled("cpu")
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn


def test_train_mode_freezes_normalisation_inside_a_torchscript_archive() -> None:
    """A scripted module is no instance of its original class: batch norm is found by its
    class name, so its running statistics stay put while dropout is active."""
    torch.manual_seed(0)
    scripted = torch.jit.script(_model().eval())
    x = torch.randn(4, 1, 5, 5, generator=make_generator(0))
    with model_mode(scripted, train=True):
        flags = {name: m.training for name, m in scripted.named_modules()}
        assert flags == {
            "": True,
            "0": True,
            "1": False,
            "2": False,
            "3": True,
            "4": True,
            "5": True,
        }
        stats = dict(scripted.named_modules())["1"].running_mean.clone()
        first, second = scripted(x), scripted(x)
        assert torch.equal(dict(scripted.named_modules())["1"].running_mean, stats)
        assert not torch.equal(first, second)  # the dropout layers are active
    assert not any(m.training for m in scripted.modules())
