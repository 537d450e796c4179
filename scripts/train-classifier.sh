#!/usr/bin/env bash
# Reproduces the shipped model, models/crossroads-linear.bin, from ../shared/data: the
# same files, order and seed give the same bytes. About a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${CROSSROADS_DATA:-../shared/data}
out=${1:-models/crossroads-linear.bin}
cargo build --release --locked --quiet
target/release/crossroads train \
  --data "$data/domain/mmlu_pro.jsonl" \
  --data "$data/routing/routellm_mmlu_outcomes.jsonl" \
  --data "$data/tasks/gsm8k_train.jsonl" \
  --data "$data/tasks/arena_hard_v2.jsonl" \
  --data "$data/tasks/humaneval.jsonl" \
  --seed 1 --out "$out"
