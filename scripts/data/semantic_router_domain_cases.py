#!/usr/bin/env python3
"""data/eval-only/semantic_router_domain_cases.jsonl -- EVALUATION ONLY, never for training.
vLLM Semantic Router's end-to-end domain classification test cases.

usage: semantic_router_domain_cases.py SEMANTIC_ROUTER_GITDIR   (fetch github:vllm-project/semantic-router)
File: e2e/testcases/testdata/domain_classify_cases.json, a list of {category, question}.
Its categories are already the 14 MMLU-Pro domains, so the mapping is the identity;
a category outside the 14 would be dropped and counted.
Rows: {id, text, label, source}.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EVAL_ONLY, gitdir_arg, licence_head, provenance, show, write_jsonl  # noqa: E402

LABELS = {"biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
          "history", "law", "math", "other", "philosophy", "physics", "psychology"}
PATH = "e2e/testcases/testdata/domain_classify_cases.json"


def main():
    gd = gitdir_arg(sys.argv, __doc__)
    commit = provenance("vllm-project/semantic-router", gd, licence_head(gd))
    cases = json.loads(show(gd, PATH))
    rows, unmapped = [], 0
    for i, c in enumerate(cases):
        lab = c["category"].strip().lower()
        if lab not in LABELS:
            unmapped += 1
            continue
        rows.append({"id": f"semrouter-domain-{i}", "text": c["question"], "label": lab,
                     "source": f"vllm-project/semantic-router@{commit[:7]} {PATH}"})
    print(f"no exclusion filter: this file IS an excluded (evaluation-only) source; unmapped categories dropped: {unmapped}")
    write_jsonl(os.path.join(EVAL_ONLY, "semantic_router_domain_cases.jsonl"), rows)


if __name__ == "__main__":
    main()
