#!/usr/bin/env bash
# Leave-one-dataset-out figures of the difficulty head: for each source of outcomes, a
# model is trained exactly as scripts/train-classifier.sh trains the shipped one, but
# without that source's outcomes (its labels still train the other heads), and its
# difficulty is measured on that source's test split. Run by hand: it needs the files
# scripts/data/ rebuilds into data/external. About 15 minutes on 2 cores (each model is
# five training runs, as the shipped one).
#
#   scripts/eval-lodo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CROSSROADS_DATA:-../shared/data}
out=${OUT:-/tmp/crossroads-lodo}
mkdir -p "$out"
bin=target/release/crossroads
cargo build --release --locked --quiet

declare -A source=(
  [mmlu_pro]="$data/domain/mmlu_pro.jsonl"
  [routellm_mmlu]="$data/routing/routellm_mmlu_outcomes.jsonl"
  [math_levels]="data/external/math_pseudo_outcomes.jsonl"
)
for name in mmlu_pro routellm_mmlu math_levels; do
  file=${source[$name]}
  WITHOUT_OUTCOMES="$file" scripts/train-classifier.sh "$out/without_$name.bin" >/dev/null 2>&1
  result=$($bin eval --model "$out/without_$name.bin" --data "$file" --split test | tail -n 1)
  echo "without $name outcomes, measured on its test split: $result"
done
