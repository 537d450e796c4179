#!/usr/bin/env python3
"""data/external/math_levels.jsonl: the MATH dataset (Hendrycks et al.), 12,500
competition problems with `subject` (7 types) and `level` 1-5 (a difficulty signal).

usage: math_levels.py AIWAVES_AGENTS_GITDIR
  (fetch github:aiwaves-cn/agents; the files are src/agents/datasets/data/math/{train,test}/<subject>/<n>.json,
   the original MATH release layout.)
openai/prm800k holds the same problems as prm800k/math_splits/{train,test}.jsonl, but
there they are Git LFS pointers, absent from the snapshot.
Rows: {id, text, label: "math", level (int), subject, split, source}.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EXTERNAL, Filter, gitdir_arg, git, licence_head, provenance, write_jsonl  # noqa: E402

PREFIX = "src/agents/datasets/data/math/"


def main():
    gd = gitdir_arg(sys.argv, __doc__)
    commit = provenance("aiwaves-cn/agents", gd, licence_head(gd) + " (repo); MATH data itself MIT (hendrycks/math)")
    # one `git cat-file --batch` pass over all 12,500 blobs
    listing = git(gd, "ls-tree", "-r", commit, "--", PREFIX).splitlines()
    entries = []
    for line in listing:
        meta, path = line.split("\t", 1)
        if path.endswith(".json"):
            entries.append((meta.split()[2], path))
    import subprocess
    proc = subprocess.run(["git", "--git-dir", gd, "cat-file", "--batch"],
                          input="".join(sha + "\n" for sha, _ in entries).encode(), capture_output=True, check=True)
    out, pos = proc.stdout, 0
    filt = Filter()
    rows, bad = [], 0
    for sha, path in entries:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split()[2])
        blob = out[nl + 1: nl + 1 + size]
        pos = nl + 1 + size + 1
        split, subject, fname = path[len(PREFIX):].split("/")
        try:
            d = json.loads(blob)
            level = int(d["level"].split()[-1])
        except Exception:
            bad += 1  # e.g. "Level ?" in a handful of MATH train problems
            continue
        text = d["problem"].strip()
        if not filt.keep(text):
            continue
        rows.append({"id": f"math-{split}-{subject}-{fname[:-5]}", "text": text, "label": "math",
                     "level": level, "subject": subject, "split": split,
                     "source": f"MATH via aiwaves-cn/agents@{commit[:7]}"})
    rows.sort(key=lambda r: r["id"])
    print(f"read {len(entries)} problems; skipped {bad} without a numeric level")
    print(filt.report())
    write_jsonl(os.path.join(EXTERNAL, "math_levels.jsonl"), rows)
    from collections import Counter
    print("by level:", dict(sorted(Counter(r["level"] for r in rows).items())))
    print("by split:", dict(Counter(r["split"] for r in rows)))


if __name__ == "__main__":
    main()
