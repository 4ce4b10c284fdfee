"""The records of the robustness section of the result document: each attack's outcome per
epsilon and sample, the sweeps, the failures, the adversarial examples and each norm's
section, with the questions a report, a gate or a summary asks of them.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from core.docfields import ALWAYS, FULL, OPTIONAL, BitRows, Json, Picklable, extra_field, need
from core.docjson import DocumentError
from core.stats import wilson_interval

FailureStatus = Literal["failed", "not-applicable"]
"""What became of an attack run that did not complete: it raised (``FAILED``), or it cannot
run (``NOT_APPLICABLE``: a gradient attack on a model without an input gradient)."""

AttackStatus = Literal["ok", FailureStatus]
"""What became of one attack at one epsilon: it ran (``OK``), or a ``FailureStatus``."""

OK: Final = "ok"
FAILED: Final = "failed"
NOT_APPLICABLE: Final = "not-applicable"


# Picklable: the suite's outcomes (attacks.outcomes) carry proportions, and a suite's result
# pickles.
@dataclass(frozen=True, kw_only=True)
class Proportion(Picklable):
    """A proportion with its 95 % Wilson interval.

    Attributes:
        value: ``count / total``; None when ``total`` is 0.
        count, total: the counts.
        wilson_95: ``(low, high)`` in [0, 1].
    """

    value: float | None
    count: int
    total: int
    wilson_95: tuple[float, float]
    extra: Json = extra_field()

    @classmethod
    def of(cls, count: int, total: int) -> Proportion:
        """``count`` of ``total``, with its interval."""
        return cls(
            value=count / total if total else None,
            count=count,
            total=total,
            wilson_95=wilson_interval(count, total),
        )


@dataclass(frozen=True, kw_only=True)
class GradientStats(Picklable):
    """Input-gradient health of one attack's run."""

    zero_fraction: float
    vanishing_fraction: float
    vanishing_threshold: float
    nonfinite_logits: int
    nonfinite_gradients: int
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class AttackRecord:
    """One attack's outcome under one norm, for each of the norm's K epsilons over N samples.

    A field named as a per-sample table of the attack's result (``success``, ``queries``, ...)
    is written from that table by ``analysis.robustness`` in the form its type asks for: bit
    rows, ``[K][N]`` numbers, ``[K]`` sums over the samples or one total.

    Attributes:
        robust_accuracy_after: [K] reliable robust accuracy after this attack (and the ones
            before it).
        broken, attempted: [K] samples this attack broke / attacked.
        success, attacked, last_success: [K][N] per-sample bits.
        success_step: [K][N] iteration of the first success; -1 not broken, -2 unknown.
        mean_loss_trace: [K][T] mean loss per iteration (None where undefined).
        nonfinite: [K] samples whose logits held NaN or Inf at some evaluation (the sum of
            the result's ``nonfinite`` table over the samples).
        nonfinite_samples: [K][N] bits of those samples (the ``nonfinite`` table itself,
            under its own name because ``nonfinite`` holds the counts).
        nonfinite_evaluations: sample evaluations with NaN or Inf logits in all.
        queries: sample evaluations spent in all (the ``queries`` table's total).
    """

    label: str
    kind: str
    source: str | None = need(FULL)
    status: AttackStatus | None = need(FULL, baseline=True)
    message: str | None = need(FULL)
    statuses: tuple[AttackStatus, ...] | None = need(FULL, since="1.1", baseline=True)
    messages: tuple[str | None, ...] | None = need(FULL, since="1.1")
    params: Json | None = need(FULL)
    backend: str | None = need(FULL)
    robust_accuracy_after: tuple[Proportion, ...]
    broken: tuple[int, ...] | None = need(FULL)
    attempted: tuple[int, ...] | None = need(FULL)
    success: BitRows
    attacked: BitRows
    last_success: BitRows | None = need(FULL)
    success_step: tuple[tuple[int, ...], ...] | None = need(FULL, since="1.1")
    mean_loss_trace: tuple[tuple[float | None, ...], ...] | None = need(FULL)
    nonfinite: tuple[int, ...] | None = need(OPTIONAL, since="1.2")
    nonfinite_samples: BitRows | None = need(OPTIONAL, since="1.2")
    nonfinite_evaluations: int | None = need(OPTIONAL, since="1.2")
    queries: int | None = need(FULL)
    num_forward: int | None = need(FULL)
    num_backward: int | None = need(FULL)
    wall_time: float | None = need(FULL)
    gradient_stats: GradientStats | None = need(FULL)
    extra: Json = extra_field()

    def status_at(self, k: int) -> AttackStatus:
        """What became of this attack at the ``k``-th epsilon: ``statuses[k]``, else
        ``status`` (a document of schema 1.0 says only whether the attack failed somewhere:
        that holds at every epsilon), else ``OK`` (a baseline does not say)."""
        if self.statuses is not None and k < len(self.statuses):
            return self.statuses[k]
        return self.status or OK


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """A robustness curve: one attack at M epsilons over S samples.

    Attributes:
        success_rate: [M] share of the S samples broken.
        success: [M][S] per-sample bits.
        samples: [S] positions in the evaluation set (all of it for the nested sweep, a
            subsample for the independent one).
        mean_loss_trace: [M][T].
    """

    attack: str
    epsilons: tuple[float, ...]
    success_rate: tuple[Proportion, ...]
    success: BitRows
    samples: tuple[int, ...] | None = need(OPTIONAL)
    mean_loss_trace: tuple[tuple[float | None, ...], ...]
    extra: Json = extra_field()


