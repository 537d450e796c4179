#!/usr/bin/env python3
"""data/external/arena_bench_v1_outcomes.jsonl: 300 hard Chatbot-Arena-style user prompts
("arena-bench-v1", the 2023 precursor of Arena-Hard) with a GPT-4 single-answer grade
(1-10, judged against a GPT-4 reference answer) for 15 models.

usage: arena_bench_v1_outcomes.py ARENA_HARD_AUTO_GITDIR   (fetch github:lmarena/arena-hard-auto)

The files exist only in the repository's history: commit 4a705dd (2023-12-14,
"reproduce"), data/arena-bench-v1/{question.jsonl, model_judgment/<model>.jsonl}.
(Arena-Hard v0.1 / v2.0 pairwise judgments are at HEAD but are >= 4 MiB each and so
absent from the snapshot.)
Rule: a model is `correct` on a prompt when its grade is >= 7 (THRESHOLD).  A missing
grade (judge output unparsed) is null.
Rows: {id, text, scores: {model: int|null}, weak_correct, strong_correct, weak_score,
       strong_score, source}; weak = Mistral-7B-Instruct-v0.1, strong = gpt-4-1106-preview.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EXTERNAL, Filter, gitdir_arg, licence_head, ls, provenance, show, write_jsonl  # noqa: E402

COMMIT = "4a705dd6963f777aba2ae79259e3013934e6e012"
THRESHOLD = 7
WEAK, STRONG = "Mistral-7B-Instruct-v0.1", "gpt-4-1106-preview"


def main():
    gd = gitdir_arg(sys.argv, __doc__)
    provenance("lmarena/arena-hard-auto", gd, licence_head(gd, COMMIT), COMMIT)
    qs = [json.loads(l) for l in show(gd, "data/arena-bench-v1/question.jsonl", COMMIT).splitlines() if l.strip()]
    scores = {}
    for p in ls(gd, "data/arena-bench-v1/model_judgment", COMMIT):
        rows = [json.loads(l) for l in show(gd, p, COMMIT).splitlines() if l.strip()]
        model = rows[0]["model"].split("/")[-1]
        if os.path.basename(p).startswith("arena-bench-judgment"):
            model = rows[0]["model"]  # llama-13b
        scores[model] = {r["question_id"]: (None if r.get("score") is None else int(r["score"])) for r in rows}
    models = sorted(scores)
    print("models graded:", ", ".join(models))
    filt = Filter()
    out = []
    for q in qs:
        text = q["turns"][0]
        if not filt.keep(text):
            continue
        s = {m: scores[m].get(q["question_id"]) for m in models}
        ws, ss = s[WEAK], s[STRONG]
        out.append({"id": f"arena-bench-v1-{q['question_id']}", "text": text, "scores": s,
                    "weak_score": ws, "strong_score": ss,
                    "weak_correct": None if ws is None else ws >= THRESHOLD,
                    "strong_correct": None if ss is None else ss >= THRESHOLD,
                    "source": f"lmarena/arena-hard-auto@{COMMIT[:7]} data/arena-bench-v1"})
    print(f"read {len(qs)} prompts; " + filt.report())
    write_jsonl(os.path.join(EXTERNAL, "arena_bench_v1_outcomes.jsonl"), out)
    w = sum(1 for r in out if r["weak_correct"]); st = sum(1 for r in out if r["strong_correct"])
    need = sum(1 for r in out if r["strong_correct"] and r["weak_correct"] is False)
    print(f"weak_correct {w}, strong_correct {st}, needs-strong {need} (threshold {THRESHOLD})")


if __name__ == "__main__":
    main()
