"""The audit front door: load, evaluate, report, and fail cleanly on bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.pipeline import select_samples
from analysis.summary import summary_lines
from attacks import ChunkedModel
from checkpoints.train import ZOO_DIR
from commands.audit import main
from core.document import AuditResult

MANIFEST = json.loads((ZOO_DIR / "manifest.json").read_text())["checkpoints"]
FAST = ["--preset", "quick", "--no-flatness", "--quiet"]


def test_audit_reports_clean_accuracy_of_a_zoo_checkpoint(tmp_path, capsys):
    name = "digits-mlp-normout-spatiotemporal"
    assert (
        main(
            [
                str(ZOO_DIR / f"{name}.pt"),
                "--preset",
                "quick",
                "--no-flatness",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    entry = MANIFEST[name]
    assert f"{entry['num_correct']}/{entry['num_test']}" in out
    document = json.loads((tmp_path / name / "audit.json").read_text())
    assert document["clean_accuracy"]["count"] == entry["num_correct"]
    assert document["provenance"]["checkpoint_sha256"] == entry["sha256"]


def test_sample_selection_is_fixed_and_seeded():
    a, b = select_samples(1000, 100, seed=3), select_samples(1000, 100, seed=3)
    assert (
        a.tolist() == b.tolist()
        and len(set(a.tolist())) == 100
        and a.tolist() == sorted(a.tolist())
    )
    assert select_samples(1000, 100, seed=4).tolist() != a.tolist()
    assert select_samples(50, 1000, seed=0).tolist() == list(range(50))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-samples", "0"], "--num-samples must be positive"),
        (["--arch", "lenet5"], "records arch mlp, but --arch lenet5"),
        (["--dataset", "mnist", "--data", "/nonexistent"], "does not exist"),
        (["--layers", "normout:sideways"], "NormOut method"),
        (["--preset", "fast"], "--preset must be one of"),
        (["--epsilons", "0.3,0.1"], "ascending"),
        (["--attacks", "pgd-ce,cw"], "not in the suite"),
        (["--backend", "foolbox"], "--backend must be one of"),
        (["--norms", "l1"], "norm"),
        (["--junit", "x.xml"], "need --baseline"),
        (["--suite", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_files(tmp_path, capsys, extra, message):
    code = main([str(ZOO_DIR / "digits-mlp-none.pt"), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_foreign_file_without_description(tmp_path, capsys):
    import torch

    from checkpoints.architectures import build_network

    torch.save(build_network("mlp", (1, 8, 8), 10).state_dict(), tmp_path / "plain.pt")
    assert main([str(tmp_path / "plain.pt"), "--out", str(tmp_path / "out")]) == 2
    assert "--arch mlp --dataset digits" in capsys.readouterr().err
    assert (
        main(
            [
                str(tmp_path / "plain.pt"),
                "--arch",
                "mlp",
                "--dataset",
                "digits",
                "--preset",
                "quick",
                "--no-flatness",
                "--num-samples",
                "60",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.audit",
            str(ZOO_DIR / "digits-mlp-none.pt"),
            "--preset",
            "quick",
            "--num-samples",
            "100",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "clean accuracy" in result.stdout and str(tmp_path) in result.stdout


@pytest.mark.parametrize(
    ("file_option", "flag", "batch", "chunk", "how"),
    [
        (True, None, 64, 64, "limit"),
        (True, 32, 64, 32, "fixed"),
        (True, 100, 64, 64, "fixed"),
        (False, None, 500, 500, "limit"),
        (False, 48, 500, 48, "fixed"),
    ],
)
def test_attack_batch_is_the_suite_files_and_the_flag_chunks_the_model(
    tmp_path, monkeypatch, file_option, flag, batch, chunk, how
):
    """The attacks work on the suite file's batch (else 500), which fixes their random draws;
    --batch-size (auto: measured, which for this tiny MLP is everything) only sets how many
    samples the model evaluates at once, capped at that batch, and is recorded."""
    import analysis.pipeline

    suite_file = tmp_path / "suite.toml"
    suite_file.write_text(
        'preset = "quick"\n[[attacks]]\nkind = "fgsm"\nlabel = "fgsm"\n'
        + ("[options]\nbatch_size = 64\n" if file_option else "")
    )
    given: list[tuple[int | None, int]] = []
    run_suite = analysis.pipeline.run_suite

    def recording(model, x, y, config, *args, **kwargs):
        assert isinstance(model, ChunkedModel)
        given.append((config.batch_size, model.chunk_size))
        return run_suite(model, x, y, config, *args, **kwargs)

    monkeypatch.setattr(analysis.pipeline, "run_suite", recording)
    argv = [str(ZOO_DIR / "digits-mlp-none.pt"), "--suite", str(suite_file), "--attacks", "fgsm"]
    argv += [*FAST, "--num-samples", "40", "--out", str(tmp_path / "out")]
    argv += [] if flag is None else ["--batch-size", str(flag)]
    assert main(argv) == 0
    document = json.loads((tmp_path / "out" / "digits-mlp-none" / "audit.json").read_text())
    provenance = document["provenance"]
    config = provenance["config"]
    assert given == [(batch, chunk)]
    assert (config["batch_size"], config["suite"]["batch_size"]) == (batch, batch)
    sizes = provenance["batch_sizes"]
    assert sizes["requested"] == flag  # None: auto
    assert (sizes["attacks"]["size"], sizes["attacks"]["how"]) == (chunk, how)
    assert sizes["attacks"]["halvings"] == 0


def test_summary_lines_of_a_result(quick_document):
    """One line per norm and epsilon, the flatness estimates, the verdict, then each warning
    or failure; read from the typed result the audit wrote."""
    result = AuditResult.from_dict(json.loads(json.dumps(quick_document)))
    lines = summary_lines(Path("model.pt"), result)
    n = result.evaluation.num_samples
    assert lines[0] == f"model.pt: mlp with dropout layers on digits ({n} samples)"
    clean = result.clean_accuracy
    assert lines[1].split() == ["clean", "accuracy", f"{clean.value:.4f}", f"({clean.count}/{n})"]
    rows = [(norm, k) for norm in result.robustness.norms for k in range(len(norm.epsilons))]
    # Per norm and epsilon: the figure and the accuracy after each attack; what the figure is
    # the worst case over; the attacks of AutoAttack's standard version the quick suite lacks.
    for at, (norm, k) in enumerate(rows):
        line, over, missing = lines[2 + 3 * at : 5 + 3 * at]
        assert line.split()[:2] == [norm.norm, "eps"]
        assert f"reliable {norm.reliable_robust_accuracy[k].value:.4f}" in line
        for attack in norm.attacks:
            assert f"{attack.label} {attack.robust_accuracy_after[k].value:.3f}" in line
        assert over.strip().split(": ") == [
            "worst case over",
            ", ".join(a.label for a in norm.attacks),
        ]
        assert missing.strip() == (
            "not run of AutoAttack's standard version: APGD-CE (not in the suite), "
            "APGD-T (not in the suite), FAB-T (not in the suite)"
        )
    rows = rows * 3  # three lines each
    flatness = lines[2 + len(rows)]
    assert flatness.startswith("  flatness: Fisher-Rao (emp) ") and flatness.count("±") == 3
    # The model has dropout: the same three figures with the layers active.
    assert result.flatness is not None and result.flatness.active_layers is not None
    # Each estimate's line is followed by what stopped each estimator.
    assert lines[3 + len(rows)].startswith("    stopped by: Fisher-Rao (emp) ")
    active = lines[4 + len(rows)]
    trace = result.flatness.active_layers.hessian_trace
    assert active.startswith("  layers active: Fisher-Rao (emp) ") and active.count("±") == 3
    assert active.endswith(f"; Hessian trace {trace.value:.4g} ± {trace.stderr:.2g}")
    assert lines[5 + len(rows)].startswith("    stopped by: Fisher-Rao (emp) ")
    assert lines[6 + len(rows)] == f"  verdict: {result.verdict}"
    # The quick preset is a smoke test, and the summary says so right under the verdict.
    assert lines[7 + len(rows)] == (
        "  caution: the quick preset is a smoke test (PGD with 10 steps, Square with 200 "
        "queries, a small sweep): its robust accuracies may overstate robustness; audit with "
        "--preset standard for figures to report"
    )
    flagged = [f for f in result.findings if f.status in ("warn", "fail")]
    assert lines[8 + len(rows) :] == [
        f"    [{f.status}] {f.code}: {f.explanation}" for f in flagged
    ]
    standard = copy.deepcopy(quick_document)
    standard["provenance"]["config"]["suite"]["name"] = "standard"
    lines = summary_lines(Path("model.pt"), AuditResult.from_dict(standard))
    assert not any("caution" in line or "smoke test" in line for line in lines)
    # An estimate without a standard error is shown without one.
    assert result.flatness.hessian_trace is not None
    trace = dataclasses.replace(result.flatness.hessian_trace, stderr=None)
    flat = dataclasses.replace(result.flatness, hessian_trace=trace, active_layers=None)
    lines = summary_lines(Path("model.pt"), dataclasses.replace(result, flatness=flat))
    assert lines[2 + len(rows)].endswith(f"; Hessian trace {trace.value:.4g}")
    assert lines[3 + len(rows)].startswith("    stopped by: ")
    assert lines[4 + len(rows)] == f"  verdict: {result.verdict}"
    # Without flatness there is no flatness line.
    lines = summary_lines(Path("model.pt"), dataclasses.replace(result, flatness=None))
    assert lines[2 + len(rows)] == f"  verdict: {result.verdict}"
    made = AuditResult.from_dict(json.loads(json.dumps(quick_document))).to_baseline()
    baseline = AuditResult.from_dict(made)
    with pytest.raises(ValueError, match="baseline"):
        summary_lines(Path("baseline.json"), baseline)
