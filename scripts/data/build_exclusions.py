#!/usr/bin/env python3
"""Builds data/external/_exclusions.json: normalized texts that must never enter a
training file (HARD EXCLUSIONS), plus the normalized texts already in ../shared/data.

usage: build_exclusions.py ROUTELLM_GITDIR MMLU_PRO_GITDIR SEMANTIC_ROUTER_GITDIR

Excluded (held out or evaluation-only):
  * MMLU-Pro test questions (TIGER-AI-Lab/MMLU-Pro eval_results/, any zip holds all
    12,032) that are NOT in ../shared/data/domain/mmlu_pro.jsonl
  * MMLU test questions (lm-sys/RouteLLM routellm/evals/mmlu/responses/*.csv) that are
    NOT in ../shared/data/routing/routellm_mmlu_outcomes.jsonl
  * RouteLLM GSM8K outcomes (routellm/evals/gsm8k/gsm8k_responses.csv) and the GSM8K
    test file beside it; RouteLLM MT-Bench questions (both turns of all 80)
  * vLLM Semantic Router domain test cases (e2e/testcases/testdata/domain_classify_cases.json)
Texts are keyed by norm(text) and norm(stem(text)) (see _common.py).
"""
import csv
import io
import json
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EXCLUSIONS, SHARED, head, keys, ls, show  # noqa: E402

csv.field_size_limit(1 << 30)


def shared_texts(rel):
    with open(os.path.join(SHARED, rel)) as f:
        return [json.loads(l)["text"] for l in f]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    routellm, mmlupro, semrouter = sys.argv[1:4]
    shared = set()
    for rel in ["domain/mmlu_pro.jsonl", "routing/routellm_mmlu_outcomes.jsonl",
                "tasks/gsm8k_train.jsonl", "tasks/arena_hard_v2.jsonl", "tasks/humaneval.jsonl"]:
        for t in shared_texts(rel):
            shared |= keys(t)
    shared_pro = set()
    for t in shared_texts("domain/mmlu_pro.jsonl"):
        shared_pro |= keys(t)
    shared_mmlu = set()
    for t in shared_texts("routing/routellm_mmlu_outcomes.jsonl"):
        shared_mmlu |= keys(t)

    excluded = set()
    counts = {}
    # MMLU-Pro: the full test set, as the union of every readable eval_results zip
    full = {}
    for z in sorted(p for p in ls(mmlupro, "eval_results") if p.endswith(".zip")):
        try:
            zf = zipfile.ZipFile(io.BytesIO(show(mmlupro, z, binary=True)))
            data = json.loads(zf.read(zf.namelist()[0]))
        except Exception:
            continue  # a file over the snapshot's size limit is absent
        for q in data:
            if isinstance(q, dict) and "question" in q:
                full[str(q["question_id"])] = q["question"]
    n = 0
    for t in full.values():
        k = keys(t)
        if not (k & shared_pro):
            excluded |= k
            n += 1
    counts["mmlu_pro_held_out"] = n
    counts["mmlu_pro_total"] = len(full)
    # MMLU test (RouteLLM)
    n = tot = 0
    for p in ls(routellm, "routellm/evals/mmlu/responses"):
        for row in csv.DictReader(io.StringIO(show(routellm, p))):
            tot += 1
            k = keys(row["prompt"])
            if not (k & shared_mmlu):
                excluded |= k
                n += 1
    counts["mmlu_test_total"] = tot
    counts["mmlu_test_held_out"] = n
    # GSM8K outcomes + GSM8K test
    n = 0
    for row in csv.DictReader(io.StringIO(show(routellm, "routellm/evals/gsm8k/gsm8k_responses.csv"))):
        excluded |= keys(row["prompt"]); n += 1
    counts["gsm8k_outcomes"] = n
    n = 0
    for l in show(routellm, "routellm/evals/gsm8k/test.jsonl").splitlines():
        if l.strip():
            excluded |= keys(json.loads(l)["question"]); n += 1
    counts["gsm8k_test"] = n
    # MT-Bench
    n = 0
    for l in show(routellm, "routellm/evals/mt_bench/question.jsonl").splitlines():
        if l.strip():
            for t in json.loads(l)["turns"]:
                excluded |= keys(t)
            n += 1
    counts["mt_bench_questions"] = n
    # Semantic Router domain cases
    cases = json.loads(show(semrouter, "e2e/testcases/testdata/domain_classify_cases.json"))
    for c in cases:
        excluded |= keys(c["question"])
    counts["semantic_router_domain_cases"] = len(cases)

    out = {"sources": {"routellm": head(routellm), "mmlu_pro": head(mmlupro), "semantic_router": head(semrouter)},
           "counts": counts, "excluded": sorted(excluded), "shared": sorted(shared)}
    os.makedirs(os.path.dirname(EXCLUSIONS), exist_ok=True)
    with open(EXCLUSIONS, "w") as f:
        json.dump(out, f)
    print(json.dumps(counts))
    print(f"{len(excluded)} excluded keys, {len(shared)} shared keys -> {EXCLUSIONS}")


if __name__ == "__main__":
    main()