@dataclass(frozen=True, kw_only=True)
class Failure(Picklable):
    """An attack or sweep run that failed or did not apply.

    ``attacks.execute`` records it in the ``SuiteResult``, which pickles, so it pickles too.

    Attributes:
        stage: ``"attack"`` (the main list), ``"sweep"`` or ``"independent-sweep"``.
        label: the attack's label.
        epsilon: the epsilon of a main-list attack, None for a sweep (all its epsilons).
        status: ``"failed"`` or ``"not-applicable"``.
        message: the error's type and text, or the reason it does not apply.
    """

    stage: Literal["attack", "sweep", "independent-sweep"] = need(ALWAYS, since="1.1")
    label: str = need(ALWAYS, since="1.1")
    epsilon: float | None = need(ALWAYS, since="1.1")
    status: FailureStatus = need(ALWAYS, since="1.1")
    message: str = need(ALWAYS, since="1.1")
    extra: Json = extra_field()


ExactDtype = Literal["float16", "float32", "float64"]
"""The dtypes an example's exact values are stored in (:attr:`Example.dtype`)."""

EXACT_DTYPES: tuple[str, ...] = get_args(ExactDtype)
"""Their names: what ``analysis.exampleencoding`` encodes and :func:`decode_floats` reads."""

_STRUCT_CODES = dict(zip(EXACT_DTYPES, "efd", strict=True))
"""Each exact dtype's ``struct`` format character."""


def decode_floats(text: str, dtype: str, shape: tuple[int, ...]) -> tuple[float, ...]:
    """Exact values as the document stores them (base64 of little-endian ``dtype`` floats),
    flat; ``DocumentError`` where they do not fit ``dtype`` and ``shape``."""
    if dtype not in _STRUCT_CODES:
        raise DocumentError(f"exact values have dtype {dtype!r}; expected float16/32/64")
    data = base64.b64decode(text)
    count = math.prod(shape)
    if len(data) != count * struct.calcsize(_STRUCT_CODES[dtype]):
        raise DocumentError(
            f"exact values hold {len(data)} bytes, expected {count} {dtype} values of shape "
            f"{list(shape)}"
        )
    return struct.unpack(f"<{count}{_STRUCT_CODES[dtype]}", data)


