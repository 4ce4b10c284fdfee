"""Bad input files and flags: every command refuses each with exit status 2 (or 3 for internal
errors) and exactly one line on stderr naming the culprit, no traceback, and leaves nothing
behind: no file or folder appears anywhere under the test's folder (``--out`` included)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from bad_input_builders import _DOCUMENT, _tree
from bad_input_cases import CASES

from commands import audit, gate, inspect

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "audit": audit.main,
    "gate": gate.main,
    "inspect": inspect.main,
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_one_line(case, result_document, tmp_path, capsys, monkeypatch):
    _DOCUMENT["result"] = result_document
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = case.build(work)
    before = _tree(work)
    capsys.readouterr()
    try:
        status = COMMANDS[case.command](argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == case.status, (status, err)
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    assert case.culprit in err, err
    assert _tree(work) == before, sorted(map(str, _tree(work) - before))


def test_the_table_is_large_and_names_are_unique():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


def test_a_result_document_nests_as_deep_as_its_limit_says(result_document):
    """The result limit's reason: a document nests 9 deep (its limit allows 32)."""
    from core.boundary import INPUT_LIMITS

    def depth(value: object) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        return 0

    assert depth(result_document) == 9 < INPUT_LIMITS["result"].max_depth  # type: ignore[operator]
