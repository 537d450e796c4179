#!/usr/bin/env bash
# Measures the shipped classifier on the held-out split of ../shared/data (20% of the
# rows, chosen by a hash of the question text) and fails when a bar is missed:
#   domain macro-F1 >= 0.83 (MMLU-Pro), routing APGR >= 0.64 and CPT(50%) <= 0.30
#   (RouteLLM MMLU outcomes), model file < 20 MB, load < 200 ms.
# Also reports the MMLU-Pro outcomes, the task head and the conversational fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CROSSROADS_DATA:-../shared/data}
model=${MODEL:-models/crossroads-linear.bin}
bin=target/release/crossroads
if [ ! -d "$data" ]; then
  echo "error: $data is missing" >&2
  exit 2
fi
cargo build --release --locked --quiet

size=$(stat -c %s "$model")
echo "== model $model: $size bytes"
if [ "$size" -ge 20000000 ]; then
  echo "bar missed: the model file must stay under 20 MB" >&2
  exit 1
fi

echo "== domain head and MMLU-Pro outcomes"
$bin eval --model "$model" --data "$data/domain/mmlu_pro.jsonl" \
  --require "macro_f1>=0.83" --require "load_ms<=200"

echo "== routing: RouteLLM MMLU outcomes"
$bin eval --model "$model" --data "$data/routing/routellm_mmlu_outcomes.jsonl" \
  --require "apgr>=0.64" --require "cpt50<=0.30"

echo "== task head: held-out task prompts (reported)"
$bin eval --model "$model" --data "$data/tasks/gsm8k_train.jsonl" \
  --data "$data/tasks/arena_hard_v2.jsonl" --data "$data/tasks/humaneval.jsonl" | tail -n 1

echo "== conversational prompts, tests/fixtures (reported)"
$bin eval --model "$model" --data tests/fixtures/conversational.jsonl --split all | tail -n 1
$bin eval --model "$model" --data tests/fixtures/conversational_tasks.jsonl --split all | tail -n 1
