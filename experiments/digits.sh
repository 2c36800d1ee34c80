#!/usr/bin/env bash
# Sequential digits: scikit-learn's 8x8 digits read row by row (8 steps of 8 pixels),
# classified from the last state of a tanh RNN with Keras' default init.
# Usage: bash experiments/digits.sh ; the run lands in runs/, its curves and final figures
# are copied to docs/experiments/digits/.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf runs/digits
jrnn train --task digits --hidden 128 --activation tanh --recurrent-init orthogonal \
  --kernel-init glorot_uniform --optimizer adam --lr 3e-3 --schedule cosine --clip 1 \
  --steps 3000 --batch 64 --seed 0 --no-progress --out runs/digits
mkdir -p docs/experiments/digits
cp runs/digits/{metrics.png,metrics.jsonl,result.json,config.json} docs/experiments/digits/