def _decode_pixels(text: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    data = base64.b64decode(text)
    if len(data) != math.prod(shape):
        raise DocumentError(f"image holds {len(data)} pixels, expected shape {list(shape)}")
    return tuple(data)


@dataclass(frozen=True, kw_only=True)
class Example:
    """An adversarial example beside its original (images base64-encoded, C×H×W);
    ``predicted`` is the model's prediction on it (None in older documents, or for NaN/Inf
    logits)."""

    attack: str
    epsilon: float
    sample: int
    label: int
    fooled: bool
    predicted: int | None = need(OPTIONAL, since="1.2")
    margin: float | None
    success_step: int | None = need(FULL, since="1.1")
    shape: tuple[int, ...]
    original: str
    adversarial: str
    dtype: ExactDtype | None = need(FULL, since="1.1")
    original_exact: str | None = need(FULL, since="1.1")
    adversarial_exact: str | None = need(FULL, since="1.1")
    extra: Json = extra_field()

    def original_pixels(self) -> tuple[int, ...]:
        """The original's display pixels (0..255), flat, C×H×W order."""
        return _decode_pixels(self.original, self.shape)

    def adversarial_pixels(self) -> tuple[int, ...]:
        """The adversarial example's display pixels (0..255), flat, C×H×W order."""
        return _decode_pixels(self.adversarial, self.shape)

    def original_values(self) -> tuple[float, ...] | None:
        """The original's exact values, flat, C×H×W order (None in schema 1.0)."""
        if self.original_exact is None or self.dtype is None:
            return None
        return decode_floats(self.original_exact, self.dtype, self.shape)

    def adversarial_values(self) -> tuple[float, ...] | None:
        """The adversarial example's exact values, flat, C×H×W order (None in schema 1.0)."""
        if self.adversarial_exact is None or self.dtype is None:
            return None
        return decode_floats(self.adversarial_exact, self.dtype, self.shape)


AUTOATTACK_STANDARD = ("APGD-CE", "APGD-T", "FAB-T", "Square")
"""The attacks of AutoAttack's standard version, in its order (Croce and Hein, 2020)."""

AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
"""pyautoattack's versions, as an ``autoattack`` attack's ``version`` names them: ``standard``
runs :data:`AUTOATTACK_STANDARD`, ``plus`` those with more restarts and attacks besides,
``rand`` (for randomised defences) only APGD-CE and APGD-DLR, with EOT."""


def autoattack_components(kind: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """Which attacks of AutoAttack's standard version an attack of ``kind`` with ``params``
    (as the document records them) is: ``("APGD-T",)`` for targeted APGD, all four for
    AutoAttack's standard or plus version, ``()`` for an attack that is none of them."""
    if kind == "autoattack":
        version = params.get("version", "standard")
        return AUTOATTACK_STANDARD if version in AUTOATTACK_VERSIONS[:2] else ("APGD-CE",)
    if kind == "apgd":
        if params.get("targeted", False):
            return ("APGD-T",)
        return ("APGD-CE",) if params.get("loss", "ce") == "ce" else ()
    if kind == "fab":
        return ("FAB-T",) if params.get("targeted", True) else ()
    if kind == "square":
        return ("Square",)
    return ()


@dataclass(frozen=True, kw_only=True)
class NormResult:
    """Everything measured under one norm at its K epsilons over the N samples.

    Attributes:
        reliable_robust_accuracy: [K] worst case over every attack.
        robust: [K][N] samples no attack broke.
        attacks: in the order they ran.
    """

    norm: Literal["linf", "l2"]
    epsilons: tuple[float, ...]
    reliable_robust_accuracy: tuple[Proportion, ...]
    robust: BitRows
    robust_nonfinite: tuple[int, ...] | None = need(OPTIONAL, since="1.2")
    attacks: tuple[AttackRecord, ...]
    unbounded_epsilon: float | None = need(FULL)
    sweep: Sweep | None = need(FULL)
    independent_sweep: Sweep | None = need(FULL)
    failures: tuple[Failure, ...] | None = need(FULL, since="1.1")
    examples: tuple[Example, ...] | None = need(FULL)
    extra: Json = extra_field()

    def attack(self, label: str) -> AttackRecord:
        """The attack with this label; KeyError names the labels present."""
        for record in self.attacks:
            if record.label == label:
                return record
        labels = ", ".join(r.label for r in self.attacks)
        raise KeyError(f"no attack {label!r} under {self.norm}; present: {labels}")

    def failed_attacks(self, k: int) -> tuple[str, ...]:
        """Labels of the attacks that raised at the ``k``-th epsilon, and ``"LABEL sweep"``
        for a failed sweep of an attack in the main list. Where one did, the samples it would
        have attacked count as robust: every robust accuracy at that epsilon is an upper bound.

        A sweep counts at every epsilon of its norm: at the epsilons it shares with the main
        list, its attack's outcome is the sweep's row, nested (a sample broken at a smaller
        radius of the sweep counts as broken), and when the sweep fails that attack runs on
        its own there instead, a weaker attack than the complete audit's; a document does not
        record the epsilons of a sweep that failed, so every one of its norm counts. The
        independent sweep never does: it runs on a subsample, for the sweep checks only, and
        no robust accuracy is taken from it. (A document of schema 1.0 says only whether an
        attack failed somewhere: it counts at every epsilon. A baseline does not say: none.)"""
        failed = [record.label for record in self.attacks if record.status_at(k) == FAILED]
        labels = {record.label for record in self.attacks}
        for failure in self.failures or ():
            if failure.stage == "sweep" and failure.status == FAILED and failure.label in labels:
                failed.append(f"{failure.label} sweep")
        return tuple(failed)

    def chain(self, k: int) -> tuple[str, ...]:
        """Labels of the attacks that ran at the ``k``-th epsilon, in the order they ran: the
        reliable robust accuracy there is the per-sample worst case over them. (Where a
        document does not say whether an attack ran, a baseline, it counts.)"""
        return tuple(record.label for record in self.attacks if record.status_at(k) == OK)

    def autoattack_not_run(self, k: int) -> tuple[str, ...]:
        """Each attack of AutoAttack's standard version (``AUTOATTACK_STANDARD``) that has no
        counterpart among the attacks that ran at the ``k``-th epsilon, with why:
        ``"APGD-CE (not in the suite)"``, ``"FAB-T (failed)"``, ``"FAB-T (not applicable)"``.
        A counterpart is the same algorithm (pyautoattack's APGD on the cross-entropy,
        untargeted; APGD-T; FAB-T; Square), whatever its budget; PGD-CE is not APGD-CE.
        Empty for a document that does not record the attacks' parameters (a baseline)."""
        if any(record.params is None for record in self.attacks):
            return ()
        found: dict[str, AttackStatus] = {}
        for record in self.attacks:
            status = record.status_at(k)
            for name in autoattack_components(record.kind, record.params or {}):
                if found.get(name) != OK:
                    found[name] = status
        reasons = {FAILED: "failed", NOT_APPLICABLE: "not applicable"}
        missing = []
        for name in AUTOATTACK_STANDARD:
            if name not in found:
                missing.append(f"{name} (not in the suite)")
            elif found[name] != OK:
                missing.append(f"{name} ({reasons.get(found[name], 'not run')})")
        return tuple(missing)

    def eot_passes(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """The attacks whose gradients averaged more than one forward pass (EOT, for a
        stochastic model), grouped by the number of passes, fewest first:
        ``((8, ("pgd-ce", "pgd-t")), (20, ("eot-apgd-ce", "eot-apgd-dlr")))``."""
        groups: dict[int, list[str]] = {}
        for record in self.attacks:
            passes = (record.params or {}).get("eot_samples", 1)
            if isinstance(passes, int) and passes > 1:
                groups.setdefault(passes, []).append(record.label)
        return tuple((passes, tuple(groups[passes])) for passes in sorted(groups))

    def tested(self, k: int) -> bool:
        """Whether some attack ran at the ``k``-th epsilon (else its robust accuracy is only
        the clean accuracy). True when the document does not say (a baseline)."""
        known = [r for r in self.attacks if r.statuses is not None or r.status is not None]
        if not known:
            return True
        return any(r.status_at(k) == OK for r in known)


@dataclass(frozen=True, kw_only=True)
class Robustness:
    """The attack suite's outcome, per norm, with its cost."""

    eot_samples: int | None = need(FULL)
    norms: tuple[NormResult, ...]
    num_forward: int | None = need(FULL)
    num_backward: int | None = need(FULL)
    wall_time: float | None = need(FULL)
    extra: Json = extra_field()
