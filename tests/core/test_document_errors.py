"""The typed reader of ``audit.json`` on malformed documents and unreadable files: every
problem is a ``DocumentError`` that names the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from document_helpers import _load

from core.document import AuditResult, DocumentError, read_result


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        document = document[key]
    if value is _DELETE:
        del document[path[-1]]
    else:
        document[path[-1]] = value


_DELETE = object()


@pytest.mark.data
@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("robustness", "norms", 1, "attacks", 2, "success"), _DELETE, "missing"),
        (("clean_accuracy", "count"), "58", "an integer"),
        (("clean_accuracy", "count"), True, "an integer"),
        (("clean_accuracy", "wilson_95"), [0.1, 0.2, 0.3], "2 items"),
        (("clean_correct",), "0120", "bit string"),
        (("clean_correct",), "0101", "60 bits"),
        (("findings", 3, "status"), "bad", "one of"),
        (("robustness", "norms", 0, "robust"), ["01"], "rows"),
        (("robustness", "norms", 0, "attacks", 0, "mean_loss_trace", 0, 1), "1.0", "a number"),
        (("flatness", "hessian_trace", "value"), None, "a number"),
        (("flatness", "landscape_2d", "losses", 2), {"a": 1}, "a number"),
        (("provenance",), [], "an object"),
        (("verdict",), 3, "a string"),
        (("evaluation", "num_samples"), 1.5, "an integer"),
        (("evaluation", "indices"), list(range(59)), "60 indices"),
        (("evaluation", "indices", 0), -1, "non-negative"),
    ],
)
def test_malformed_field_named(
    documents: dict[str, Path], path: tuple[Any, ...], value: Any, where: str
) -> None:
    raw = _load(documents["flatness"])
    _set(raw, path, value)
    with pytest.raises(DocumentError) as caught:
        AuditResult.from_dict(raw, "doc.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("doc.json")
    dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
    whole = where in ("rows", "60 bits", "non-negative")  # named by the list, not the item
    prefix = dotted.rsplit("[", 1)[0] if whole else dotted
    assert prefix in message and where in message, message


def _paths(raw: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every key of every object, descending into the first item of each list."""
    out: list[tuple[Any, ...]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            out.append(path + (key,))
            out.extend(_paths(value, path + (key,)))
    elif isinstance(raw, list) and raw:
        out.extend(_paths(raw[0], path + (0,)))
    return out


_OPEN = ("config", "params", "evidence", "versions", "training", "arch_kwargs")


@pytest.mark.data
@pytest.mark.parametrize("name", ["flatness", "baseline"])
def test_any_field_deleted_or_retyped_gives_document_error(
    documents: dict[str, Path], baseline: Path, name: str
) -> None:
    source = baseline if name == "baseline" else documents[name]
    original = _load(source)
    for path in _paths(original):
        if any(key in _OPEN for key in path[:-1]):
            continue
        for value in (_DELETE, {"unexpected": [1]}):
            raw = copy.deepcopy(original)
            _set(raw, path, value)
            try:
                result = AuditResult.from_dict(raw, "doc.json")
            except DocumentError as error:
                assert "\n" not in str(error)
                named = str(error).split(" should be ")[0].split(" is missing")[0]
                assert named.startswith("doc.json"), str(error)
                continue
            # accepted: only an optional field may go missing, only an open object may change
            assert value is _DELETE or path[-1] in _OPEN, path
            if value is _DELETE and path[-1] != "baseline":
                typed: Any = result
                for key in path[:-1]:
                    typed = typed[key] if isinstance(key, int) else getattr(typed, key)
                assert getattr(typed, str(path[-1])) is None, path


def test_unreadable_files_give_document_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="does not exist"):
        read_result(tmp_path / "absent.json")
    with pytest.raises(DocumentError, match="is a folder"):
        read_result(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DocumentError, match="not valid JSON"):
        read_result(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DocumentError, match="expected a JSON object, got list"):
        read_result(tmp_path / "list.json")
