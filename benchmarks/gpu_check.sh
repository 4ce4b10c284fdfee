#!/usr/bin/env bash
# The GPU check, ready to run on a CUDA machine from the repository root, in four steps:
#
#   1. the tests marked 'device' on the GPU (pytest -m device --device cuda): flatness, the
#      attacks and the whole audit on the GPU, each against the same work on the CPU;
#   2. one zoo model audited (standard preset) on the CPU and on the GPU, the two documents
#      compared with stated tolerances (benchmarks/compare_devices.py);
#   3. the standard audit of pyautoattack's CIFAR-10 ResNet-18 on 1000 CIFAR-10 test images
#      (flatness on 500) on the GPU, timed;
#   4. AutoAttack standard on the same samples, both norms, on the GPU, in full float32 as the
#      audit (benchmarks/autoattack_on_document.py), and the ratio of the two times.
#
# Every step has its own time limit (together eight and a half minutes at most) and a step that
# fails or runs out of time is said, and the next one runs. Outputs go to $OUT (default
# out/gpu-check): the step logs, both zoo documents, the ResNet's audit.json and report, and
# summary.txt with the figures. Exit status 0 when every step passed, 1 otherwise.
#
#   ROBAUDIT_DATA=/path/to/data benchmarks/gpu_check.sh
#   DEVICE=cpu NUM_SAMPLES=8 PRESET=quick ROBAUDIT_DATA=... benchmarks/gpu_check.sh   # dry run
#
# Settings (environment): DEVICE (cuda), NUM_SAMPLES (1000), PRESET (standard), PYTHON
# (.venv/bin/python), OUT, and the time limits in seconds TESTS_S (90), COMPARE_S (90),
# AUDIT_S (210), AUTOATTACK_S (120).
set -u -o pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
DEVICE="${DEVICE:-cuda}"
NUM_SAMPLES="${NUM_SAMPLES:-1000}"
PRESET="${PRESET:-standard}"
OUT="${OUT:-out/gpu-check}"
TESTS_S="${TESTS_S:-90}"
COMPARE_S="${COMPARE_S:-90}"
AUDIT_S="${AUDIT_S:-210}"
AUTOATTACK_S="${AUTOATTACK_S:-120}"

if [ -z "${ROBAUDIT_DATA:-}" ] || [ ! -d "${ROBAUDIT_DATA}/cifar10" ]; then
    echo "error: ROBAUDIT_DATA must name the reference data folder (with cifar10/), got '${ROBAUDIT_DATA:-}'; set it and rerun" >&2
    exit 2
fi
if [ ! -x "$PYTHON" ]; then
    echo "error: no Python at $PYTHON; run make install first, or set PYTHON" >&2
    exit 2
fi
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=()

say() { echo "$*" | tee -a "$SUMMARY"; }

# Runs a step with its time limit, its output in $OUT/<name>.log; records a failure or a
# timeout by name.
step() {
    local name="$1" limit="$2"
    shift 2
    say ""
    say "== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local status=$?
    local took=$((SECONDS - start))
    if [ "$status" -eq 124 ] || [ "$status" -eq 130 ] || [ "$status" -eq 137 ]; then
        say "   $name: DID NOT FINISH within ${limit} s (status $status); see $OUT/$name.log"
        FAILED+=("$name (timeout)")
    elif [ "$status" -ne 0 ]; then
        say "   $name: FAILED with status $status after ${took} s; see $OUT/$name.log"
        FAILED+=("$name")
    else
        say "   $name: passed in ${took} s"
    fi
    return 0
}

say "GPU check $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE, $NUM_SAMPLES samples, preset $PRESET"
"$PYTHON" - "$DEVICE" <<'EOF' 2>&1 | tee -a "$SUMMARY"
import os, sys, torch
device = sys.argv[1]
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("error: DEVICE=cuda but torch sees no CUDA device; use DEVICE=cpu for a dry run")
    props = torch.cuda.get_device_properties(0)
    print(f"GPU {props.name}, {props.total_memory / 2**30:.1f} GiB")
EOF
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    exit 2
fi

# 1. The tests that run on the device.
step tests "$TESTS_S" "$PYTHON" -m pytest -m device --device "$DEVICE" -q -p no:cacheprovider \
    tests/test_device.py
tail -n 3 "$OUT/tests.log" | sed 's/^/   /' | tee -a "$SUMMARY"

# 2. One zoo model on the CPU and on the device: the documents compared.
step compare "$COMPARE_S" "$PYTHON" -m benchmarks.compare_devices digits-mlp-normout-spatiotemporal \
    --devices "cpu,$DEVICE" --preset "$PRESET" --out "$OUT/compare"
