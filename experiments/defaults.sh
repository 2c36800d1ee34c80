#!/usr/bin/env bash
# "What the defaults learn" (docs/guide/training.md): jrnn train --task TASK with nothing
# else given but the seed, seeds 0 1 2; prints one line per run: task, seed, wall seconds
# of the whole command, and result.json's test metrics.
# Usage: bash experiments/defaults.sh [tasks...]  (default: adding copy sine digits)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=("${@:-adding copy sine digits}")
for task in ${tasks[@]}; do
  for seed in 0 1 2; do
    out="runs/defaults-$task-$seed"
    rm -rf "$out"
    start=$(date +%s.%N)
    jrnn train --task "$task" --seed "$seed" --no-progress --out "$out" > /dev/null
    end=$(date +%s.%N)
    python3 -c "import json, sys; r = json.load(open('$out/result.json'))['test']
print('$task', $seed, round($end - $start), {k: round(v, 6) for k, v in r.items()})"
  done
done
