"""MATH levels as outcomes for the difficulty head, derived from math_levels.jsonl.

No public snapshot here holds per-problem results of a small and a large model on
MATH, but the level (1 to 5, set by the dataset's authors) orders the problems by how
much work they take. The rule, fixed before any model saw the rows:

- levels 1 and 2: both models right (`weak_correct` and `strong_correct`);
- levels 4 and 5: only the strong model right;
- level 3: no outcome (left out).

`subject` becomes `math-<subject>-level<level>`, so the trainer's outcome smoothing
averages within one subject and level, never across levels.

    python3 scripts/data/math_pseudo_outcomes.py [data/external/math_levels.jsonl]
"""

import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "../../data/external/math_levels.jsonl")
out = os.path.join(os.path.dirname(src), "math_pseudo_outcomes.jsonl")
kept = dropped = 0
with open(src) as f, open(out, "w") as w:
    for line in f:
        r = json.loads(line)
        level = r["level"]
        if level == 3:
            dropped += 1
            continue
        easy = level <= 2
        row = {
            "id": r["id"],
            "text": r["text"],
            "subject": f"math-{r['subject']}-level{level}",
            "weak_correct": easy,
            "strong_correct": True,
            "level": level,
            "source": r["source"],
        }
        w.write(json.dumps(row) + "\n")
        kept += 1
print(f"wrote {out}: {kept} rows ({dropped} of level 3 left out)")
