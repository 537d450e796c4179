#!/usr/bin/env bash
# Trains one candidate with the Rust trainer and prints its VALIDATION figures, one JSON
# line: every choice of the shipped model (data, features, rates, epochs) is made by
# comparing these lines; the test split is read only by scripts/eval-classifier.sh.
#
#   scripts/research/validate.sh NAME [train options...]
#
# The candidate trains on ../shared/data plus the external files the scripts in
# scripts/data/ rebuild into data/external (those present). Arena-bench v1 outcomes and
# MATH levels are measured on every row of the validation split.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1
shift
data=${CROSSROADS_DATA:-../shared/data}
ext=data/external
bin=target/release/crossroads
out=${OUT:-/tmp/crossroads-candidates}
mkdir -p "$out"
files=(--data "$data/domain/mmlu_pro.jsonl" --data "$data/routing/routellm_mmlu_outcomes.jsonl"
  --data "$data/tasks/gsm8k_train.jsonl" --data "$data/tasks/arena_hard_v2.jsonl"
  --data "$data/tasks/humaneval.jsonl")
for extra in ${EXTRA:-}; do
  files+=(--data "$ext/$extra.jsonl")
done
$bin train "${files[@]}" --out "$out/$name.bin" "$@" 2>/dev/null >"$out/$name.train.log"
ev() { $bin eval --model "$out/$name.bin" "$@" 2>/dev/null | tail -n 1; }
j() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(json.dumps(d.get('$2')))" "$1"; }
dom=$(ev --data "$data/domain/mmlu_pro.jsonl")
rllm=$(ev --data "$data/routing/routellm_mmlu_outcomes.jsonl")
task=$(ev --data "$data/tasks/gsm8k_train.jsonl" --data "$data/tasks/arena_hard_v2.jsonl" --data "$data/tasks/humaneval.jsonl")
# Every arena row when the candidate never saw its outcomes, else its validation rows.
arena_split=all
[[ " ${EXTRA:-} " == *" arena_bench_v1_outcomes "* ]] && arena_split=validation
arena=$(ev --data "$ext/arena_bench_v1_outcomes.jsonl" --split $arena_split)
math=$(ev --data "$ext/math_levels.jsonl")
# GSM8K train problems graded by their solutions' steps (scripts/data/gsm8k_steps.py):
# no outcome of them is trained on, so this is how the head ranks a set of one kind.
gsm='{}'
[ -f "$ext/gsm8k_steps.jsonl" ] && gsm=$(ev --data "$ext/gsm8k_steps.jsonl")
conv=$(ev --data tests/fixtures/conversational.jsonl --split all)
# Chat-phrased questions (scripts/data/chat_domains.py): validation rows, trained on or not.
chat='{}'
[ -f "$ext/chat_domains.jsonl" ] && chat=$(ev --data "$ext/chat_domains.jsonl")
printf '{"name":"%s","f1":%s,"mmlupro_apgr":%s,"rllm_apgr":%s,"rllm_cpt50":%s,"task_f1":%s,"arena_apgr":%s,"math_rho":%s,"gsm_rho":%s,"conv_acc":%s,"chat_acc":%s,"chat_bal":%s,"chat_f1":%s,"args":"%s"}\n' \
  "$name" "$(j "$dom" macro_f1)" "$(j "$dom" apgr)" "$(j "$rllm" apgr)" "$(j "$rllm" cpt50)" \
  "$(j "$task" macro_f1)" "$(j "$arena" apgr)" "$(j "$math" level_rho)" "$(j "$gsm" level_rho)" "$(j "$conv" accuracy)" "$(j "$chat" accuracy)" "$(j "$chat" balanced_accuracy)" "$(j "$chat" macro_f1)" "$* EXTRA=${EXTRA:-}" |
  tee -a "$out/results.jsonl"
