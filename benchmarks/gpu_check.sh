#!/usr/bin/env bash
# GPU checks in one bounded pass, for a machine with an NVIDIA GPU (the CPU dev machine has none).
#
#   benchmarks/gpu_check.sh [OUT]          # OUT: results folder (default: $OUT, else gpu-check-out)
#
# Steps, each PASS / FAIL / SKIP (with the reason) in OUT/summary.txt; a missing module skips the steps
# that need it instead of failing the whole pass, so a bare machine (e.g. torch with CUDA, no TensorRT)
# still checks what it can:
#   1. env        nvidia-smi, torch/CUDA and which optional backends import (OUT/env.txt)
#   2. tests      the GPU tests (torch on CUDA, TensorRT runner) with skip reasons (needs pytest)
#   3. bundle     `nin-edge export` of the shipped weights (onnx; + tensorrt engines when tensorrt imports)
#   4. bench      torch on CUDA fp32 and fp16, batch 1 and 64 (OUT/bench-torch-cuda-*.json)
#   5. tensorrt   `nin-edge bench --spec targets/nvidia-gpu-tensorrt-{int8,fp16}.toml` (needs tensorrt)
#   6. train      only when GPU_TRAIN_DATA names a CIFAR-10 archive: `nin-edge train --device cuda`
#                 (GPU_TRAIN_ARCH [nin-cifar], GPU_TRAIN_EPOCHS [200], GPU_TRAIN_MINUTES [6], extra
#                 options in GPU_TRAIN_ARGS); checkpoints in OUT/train, continue later with --resume
# Python: NIN_EDGE_PY, else .venv/bin/python when present, else python3 (with this checkout on PYTHONPATH).
# Exit: 0 when no step failed, 1 when one did, 2 when no CUDA device is visible to torch (nothing to check).
set -uo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
if [ -n "${NIN_EDGE_PY:-}" ]; then PY="$NIN_EDGE_PY"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
FAILED=0

record() {  # record STEP STATUS DETAIL
    printf '%-9s %-4s %s\n' "$1" "$2" "$3" | tee -a "$SUMMARY"
}

run_step() {  # run_step STEP LOGNAME CMD... — runs CMD, log in OUT/LOGNAME.log, records PASS/FAIL
    local step="$1" log="$OUT_DIR/$2.log"
    shift 2
    local t0=$SECONDS
    if "$@" > "$log" 2>&1; then
        record "$step" PASS "$(( SECONDS - t0 )) s, log $log"
    else
        record "$step" FAIL "exit $? after $(( SECONDS - t0 )) s: $(tail -n 1 "$log")"
        FAILED=1
    fi
}

has_module() { "$PY" -c "import $1" > /dev/null 2>&1; }

# 1. env -----------------------------------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "python: $PY ($("$PY" --version 2>&1))"
    if command -v nvidia-smi > /dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1
    else
        echo "nvidia-smi: not on PATH"
    fi
    for m in torch onnx onnxruntime openvino tensorrt typer rich cv2 pytest; do
        v=$("$PY" -c "import $m; print(getattr($m, '__version__', 'present'))" 2>/dev/null) || v="not installed"
        echo "module $m: $v"
    done
} > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
CUDA=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
if [ -z "$CUDA" ]; then
    record env SKIP "no CUDA device visible to torch ($PY); nothing to check on this machine"
    exit 2
fi
record env PASS "torch sees $CUDA"

MISSING=""
for m in typer rich onnx onnxruntime cv2; do has_module "$m" || MISSING="$MISSING $m"; done
CLI_OK=1
[ -z "$MISSING" ] || CLI_OK=0

# 2. tests ---------------------------------------------------------------------------------------------
if ! has_module pytest; then
    record tests SKIP "pytest not installed for $PY"
elif [ "$CLI_OK" = 0 ]; then
    record tests SKIP "nin-edge's core dependencies missing:$MISSING (pip install -e .)"
else
    run_step tests tests "$PY" -m pytest -q -rs tests/test_runners.py -k "cuda or tensorrt"
fi

# 3. bundle --------------------------------------------------------------------------------------------
BUNDLE="$OUT_DIR/bundle"
FORMATS=onnx
has_module tensorrt && FORMATS=onnx,tensorrt
if [ "$CLI_OK" = 0 ]; then
    record bundle SKIP "nin-edge's core dependencies missing:$MISSING (pip install -e .)"
else
    run_step bundle export "$PY" -m nin_edge export --int8 --formats "$FORMATS" --out "$BUNDLE" --force
fi

# 4. bench: torch on CUDA ------------------------------------------------------------------------------
if [ ! -f "$BUNDLE/bundle.json" ]; then
    record bench SKIP "no bundle (step 3 did not run or failed)"
else
    for prec in fp32 fp16; do
        run_step "bench" "bench-torch-cuda-$prec" "$PY" -m nin_edge bench --bundle "$BUNDLE" --target torch \
            --device cuda --precision "$prec" --batch 1,64 --json "$OUT_DIR/bench-torch-cuda-$prec.json" --force
    done
fi

# 5. TensorRT specs ------------------------------------------------------------------------------------
if ! has_module tensorrt; then
    record tensorrt SKIP "tensorrt (Python) not installed for $PY: pip install nin-edge[tensorrt]"
elif [ ! -f "$BUNDLE/bundle.json" ]; then
    record tensorrt SKIP "no bundle (step 3 did not run or failed)"
else
    for prec in int8 fp16; do
        run_step tensorrt "spec-tensorrt-$prec" "$PY" -m nin_edge bench --bundle "$BUNDLE" \
            --spec "targets/nvidia-gpu-tensorrt-$prec.toml" --json "$OUT_DIR/spec-tensorrt-$prec.json" --force
    done
fi

# 6. train ---------------------------------------------------------------------------------------------
if [ -z "${GPU_TRAIN_DATA:-}" ]; then
    record train SKIP "GPU_TRAIN_DATA not set (a CIFAR-10 archive to train on)"
elif [ ! -e "$GPU_TRAIN_DATA" ]; then
    record train FAIL "GPU_TRAIN_DATA=$GPU_TRAIN_DATA: no such file or folder"
    FAILED=1
elif ! has_module typer || ! has_module rich || ! has_module cv2; then
    record train SKIP "nin-edge train needs typer, rich and opencv (cv2) for $PY"
else
    # shellcheck disable=SC2086  # GPU_TRAIN_ARGS is a list of options, split on purpose
    run_step train train "$PY" -m nin_edge train --arch "${GPU_TRAIN_ARCH:-nin-cifar}" --data "$GPU_TRAIN_DATA" \
        --device cuda --epochs "${GPU_TRAIN_EPOCHS:-200}" --max-minutes "${GPU_TRAIN_MINUTES:-6}" \
        --out "$OUT_DIR/train" --no-progress ${GPU_TRAIN_ARGS:-}
fi

echo "summary: $SUMMARY"
exit "$FAILED"
