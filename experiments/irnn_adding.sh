#!/usr/bin/env bash
# Le, Jaitly & Hinton (2015), the adding problem: IRNN (ReLU, identity recurrent init) vs a
# tanh RNN with Keras' default init, at T = 150 and T = 300, with the same optimiser.
# Usage: bash experiments/irnn_adding.sh [150 300] ; runs land in runs/, the curves and final
# figures are copied to docs/experiments/.
set -euo pipefail
cd "$(dirname "$0")/.."
lengths=("${@:-150 300}")
common=(--task adding --hidden 100 --optimizer adam --lr 2e-4 --schedule cosine --clip 1
        --steps 30000 --batch 32 --seed 0 --eval-every 1000 --checkpoint-every 5000 --no-progress)
for T in ${lengths[@]}; do
  for model in irnn tanh; do
    if [ "$model" = irnn ]; then
      opts=(--activation relu --recurrent-init identity --kernel-init small_normal)
    else
      opts=(--activation tanh --recurrent-init orthogonal --kernel-init glorot_uniform)
    fi
    name="adding-$model-T$T"
    rm -rf "runs/$name"
    jrnn train "${common[@]}" --seq-len "$T" "${opts[@]}" --out "runs/$name"
    mkdir -p "docs/experiments/$name"
    cp "runs/$name"/{metrics.png,metrics.jsonl,result.json,config.json} "docs/experiments/$name/"
  done
done
