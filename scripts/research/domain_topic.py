"""Would a topic part built from the predicted DOMAIN transfer better than one built
from words? (BENCHMARKS.md, "Difficulty transfer: MATH left out, on validation".)

A "needs the strong model" logistic regression on the complexity counts of
difficulty.py plus one topic part:
  words   tf-idf word 1-2 grams (what the shipped frontier head does, roughly);
  domain  the 14 domain probabilities of a tf-idf domain classifier trained on the
          MMLU-Pro train rows (out-of-fold for those rows), so the topic part is the same
          for every prompt of one domain;
  none    the counts alone.
Each source gets its own offset (one-hot), as the shipped trainer's --source-offsets.
Trained on the train split of MMLU-Pro and RouteLLM MMLU outcomes, with or without
MATH's pseudo-outcomes; measured on VALIDATION rows only: APGR within MMLU-Pro and
RouteLLM, Spearman of the score with MATH's level (unseen when MATH is left out), and
APGR on arena-bench v1 (its train and validation rows, never trained on).

    python3 scripts/research/domain_topic.py
"""

import os
import sys

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(__file__))
from common import data, external, outcome_rows, question, read, transfer_figures  # noqa: E402
from difficulty import features  # noqa: E402

def with_source(rows, source):
    return [dict(r, source=source) for r in rows]


def main():
    mmlu = with_source(outcome_rows(data("domain", "mmlu_pro.jsonl")), 0)
    rllm = with_source(outcome_rows(data("routing", "routellm_mmlu_outcomes.jsonl")), 1)
    arena = with_source(outcome_rows(external("arena_bench_v1_outcomes.jsonl")), 1)
    levels = read(external("math_levels.jsonl"))
    math_pseudo = with_source(outcome_rows(external("math_pseudo_outcomes.jsonl")), 2)
    tr = lambda rows: [r for r in rows if r["split"] == "train"]  # noqa: E731
    va = lambda rows: [r for r in rows if r["split"] == "validation"]  # noqa: E731

    # The domain classifier: MMLU-Pro train rows; out-of-fold probabilities for them.
    dom_rows = [r for r in read(data("domain", "mmlu_pro.jsonl")) if r["split"] == "train"]
    dvec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200000)
    Xd = dvec.fit_transform([r["text"] for r in dom_rows])
    yd = [r["label"] for r in dom_rows]
    dclf = LogisticRegression(C=10.0, max_iter=3000)
    oof = cross_val_predict(dclf, Xd, yd, cv=5, method="predict_proba")
    dclf.fit(Xd, yd)
    # By question, not id: RouteLLM asks many of the same MMLU questions, and they must
    # get the out-of-fold probabilities too, not the classifier's memory of them.
    oof_by_question = {question(r["text"]): p for r, p in zip(dom_rows, oof)}

    def domain_probs(rows):
        out = dclf.predict_proba(dvec.transform([r["text"] for r in rows]))
        for i, r in enumerate(rows):
            p = oof_by_question.get(question(r["text"]))
            if p is not None:
                out[i] = p
        return out

    # An offset is constant within a dataset, so which one unseen rows get does not matter.
    math_val = with_source(va(levels), 0)
    for with_math in (False, True):
        rows = tr(mmlu) + tr(rllm) + (tr(math_pseudo) if with_math else [])
        y = np.array([r["strong_correct"] and not r["weak_correct"] for r in rows])
        scaler = StandardScaler().fit(np.array([features(r["text"]) for r in rows]))
        wvec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=200000)
        wvec.fit([r["text"] for r in rows])
        for topic in ("none", "domain", "words"):
            def design(rs):
                parts = [csr_matrix(scaler.transform(np.array([features(r["text"]) for r in rs])))]
                parts.append(csr_matrix(np.eye(3)[[r["source"] for r in rs]]))
                if topic == "domain":
                    parts.append(csr_matrix(domain_probs(rs) * 4.0))
                if topic == "words":
                    parts.append(wvec.transform([r["text"] for r in rs]))
                return hstack(parts).tocsr()

            m = LogisticRegression(C=1.0, max_iter=3000).fit(design(rows), y)

            def score(rs):
                return m.predict_proba(design(rs))[:, 1]

            sets = (("mmlu-pro", va(mmlu)), ("routellm", va(rllm)), ("arena", arena))
            out = [f"MATH {'trained' if with_math else 'left out'}  topic={topic:<7}"]
            print("  ".join(out + transfer_figures(score, sets, math_val)), flush=True)


if __name__ == "__main__":
    main()
