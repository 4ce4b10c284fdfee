"""The attacks, the flatness estimators and the whole audit on the device given by ``--device``
(``pytest -m device --device cuda`` on a GPU machine), against the same work on the CPU.

Every random draw is made on the CPU and moved to the model's device, so one seed gives the
same probes, mini-batches, starts and directions on both, and the results differ only by the
rounding of another device's kernels. On the CPU itself (the default) the comparisons would
hold trivially and are left out; the runs on the device are not.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model
from audit_helpers import quick_config

from analysis.config import flatness_config
from analysis.pipeline import evaluation_set, run_audit
from attacks import registry
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR
from core.docfields import encode
from flatness import measure

pytestmark = pytest.mark.device

CPU = torch.device("cpu")


def _flatness(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    config = flatness_config("standard", 16)
    small = {
        name: {
            **values,
            **({"minibatch_size": 12} if "minibatch_size" in values else {}),
            **({"sample_size": 24} if "sample_size" in values else {}),
        }
        for name, values in config.options.items()
    }
    config = dataclasses.replace(config, options=small)
    result = measure(model, x, y, config, torch.Generator().manual_seed(0))
    return json.loads(json.dumps(encode(result), allow_nan=False))


def test_flatness_on_the_device(device: torch.device) -> None:
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-normout-spatiotemporal.pt", device=device)
    evaluation = evaluation_set(loaded, None, 48, 0)
    x, y = evaluation.x.to(device), evaluation.y.to(device)
    ours = _flatness(loaded.model, x, y)
    assert ours["hessian_trace"]["minibatch_size"] == 12
    assert all(ours[name]["stopped_by"] in ("target", "budget") for name in ("hessian_trace",))
    if device == CPU:
        return
    cpu = load_checkpoint(ZOO_DIR / "digits-mlp-normout-spatiotemporal.pt")
    theirs = _flatness(cpu.model, evaluation.x, evaluation.y)
    # The same draws, so the same number of them, and figures equal to float32 rounding.
    for name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace"):
        assert ours[name]["num_draws"] == theirs[name]["num_draws"], name
        assert ours[name]["value"] == pytest.approx(theirs[name]["value"], rel=1e-4), name
    top, reference = ours["hessian_eigenvalues"], theirs["hessian_eigenvalues"]
    for value, bound, other, other_bound in zip(
        top["eigenvalues"],
        top["residual_norms"],
        reference["eigenvalues"],
        reference["residual_norms"],
        strict=True,
    ):
        assert abs(value - other) <= bound + other_bound + 1e-4 * abs(other)


@pytest.mark.parametrize("kind", ["pgd", "apgd", "square", "fgsm"])
def test_attacks_on_the_device(kind: str, device: torch.device) -> None:
    model = tiny_model().to(device)
    x, y = tiny_data(tiny_model(), n=24)
    small = {"pgd": {"num_steps": 10}, "apgd": {"num_steps": 10}, "square": {"num_queries": 50}}
    attack = registry.get(kind)

    def run(where: torch.device) -> torch.Tensor:
        result = attack.function(
            model.to(where),
            x.to(where),
            y.to(where),
            [0.05, 0.2],
            norm="linf",
            generator=torch.Generator().manual_seed(3),
            **small.get(kind, {}),
        )
        assert result.success.device.type == where.type
        return result.success.cpu()

    success = run(device)
    if device == CPU:
        return
    # The same starts and queries; a sample on the decision boundary may fall either way.
    assert int((success != run(CPU)).sum()) <= 1


def test_audit_on_the_device(device: torch.device) -> None:
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-normout-spatiotemporal.pt")
    config = dataclasses.replace(quick_config(num_samples=60, flatness=True), model_batch_size=60)
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    document = run_audit(loaded, evaluation, config, device=device).to_dict()
    assert document["provenance"]["device"].startswith(device.type)
    assert not [f for norm in document["robustness"]["norms"] for f in norm["failures"]]
    assert document["flatness"]["active_layers"] is not None
    if device == CPU:
        return
    cpu = run_audit(
        load_checkpoint(ZOO_DIR / "digits-mlp-normout-spatiotemporal.pt"),
        evaluation,
        config,
        device=CPU,
    ).to_dict()
    assert document["clean_correct"] == cpu["clean_correct"]
    for ours, theirs in zip(
        document["robustness"]["norms"], cpu["robustness"]["norms"], strict=True
    ):
        for a, b in zip(
            ours["reliable_robust_accuracy"], theirs["reliable_robust_accuracy"], strict=True
        ):
            assert abs(a["count"] - b["count"]) <= 1
