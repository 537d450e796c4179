#!/usr/bin/env python3
"""data/eval-only/routellm_gsm8k_outcomes.jsonl -- EVALUATION ONLY, never for training.
RouteLLM's GSM8K (test set) outcomes: per question, Mixtral-8x7B-Instruct-v0.1 (weak)
and gpt-4-1106-preview (strong) correctness.

usage: routellm_gsm8k_outcomes.py ROUTELLM_GITDIR   (fetch github:lm-sys/RouteLLM)
File: routellm/evals/gsm8k/gsm8k_responses.csv (columns prompt, <weak>, <strong>, ...).
RouteLLM's own benchmark drops the prompts listed in contaminated_prompts.jsonl
(`eval_prompt`); rows carry `contaminated: true` for those so both counts can be used.
Rows: {id, text, weak_correct, strong_correct, contaminated, source}.
"""
import csv
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EVAL_ONLY, gitdir_arg, licence_head, provenance, show, write_jsonl  # noqa: E402

csv.field_size_limit(1 << 30)
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"


def b(x):
    return str(x).strip().lower() == "true"


def main():
    gd = gitdir_arg(sys.argv, __doc__)
    commit = provenance("lm-sys/RouteLLM", gd, licence_head(gd))
    cont = {json.loads(l)["eval_prompt"] for l in show(gd, "routellm/evals/gsm8k/contaminated_prompts.jsonl").splitlines() if l.strip()}
    rows = []
    for i, r in enumerate(csv.DictReader(io.StringIO(show(gd, "routellm/evals/gsm8k/gsm8k_responses.csv")))):
        rows.append({"id": f"routellm-gsm8k-{i}", "text": r["prompt"], "weak_correct": b(r[WEAK]),
                     "strong_correct": b(r[STRONG]), "contaminated": r["prompt"] in cont,
                     "source": f"lm-sys/RouteLLM@{commit[:7]} routellm/evals/gsm8k/gsm8k_responses.csv"})
    print("no exclusion filter: this file IS an excluded (evaluation-only) source")
    write_jsonl(os.path.join(EVAL_ONLY, "routellm_gsm8k_outcomes.jsonl"), rows)
    clean = [r for r in rows if not r["contaminated"]]
    print(f"contaminated (RouteLLM drops them): {len(rows) - len(clean)}; clean: {len(clean)}")
    print(f"weak acc {sum(r['weak_correct'] for r in clean) / len(clean):.3f}, "
          f"strong acc {sum(r['strong_correct'] for r in clean) / len(clean):.3f} (clean rows)")


if __name__ == "__main__":
    main()
