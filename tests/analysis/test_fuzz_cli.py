"""Fuzzing the front door: the suite parser over TOML documents and raw text, the command lines
over argument lists. Nothing may escape except the documented errors: a ``ValueError`` with a
message from the suite parser, and from the commands exit status 2 with one line on stderr."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.config import build_suite
from attacks import registry
from commands import audit, gate

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KINDS = [*registry.list_attacks(), "deepfool", "PGD", ""]
PARAMETERS = [
    "steps",
    "step_size",
    "restarts",
    "loss",
    "queries",
    "p_init",
    "samples",
    "target_mode",
    "num_target_classes",
    "backend",
    "eot_samples",
    "label",
    "peer_of",
    "keep",
    "early_stop",
    "step",
    "epsilon",
]


def _literal(value: object) -> str:
    """A TOML literal for a generated value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    assert isinstance(value, list)
    return "[" + ", ".join(_literal(v) for v in value) + "]"


scalars = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.booleans(),
    st.sampled_from(["ce", "margin", "cw", "native", "torchattacks", "top", "all", "linf"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))


@st.composite
def suite_documents(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"name = {_literal(draw(values))}")
    if draw(st.booleans()):
        lines.append(f"preset = {_literal(draw(st.sampled_from(['quick', 'standard', 'x'])))}")
    if draw(st.booleans()):
        lines.append("[epsilons]")
        for norm in draw(st.lists(st.sampled_from(["linf", "l2", "l1"]), max_size=2, unique=True)):
            lines.append(f"{norm} = {_literal(draw(values))}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[attacks]]")
        lines.append(f"kind = {_literal(draw(st.one_of(st.sampled_from(KINDS), values)))}")
        for key in draw(st.lists(st.sampled_from(PARAMETERS), max_size=3, unique=True)):
            lines.append(f"{key} = {_literal(draw(values))}")
    if draw(st.booleans()):
        lines.append("[sweep]")
        for key in draw(st.lists(st.sampled_from(["attack", "fractions", "steps"]), unique=True)):
            lines.append(f"{key} = {_literal(draw(values))}")
    if draw(st.booleans()):
        lines.append("[options]")
        for key in draw(
            st.lists(st.sampled_from(["batch_size", "eot_samples", "seed"]), unique=True)
        ):
            lines.append(f"{key} = {_literal(draw(values))}")
    return "\n".join(lines) + "\n"


def _parse(text: str, tmp_path) -> None:
    path = tmp_path / "suite.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        build_suite("standard", "mnist", suite_file=path)
    except ValueError as err:
        assert str(err).strip(), "an error without a message"


@SETTINGS
@given(text=suite_documents())
def test_suite_parser_over_toml_documents(text, tmp_path):
    _parse(text, tmp_path)


@SETTINGS
@given(text=st.text(max_size=200))
def test_suite_parser_over_raw_text(text, tmp_path):
    _parse(text, tmp_path)


FLAGS = [
    "--data",
    "--num-samples",
    "--batch-size",
    "--device",
    "--preset",
    "--suite",
    "--norms",
    "--epsilons",
    "--attacks",
    "--backend",
    "--no-flatness",
    "--flatness-samples",
    "--seed",
    "--out",
    "--baseline",
    "--max-drop",
    "--junit",
    "--update-baseline",
    "--allow-different-checkpoint",
    "--quiet",
    "--arch",
    "--dataset",
    "--num-classes",
    "--layers",
    "--bounds",
    "--input-shape",
    "--normalization",
    "--trust-checkpoint",
    "--n",
    "--b",
    "-x",
]
TOKENS = st.one_of(
    st.sampled_from(FLAGS),
    st.sampled_from(["0", "-1", "1e9", "nan", "abc", "", ",", "linf=0.1;l2=", "pgd-ce", "cpu"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
)


def _run(command, argv, tmp_path, capsys) -> None:
    before = set(tmp_path.rglob("*"))
    capsys.readouterr()
    try:
        status = command(argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, (argv, status, err)
    assert err.count("\n") == 1 and err.startswith("error: "), (argv, err)
    assert set(tmp_path.rglob("*")) == before, argv


@SETTINGS
@given(tokens=st.lists(TOKENS, max_size=8))
def test_audit_command_line(tokens, tmp_path, capsys, monkeypatch):
    """Whatever the flags, a checkpoint that does not exist ends in exit 2 and one line."""
    monkeypatch.chdir(tmp_path)
    _run(audit.main, [str(tmp_path / "missing.pt"), *tokens], tmp_path, capsys)


@SETTINGS
@given(tokens=st.lists(TOKENS, max_size=6))
def test_gate_command_line(tokens, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(gate.main, [str(tmp_path / "r.json"), str(tmp_path / "b.json"), *tokens], tmp_path, capsys)
