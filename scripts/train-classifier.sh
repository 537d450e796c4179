#!/usr/bin/env bash
# Reproduces the shipped model, models/crossroads-linear.bin: the same files, order,
# options and seeds give the same bytes. About five minutes on 2 cores (five runs, from
# seeds 1 to 5, whose weights are averaged: `--seeds`).
#
# It learns from the TRAIN split only (validation and test rows are never seen; see
# src/classify/linear/data.rs), from ../shared/data, MATH's graded problems and
# chat-phrased questions with a domain, which scripts/data/ rebuilds from public snapshots:
#   python3 scripts/data/build_exclusions.py <snapshots...>   (see scripts/data/SOURCES.md)
#   python3 scripts/data/math_levels.py <snapshot of aiwaves-cn/agents>
#   python3 scripts/data/math_pseudo_outcomes.py
#   python3 scripts/data/chat_domains.py <snapshots of ExpertQA, TruthfulQA, liveqa-organizers>
# Every option below was chosen on the validation split (scripts/research/validate.sh;
# the comparisons are in BENCHMARKS.md, "Classifier: choices on validation",
# "Chat-phrased training data" and "Difficulty and seeds").
#
#   scripts/train-classifier.sh [OUT]      (WITHOUT_OUTCOMES=FILE: leave one source's
#                                           outcomes out, as scripts/eval-lodo.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CROSSROADS_DATA:-../shared/data}
math=data/external/math_pseudo_outcomes.jsonl
chat=data/external/chat_domains_cap300.jsonl
out=${1:-models/crossroads-linear.bin}
for f in "$math" "$chat"; do
  if [ ! -f "$f" ]; then
    echo "error: $f is missing: rebuild it with scripts/data/ (see the comment above)" >&2
    exit 2
  fi
done
extra=()
if [ -n "${WITHOUT_OUTCOMES:-}" ]; then
  extra+=(--without-outcomes "$WITHOUT_OUTCOMES")
fi
cargo build --release --locked --quiet
target/release/crossroads train \
  --data "$data/domain/mmlu_pro.jsonl" \
  --data "$data/routing/routellm_mmlu_outcomes.jsonl" \
  --data "$data/tasks/gsm8k_train.jsonl" \
  --data "$data/tasks/arena_hard_v2.jsonl" \
  --data "$data/tasks/humaneval.jsonl" \
  --data "$math" \
  --data "$chat" \
  --complexity-only "$math" --source-offsets --residual-epochs 5 \
  --seed 1 --seeds 5 --out "$out" "${extra[@]}"
