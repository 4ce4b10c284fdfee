"""The robustness section's records: each attack's outcome as the document's ``AttackRecord``."""

from __future__ import annotations

import math

import pytest
import torch
from attack_fixtures import tiny_data, tiny_model

from analysis.robustness import _table_form, bit_rows, norm_section
from attacks import preset, run_suite
from attacks.result import plain
from core.docfields import BitRows
from core.document import as_read


def test_the_fields_named_as_tables_are_the_outcomes_tables_in_the_fields_form() -> None:
    # A field of AttackRecord named as a per-sample table is that table, in the form its type
    # asks for: bits per epsilon and sample, numbers per epsilon and sample, counts per
    # epsilon, or one total.
    model = tiny_model()
    x, y = tiny_data(model)
    x, y = x[:12], y[:12]
    config = preset("quick", "digits").with_options(sweep=None)
    suite = run_suite(model, x, y, config, generator=2)
    for outcome in suite.norms:
        section = norm_section(outcome, suite, x, 1, model, x)
        assert len(section.attacks) == len(outcome.attacks)
        for attack, record in zip(outcome.attacks, section.attacks, strict=True):
            assert record.success == bit_rows(attack.success)
            assert record.attacked == bit_rows(attack.attacked)
            assert record.last_success == bit_rows(attack.last_success)
            assert record.success_step == as_read(plain(attack.success_step))
            assert record.nonfinite == tuple(int(v) for v in attack.nonfinite.sum(1))
            assert record.queries == int(attack.queries.sum())
            assert isinstance(record.queries, int) and record.queries > 0
            assert torch.is_tensor(attack.tables["margin"])


def test_a_table_takes_the_form_of_the_field_it_is_written_into() -> None:
    table = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    assert _table_form("t", BitRows)(table > 1) == ((False, False), (True, True))
    values = _table_form("t", tuple[tuple[float | None, ...], ...] | None)(table)
    assert values[0][0] == 1.0 and math.isnan(values[0][1]) and values[1] == (2.0, 3.0)
    counts = torch.tensor([[1, 2], [3, 4]])
    assert _table_form("t", tuple[tuple[int, ...], ...])(counts) == ((1, 2), (3, 4))
    assert _table_form("t", tuple[int, ...] | None)(counts) == (3, 7)
    assert _table_form("t", int | None)(counts) == 10
    with pytest.raises(TypeError, match="AttackRecord.t is named as a per-sample table"):
        _table_form("t", str)
