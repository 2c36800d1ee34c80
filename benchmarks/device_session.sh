#!/usr/bin/env bash
# Everything a session with a lent GPU should run, as one device call of under 10 minutes
# (the device tool's limit per call; a session has 15 minutes of device time in all):
#
#   0. benchmarks/gpu_compile.py --quick: ptxas's registers and spills of the heaviest
#      cases on the compile-only targets, with this machine's jax and ptxas, to set beside
#      the card's own numbers (benchmarks/RESULTS-gpu-compile.md);
#   1. benchmarks/kernel_check.py: the compiled kernels (both CUDA forms) equal the scan
#      path: the first run of the kernels on a GPU ever, so a compile error shows here;
#   2. jrnn bench --preset full: jrnn's implementations (scan, the Pallas kernels, remat,
#      DEER) against flax, haiku, Keras and PyTorch on cuDNN, float32 and bfloat16, within
#      a time budget a shape: the table, the JSON lines, the Markdown report and the plot;
#   3. jrnn bench --tune: the dispatch table for impl="auto" on this card;
#   4. benchmarks/parallel.py (parallel-in-time evaluation).
#
# Each step writes into $OUT (the device tool brings that folder back) and has its own
# timeout, so a step that hangs or fails leaves the others' results. With the device tool:
#
#   run(command="bash benchmarks/device_session.sh", timeout_s=600)
#
# then copy $OUT/RESULTS-gpu.md (jrnn bench's report, which names the card; device.txt has
# the driver and cuDNN) and bench.png to benchmarks/, and fold parallel-gpu.md into it. SMOKE=1 runs every step on tiny
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
    BENCH=(--shape 2,5,3,4 --shape 2,10,3,4 --repeats 2 --warmup 1)
    TUNE=(--shape 2,5,3,4 --dtype float32 --repeats 2 --warmup 1)
    PARALLEL=(--hidden 4 --steps 8 --repeats 1 --warmup 0)
else
    CHECK=(--options plain lengths+mask "reverse relu")
    BENCH=(--preset full --budget-s 12)
    TUNE=()
    PARALLEL=()
fi
export KERAS_BACKEND=jax

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1
    "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1
    "$PY" -c 'import torch; print("torch", torch.__version__, torch.backends.cudnn.version())' 2>&1
} >"$OUT/device.txt"
step gpu_compile 60 "$PY" benchmarks/gpu_compile.py --quick --markdown "$OUT/gpu-compile.md"
step kernel_check 150 "$PY" benchmarks/kernel_check.py "${CHECK[@]}"
step bench 300 "$PY" -m jrnn bench "${BENCH[@]}" --no-progress --json "$OUT/bench.jsonl" \
    --markdown "$OUT/RESULTS-gpu.md" --plot "$OUT/bench.png"
step tune 90 "$PY" -m jrnn bench --tune "$OUT/tuning.json" "${TUNE[@]}" --no-progress
step parallel 60 "$PY" benchmarks/parallel.py "${PARALLEL[@]}" --out "$OUT/parallel-gpu.md"