sed -n '/^figure/,$p' "$OUT/compare.log" | sed 's/^/   /' | tee -a "$SUMMARY"

# 3. The standard audit of the CIFAR-10 ResNet-18 on the device.
MODEL=$("$PYTHON" -c 'import pathlib, pyautoattack; print(pathlib.Path(pyautoattack.__file__).parent / "examples" / "model_test.pt")')
AUDIT_OUT="$OUT/resnet18"
rm -rf "$AUDIT_OUT"
step audit "$AUDIT_S" "$PYTHON" -m analysis.audit "$MODEL" --arch resnet18 --dataset cifar10 \
    --data "$ROBAUDIT_DATA/cifar10" --preset "$PRESET" --num-samples "$NUM_SAMPLES" \
    --device "$DEVICE" --out "$AUDIT_OUT"
DOCUMENT=$(find "$AUDIT_OUT" -name audit.json 2>/dev/null | head -n 1)
if [ -n "$DOCUMENT" ]; then
    "$PYTHON" - "$DOCUMENT" <<'EOF' 2>&1 | sed 's/^/   /' | tee -a "$SUMMARY"
import json, sys
document = json.load(open(sys.argv[1]))
provenance = document["provenance"]
print(f"audit wall time {provenance['finished'] - provenance['started']:.1f} s on {provenance['device']}, "
      f"attacks {document['robustness']['wall_time']:.1f} s; verdict: {document['verdict']}")
print(f"clean accuracy {document['clean_accuracy']['value']:.4f}")
for norm in document["robustness"]["norms"]:
    for k, epsilon in enumerate(norm["epsilons"]):
        print(f"{norm['norm']} eps {epsilon:.4g}: reliable robust accuracy {norm['reliable_robust_accuracy'][k]['value']:.4f}")
for mode, flat in (("eval", document["flatness"]), ("layers active", (document["flatness"] or {}).get("active_layers"))):
    if not flat:
        continue
    for name in ("fisher_rao_empirical", "fisher_rao_model", "hessian_trace", "hessian_eigenvalues", "spectral_density"):
        estimate = flat.get(name)
        if estimate is None:
            continue
        if name == "spectral_density":  # the density's own figure is the trace it integrates to
            value, error = estimate.get("trace"), estimate.get("trace_stderr")
        else:
            value = estimate.get("value", estimate.get("eigenvalues"))
            error = estimate.get("stderr", estimate.get("residual_norms"))
        print(f"{mode} {name}: {value} ± {error}, stopped by {estimate.get('stopped_by')}")
EOF
else
    say "   no audit.json: the audit did not finish"
fi

# 4. AutoAttack standard on the same samples, on the device.
if [ -n "$DOCUMENT" ]; then
    step autoattack "$AUTOATTACK_S" "$PYTHON" -m benchmarks.autoattack_on_document "$DOCUMENT" \
        --checkpoint "$MODEL" --arch resnet18 --dataset cifar10 --data "$ROBAUDIT_DATA/cifar10" \
        --device "$DEVICE" --json "$OUT/autoattack.json"
    grep -E "^(linf|l2) " "$OUT/autoattack.log" | sed 's/^/   /' | tee -a "$SUMMARY"
    if [ -f "$OUT/autoattack.json" ]; then
        "$PYTHON" - "$DOCUMENT" "$OUT/autoattack.json" <<'EOF' 2>&1 | sed 's/^/   /' | tee -a "$SUMMARY"
import json, sys
document, autoattack = (json.load(open(path)) for path in sys.argv[1:3])
audit = document["provenance"]["finished"] - document["provenance"]["started"]
theirs = sum(value["autoattack_wall_s"] for key, value in autoattack.items() if key in ("linf", "l2"))
print(f"time: whole audit {audit:.1f} s (attacks {document['robustness']['wall_time']:.1f} s), "
      f"AutoAttack both norms {theirs:.1f} s; ratio {audit / theirs:.2f} (attacks alone "
      f"{document['robustness']['wall_time'] / theirs:.2f})")
EOF
    fi
else
    say ""
    say "== autoattack: not run (the audit left no document to take the samples from)"
    FAILED+=("autoattack (not run)")
fi

say ""
if [ "${#FAILED[@]}" -eq 0 ]; then
    say "every step passed; outputs in $OUT"
    exit 0
fi
say "not passed: ${FAILED[*]}; outputs in $OUT"
exit 1
