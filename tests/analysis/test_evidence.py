"""Every adversarial example in the document is what it says: inside its ball and the box,
produced at the epsilon it is labelled with, and misclassified exactly when marked fooled."""

from __future__ import annotations

import pytest
import torch
from document_decoders import decode_exact

from analysis.config import AuditConfig, build_suite, parse_epsilons
from analysis.pipeline import evaluation_set, run_audit
from attacks import geometry, robust_after
from checkpoints import load_checkpoint
from checkpoints.train import ZOO_DIR

EPSILONS = "linf=0.05,0.1,0.2;l2=0.25,0.5,1.0"
TOLERANCE = (1e-5, 1e-6)
"""An example lies in its ball when its distance is at most eps * (1 + 1e-5) + 1e-6."""


@pytest.fixture(scope="module")
def audited() -> tuple[dict, torch.nn.Module, torch.Tensor]:
    suite = build_suite("quick", "digits", epsilons=parse_epsilons(EPSILONS))
    config = AuditConfig(
        suite=suite, flatness=None, num_samples=60, flatness_samples=8, batch_size=256, seed=0
    )
    loaded = load_checkpoint(ZOO_DIR / "digits-mlp-dropout.pt")
    evaluation = evaluation_set(loaded, None, config.num_samples, config.seed)
    document = run_audit(loaded, evaluation, config, device=torch.device("cpu")).to_dict()
    return document, loaded.model.eval(), evaluation.x


def test_every_stored_example_is_what_it_says(audited) -> None:
    document, model, x = audited
    relative, absolute = TOLERANCE
    for norm in document["robustness"]["norms"]:
        epsilons = norm["epsilons"]
        assert len(epsilons) == 3
        attacks = {attack["label"]: attack for attack in norm["attacks"]}
        geom = geometry(norm["norm"])
        seen = set()
        for example in norm["examples"]:
            k = epsilons.index(example["epsilon"])
            attack, sample = attacks[example["attack"]], example["sample"]
            shape = example["shape"]
            original = decode_exact(example["original_exact"], shape, example["dtype"])
            adversarial = decode_exact(example["adversarial_exact"], shape, example["dtype"])
            assert torch.equal(original, x[sample])
            # Inside its ball and the box.
            distance = float(geom.distance(adversarial[None], original[None])[0])
            assert distance <= example["epsilon"] * (1 + relative) + absolute
            assert adversarial.min() >= 0 and adversarial.max() <= 1
            # Produced by the run at its epsilon: attacked there, and outside the next smaller
            # ball (the epsilons double, and the half-epsilon run is where stored examples
            # came from when records shared the sweep's first row). Every attack here ends
            # near its ball's surface: on this model at least 0.99 eps under L∞ and 0.8 eps
            # under L2, where clipping to the box shortens FGM and noise steps.
            assert attack["attacked"][k][sample] == "1"
            assert distance > 0.5 * example["epsilon"], (example["attack"], example["epsilon"])
            # Misclassified exactly when marked fooled, as the document's bits say.
            with torch.no_grad():
                logits = model(adversarial[None])[0]
            assert bool(logits.argmax() != example["label"]) == example["fooled"]
            assert example["predicted"] == int(logits.argmax())
            assert (attack["success"][k][sample] == "1") == example["fooled"]
            true_logit = logits[example["label"]]
            others = torch.cat([logits[: example["label"]], logits[example["label"] + 1 :]])
            assert example["margin"] == pytest.approx(float(true_logit - others.max()), abs=1e-5)
            seen.add((example["attack"], k))
        # Every attack has examples at every epsilon it attacked samples at.
        for label, attack in attacks.items():
            for k in range(len(epsilons)):
                if "1" in attack["attacked"][k]:
                    assert (label, k) in seen, (label, epsilons[k])
        assert any(e["fooled"] for e in norm["examples"])
        assert any(not e["fooled"] for e in norm["examples"])


def test_worst_case_masks_in_the_document_are_nested_over_epsilons(audited) -> None:
    document, _, _ = audited
    clean = torch.tensor([c == "1" for c in document["clean_correct"]])
    for norm in document["robustness"]["norms"]:
        successes = [
            torch.tensor([[c == "1" for c in row] for row in attack["success"]])
            for attack in norm["attacks"]
        ]
        masks = robust_after(clean, successes)
        for attack, mask in zip(norm["attacks"], masks, strict=True):
            counts = [entry["count"] for entry in attack["robust_accuracy_after"]]
            assert counts == mask.sum(dim=1).tolist()
        robust = torch.tensor([[c == "1" for c in row] for row in norm["robust"]])
        assert torch.equal(robust, masks[-1])
        # Nested balls: robust at a larger epsilon implies robust at every smaller one.
        assert (robust[1:] <= robust[:-1]).all()
