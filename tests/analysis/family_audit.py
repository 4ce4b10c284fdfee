"""Auditing a member of the validation family as a user would, through the command line's
``main``, and comparing the audit with ``EXPECTED`` and with the independent references."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from family_expected import EXPECTED, compare_flags
from family_reference import (
    Bound,
    Reference,
    autoattack_rand_robust,
    paired_bound,
    reference_attacks,
)
from family_training import RECIPES, _data_path, build, recipe_key
from torch import Tensor

from checkpoints.datasets import load_dataset


@dataclass(frozen=True)
class Observation:
    """One audited member of the family.

    Attributes:
        name: the member.
        document: the audit document (None when the audit did not complete).
        status: the audit's exit status, or the exception that escaped it.
        references: independent attacks per norm (empty when not measured).
        bounds: the audit against AutoAttack per norm.
        seconds: the audit's wall time.
    """

    name: str
    document: dict[str, Any] | None
    status: str
    references: dict[str, Reference]
    bounds: dict[str, Bound]
    seconds: float

    @property
    def overstated(self) -> bool | None:
        if not self.references:
            return None
        return any(r.overstated for r in self.references.values())

    def problems(self) -> list[str]:
        """Disagreements with ``EXPECTED`` and the AutoAttack bound (empty: all as expected)."""
        if self.document is None:
            return [f"the audit did not complete: {self.status}"]
        problems = [] if self.status == "0" else [f"exit status {self.status}"]
        problems += compare_flags(EXPECTED[self.name], self.document, self.overstated)
        for norm, bound in self.bounds.items():
            if not bound.holds:
                problems.append(
                    f"{norm}: audit {bound.audit:.3f} exceeds AutoAttack {bound.autoattack:.3f} "
                    f"(interval of the difference "
                    f"{bound.interval[0]:+.3f}..{bound.interval[1]:+.3f})"
                )
        return problems


def _robust_mask(norm_section: dict[str, Any]) -> Tensor:
    row = norm_section["robust"][0]
    return torch.tensor([c == "1" for c in row], dtype=torch.bool)


def observe(
    name: str,
    cache: Path,
    out: Path,
    preset: str = "standard",
    num_samples: int = 1000,
    data_dir: Path | None = None,
    references: bool = True,
) -> Observation:
    """Build ``name``, audit it through the command line's ``main`` and, if asked, measure the
    independent references and the AutoAttack bound on the audit's own samples."""
    from commands.audit import main

    path, flags = build(name, cache, data_dir)
    argv = [str(path), *flags, "--preset", preset, "--num-samples", str(num_samples)]
    argv += ["--no-flatness", "--out", str(out), "--quiet", "--device", "cpu"]
    started = time.time()
    try:
        status = str(main(argv))
    except Exception as err:  # noqa: BLE001 - the point is to report what escaped the audit
        return Observation(name, None, f"{type(err).__name__}: {err}", {}, {}, 0.0)
    seconds = time.time() - started
    document = json.loads((out / path.stem / "audit.json").read_text())
    # Stochastic models and probability outputs get no ground truth for PGD-CE: it would need
    # EOT and logits; their rows expect reliability flags instead. A random model is still
    # bounded by AutoAttack's EOT version where its row says so.
    expected = EXPECTED[name]
    ground_truth = not (expected.overstated is None and expected.kind == "masked")
    if not references or not (ground_truth or expected.autoattack):
        return Observation(name, document, status, {}, {}, seconds)
    from checkpoints import load_checkpoint
    from checkpoints.spec import Description

    loaded = load_checkpoint(path, Description(dataset=RECIPES[name].dataset), trust=True)
    test = load_dataset(RECIPES[name].dataset, "test", _data_path(RECIPES[name].dataset, data_dir))
    indices = torch.tensor(document["evaluation"]["indices"])
    x, y = test.x[indices], test.y[indices]
    found: dict[str, Reference] = {}
    bounds: dict[str, Bound] = {}
    key = f"{name}-{recipe_key(RECIPES[name])}"
    for section in document["robustness"]["norms"]:
        norm, epsilon = section["norm"], section["epsilons"][0]
        if ground_truth:
            found[norm] = reference_attacks(loaded.model, x, y, norm, epsilon, cache, key)
        if expected.autoattack == "standard":
            bounds[norm] = paired_bound(_robust_mask(section), found[norm].autoattack_robust)
        elif expected.autoattack == "rand":
            theirs = autoattack_rand_robust(loaded.model, x, y, norm, epsilon, cache, key)
            bounds[norm] = paired_bound(_robust_mask(section), theirs)
    return Observation(name, document, status, found, bounds, seconds)


def default_cache() -> Path:
    """pytest's cache folder of this repository (shared by the tests and the report)."""
    return Path(__file__).resolve().parents[2] / ".pytest_cache" / "d" / "validation-family"
