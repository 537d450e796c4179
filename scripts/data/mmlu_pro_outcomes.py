#!/usr/bin/env python3
"""data/external/mmlu_pro_outcomes.jsonl: per-question correctness of many models on
the MMLU-Pro questions that are in ../shared/data/domain/mmlu_pro.jsonl (and only those).

usage: mmlu_pro_outcomes.py MMLU_PRO_GITDIR   (fetch github:TIGER-AI-Lab/MMLU-Pro)

Sources in that snapshot:
  * HEAD eval_results/model_outputs_<model>_5shots.zip  (every zip under the snapshot's
    4 MiB limit; larger ones - e.g. gpt-4o-mini, claude-3.5-sonnet, Meta-Llama-3-8B-Instruct -
    are absent);
  * commit bfa90e1 (2024-07-08, deleted later) eval_results/gpt4o/*_result.json
    (model "gpt-4o", i.e. gpt-4o-2024-05-13) and eval_results/deepseek/*_result.json
    (model "deepseek-chat", DeepSeek-V2 of May 2024).
A model is correct when its parsed `pred` equals `answer`; an unparsed pred (None) is
counted wrong (the repo's own scorer instead draws a random letter).  A question the
model's file lacks is null.
Rows: {id (same id as the shared file), text, label, outcomes: {model: bool|null},
       weak_correct, strong_correct} where the default pair is
       weak = Mistral-7B-Instruct-v0.2, strong = gpt-4o (2024-05-13).
"""
import io
import json
import os
import re
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EXTERNAL, SHARED, gitdir_arg, licence_head, ls, provenance, show, write_jsonl  # noqa: E402

OLD = "bfa90e1c730dd30cb6244fb5f8d93472bc5e2c5d"
WEAK, STRONG = "Mistral-7B-Instruct-v0.2", "gpt-4o-2024-05-13"


def correct(q):
    p = q.get("pred")
    return p is not None and str(p).strip() == str(q["answer"]).strip()


def main():
    gd = gitdir_arg(sys.argv, __doc__)
    commit = provenance("TIGER-AI-Lab/MMLU-Pro", gd, licence_head(gd))
    with open(os.path.join(SHARED, "domain/mmlu_pro.jsonl")) as f:
        shared = [json.loads(l) for l in f]
    qids = {r["id"].split("-", 1)[1] for r in shared}
    results = {}  # model -> {qid: bool}
    for z in sorted(p for p in ls(gd, "eval_results", commit) if p.endswith(".zip")):
        model = re.sub(r"^model_outputs_|_5shots(\.json)?\.zip$", "", os.path.basename(z))
        try:
            zf = zipfile.ZipFile(io.BytesIO(show(gd, z, commit, binary=True)))
            data = json.loads(zf.read(zf.namelist()[0]))
        except Exception:
            print(f"  absent from snapshot (>= 4 MiB): {model}")
            continue
        results[model] = {str(q["question_id"]): correct(q) for q in data if isinstance(q, dict) and "answer" in q}
    for sub, model in [("gpt4o", "gpt-4o-2024-05-13"), ("deepseek", "deepseek-chat-v2-2024-05")]:
        res = {}
        for p in ls(gd, f"eval_results/{sub}", OLD):
            if p.endswith("_result.json"):
                for q in json.loads(show(gd, p, OLD)):
                    res[str(q["question_id"])] = correct(q)
        results[model] = res
    models = sorted(results)
    rows = []
    for r in shared:
        qid = r["id"].split("-", 1)[1]
        out = {m: results[m].get(qid) for m in models}
        rows.append({"id": r["id"], "text": r["text"], "label": r["label"], "outcomes": out,
                     "weak_correct": out[WEAK], "strong_correct": out[STRONG],
                     "source": f"TIGER-AI-Lab/MMLU-Pro@{commit[:7]} eval_results (+{OLD[:7]} gpt4o/deepseek)"})
    print("no exclusion filter needed: rows are exactly the shared file's questions (ids joined); "
          f"{len(qids)} shared ids")
    write_jsonl(os.path.join(EXTERNAL, "mmlu_pro_outcomes.jsonl"), rows)
    for m in models:
        v = [row["outcomes"][m] for row in rows if row["outcomes"][m] is not None]
        print(f"  {m:40s} covered {len(v):5d}  acc {sum(v) / max(1, len(v)):.3f}")
    need = sum(1 for x in rows if x["strong_correct"] and not x["weak_correct"])
    print(f"default pair {WEAK} vs {STRONG}: needs-strong (strong right, weak wrong) = {need}")


if __name__ == "__main__":
    main()
