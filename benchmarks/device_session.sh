#!/usr/bin/env bash
# Everything a session with a lent GPU should run, as one device call of under 10 minutes
# (the device tool's limit per call; a session has 15 minutes of device time in all):
#
#   0. benchmarks/gpu_compile.py --quick: ptxas's registers and spills of the heaviest
#      cases on the compile-only targets, with this machine's jax and ptxas, to set beside
#      the card's own numbers (benchmarks/RESULTS-gpu-compile.md);
#   1. benchmarks/kernel_check.py: the compiled kernels (both CUDA forms) equal the scan
#      path: the first run of the kernels on a GPU ever, so a compile error shows here;
#   2. benchmarks/accelerator.py on the issue's target region first (T >= 1000, B <= 64,
#      H <= 256), within a time budget;
#   3. benchmarks/compare.py (jrnn against flax, haiku, Keras, PyTorch on cuDNN);
#   4. benchmarks/parallel.py (parallel-in-time evaluation).
#
# Each step writes into $OUT (the device tool brings that folder back) and has its own
# timeout, so a step that hangs or fails leaves the others' results. With the device tool:
#
#   run(command="bash benchmarks/device_session.sh", timeout_s=600)
#
# then copy $OUT/RESULTS-gpu.md to benchmarks/ and fold compare-gpu.md and
# parallel-gpu.md into it, naming the card (device.txt). SMOKE=1 runs every step on tiny
# shapes (any backend: a dry run of this script on a CPU).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/jrnn-device}
mkdir -p "$OUT"
export PYTHONPATH=src
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log
    local name=$1 seconds=$2
    shift 2
    local start=$SECONDS
    timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}

if [ "${SMOKE:-0}" = 1 ]; then
    CHECK=(--smoke --dtype float32 --options plain)
    ACCEL=(--smoke --peers pallas scan)
    COMPARE=(--shape 2,5,3,4 --peers plain-scan --repeats 2 --warmup 1 --skip-remat)
    PARALLEL=(--hidden 4 --steps 8 --repeats 1 --warmup 0)
else
    CHECK=(--options plain lengths+mask "reverse relu")
    ACCEL=(--steps 1000 10000 --batch 8 64 1 --hidden 128 256 64 --repeats 10 --budget-s 200)
    COMPARE=(--skip-remat)
    PARALLEL=()
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1
    "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, torch.backends.cudnn.version())' 2>&1
} >"$OUT/device.txt"
step gpu_compile 60 "$PY" benchmarks/gpu_compile.py --quick --markdown "$OUT/gpu-compile.md"
step kernel_check 150 "$PY" benchmarks/kernel_check.py "${CHECK[@]}"
step accelerator 270 "$PY" benchmarks/accelerator.py "${ACCEL[@]}" --out "$OUT/RESULTS-gpu.md"
step compare 100 "$PY" benchmarks/compare.py "${COMPARE[@]}" --out "$OUT/compare-gpu.md"
step parallel 60 "$PY" benchmarks/parallel.py "${PARALLEL[@]}" --out "$OUT/parallel-gpu.md"
