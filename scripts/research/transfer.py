"""Does a difficulty score transfer to data its head never saw?

Trains a binary "only the strong model is right" logistic regression on words (tf-idf)
and/or the hand-made complexity features of difficulty.py, with and without extra
sources, and measures on validation rows: APGR within MMLU-Pro and RouteLLM MMLU, APGR
on arena-bench v1 (real user prompts; never trained on in its column) and the Spearman
correlation of the score with MATH's difficulty level (never trained on in its column).

    python3 scripts/research/transfer.py
"""

import os
import sys

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(__file__))
from common import data, external, outcome_rows, read, transfer_figures  # noqa: E402
from difficulty import features  # noqa: E402

def main():
    mmlu = outcome_rows(data("domain", "mmlu_pro.jsonl"))
    rllm = outcome_rows(data("routing", "routellm_mmlu_outcomes.jsonl"))
    arena = outcome_rows(external("arena_bench_v1_outcomes.jsonl"))
    math = read(external("math_levels.jsonl"))
    # MATH as pseudo-outcomes (scripts/data/math_pseudo_outcomes.py): level 4-5 only the
    # strong model, 1-2 both, 3 left out.
    math_pseudo = outcome_rows(external("math_pseudo_outcomes.jsonl"))
    tr = lambda rows: [r for r in rows if r["split"] == "train"]  # noqa: E731
    va = lambda rows: [r for r in rows if r["split"] == "validation"]  # noqa: E731

    configs = {
        "mmlu+rllm": tr(mmlu) + tr(rllm),
        "mmlu+rllm+arena": tr(mmlu) + tr(rllm) + tr(arena),
        "mmlu+rllm+math": tr(mmlu) + tr(rllm) + tr(math_pseudo),
        "all": tr(mmlu) + tr(rllm) + tr(arena) + tr(math_pseudo),
    }
    math_val = va(math)
    for kind in ("words", "dense", "words+dense"):
        for name, rows in configs.items():
            texts = [r["text"] for r in rows]
            y = np.array([r["strong_correct"] and not r["weak_correct"] for r in rows])
            vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200000)
            scaler = StandardScaler()
            dense = np.array([features(t) for t in texts])
            parts = []
            if "words" in kind:
                parts.append(vec.fit_transform(texts))
            if "dense" in kind:
                parts.append(csr_matrix(scaler.fit_transform(dense)))
            X = hstack(parts).tocsr()
            m = LogisticRegression(C=1.0, max_iter=3000).fit(X, y)

            def score(rows):
                t = [r["text"] for r in rows]
                p = []
                if "words" in kind:
                    p.append(vec.transform(t))
                if "dense" in kind:
                    p.append(csr_matrix(scaler.transform(np.array([features(x) for x in t]))))
                return m.predict_proba(hstack(p).tocsr())[:, 1]

            arena_eval = arena if "arena" not in name and name != "all" else va(arena)
            sets = (("mmlu", va(mmlu)), ("rllm", va(rllm)), (f"arena({len(arena_eval)})", arena_eval))
            unseen = "" if "math" in name or name == "all" else " (MATH unseen)"
            print("  ".join([f"{kind:<12} {name:<16}"] + transfer_figures(score, sets, math_val)) + unseen, flush=True)


if __name__ == "__main__":
    main()
