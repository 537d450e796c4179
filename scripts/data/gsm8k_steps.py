#!/usr/bin/env python3
"""data/external/gsm8k_steps.jsonl: the grade-school word problems of
../shared/data/tasks/gsm8k_train.jsonl, each with the number of steps of its reference
solution as a graded difficulty (`level`).

usage: gsm8k_steps.py GRADE_SCHOOL_MATH_GITDIR   (fetch github:openai/grade-school-math)

The shared file holds the questions of grade_school_math/data/train.jsonl in order
(`gsm8k-train-N` is line N) without their solutions; the solution's lines before the
`#### answer` line are its steps (one calculation each, 2 to 8 for most problems).
Every row's text is checked against the shared row it joins. No new question comes in,
so no exclusion filter applies: these are the shared rows with one more field. The
test split (RouteLLM's GSM8K outcomes are its 1,319 questions) is not read.

Use: eval reports Spearman's rho of the difficulty score with `level`, a check of how
the difficulty head ranks problems of one kind on a set whose outcomes it never sees.
Rows: {id, text, label: "math", level (steps), source}.
"""
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EXTERNAL, SHARED, gitdir_arg, licence_head, provenance, show, write_jsonl  # noqa: E402

PATH = "grade_school_math/data/train.jsonl"


def main():
    gd = gitdir_arg(sys.argv, __doc__)
    commit = provenance("openai/grade-school-math", gd, licence_head(gd))
    source = [json.loads(line) for line in show(gd, PATH, commit).splitlines() if line.strip()]
    with open(os.path.join(SHARED, "tasks", "gsm8k_train.jsonl")) as f:
        shared = [json.loads(line) for line in f]
    rows = []
    for r in shared:
        n = int(r["id"].rsplit("-", 1)[1])
        s = source[n]
        if s["question"].strip() != r["text"].strip():
            sys.exit(f"{r['id']}: the shared text differs from line {n} of {PATH}")
        steps = [line for line in s["answer"].split("\n####")[0].splitlines() if line.strip()]
        rows.append({"id": r["id"], "text": r["text"], "label": "math", "level": len(steps),
                     "source": f"openai/grade-school-math@{commit[:7]}"})
    write_jsonl(os.path.join(EXTERNAL, "gsm8k_steps.jsonl"), rows)
    print("by steps:", dict(sorted(Counter(r["level"] for r in rows).items())))


if __name__ == "__main__":
    main()
