"""Topic rates plus a complexity residual: the difficulty design measured here.

A question's chance that only the strong model is right is split into what its topic
explains (the outcome rate of its MMLU subject or label, learned from words) and what
the question itself adds (length, numbers, operators, cue words: features that mean the
same on any dataset). The residual is a logistic regression on the hand-made features
with the topic model's logit as a fixed offset, fitted on per-question outcomes.

Measured on validation rows: APGR within MMLU-Pro and RouteLLM MMLU, and the Spearman
correlation with MATH's level (a dataset no candidate trains on).

    python3 scripts/research/residual.py
"""

import os
import sys

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import vstack
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(__file__))
from common import data, read, routing  # noqa: E402
from difficulty import features  # noqa: E402

EXT = os.path.join(os.path.dirname(__file__), "../../data/external")


def group(r):
    src = r.get("src") or ""
    return r.get("subject") or (src[len("ori_mmlu-"):] if src.startswith("ori_mmlu-") else None) or r.get("label")


def fit_offset(X, y, offset, l2):
    n, d = X.shape

    def f(wb):
        w, b = wb[:d], wb[d]
        z = X @ w + b + offset
        p = 1 / (1 + np.exp(-z))
        eps = 1e-9
        loss = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)) + l2 * w @ w
        g = p - y
        return loss, np.concatenate([X.T @ g / n + 2 * l2 * w, [g.mean()]])

    res = minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B")
    return res.x[:d], res.x[d]


def main():
    sets = {
        "mmlu": [r for r in read(data("domain", "mmlu_pro.jsonl")) if r.get("weak_correct") is not None],
        "rllm": [r for r in read(data("routing", "routellm_mmlu_outcomes.jsonl"))],
    }
    math_val = [r for r in read(os.path.join(EXT, "math_levels.jsonl")) if r["split"] == "validation"]
    train = [dict(r, ds=k) for k, rows in sets.items() for r in rows if r["split"] == "train"]
    y = np.array([r["strong_correct"] and not r["weak_correct"] for r in train], dtype=float)
    # topic model: group-smoothed targets, as the Rust trainer's outcome_keep = 0
    rates = {}
    for r, t in zip(train, y):
        k = (r["ds"], group(r))
        a = rates.setdefault(k, [0, 0])
        a[0] += t
        a[1] += 1
    soft = np.array([rates[(r["ds"], group(r))][0] / rates[(r["ds"], group(r))][1] for r in train])
    texts = [r["text"] for r in train]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    Xw = vec.fit_transform(texts)
    # soft targets via sample weights on duplicated rows
    topic = LogisticRegression(C=4.0, max_iter=3000).fit(
        vstack([Xw, Xw]), np.r_[np.ones(len(y)), np.zeros(len(y))], sample_weight=np.r_[soft, 1 - soft]
    )
    F = np.array([features(t) for t in texts])
    mu, sd = F.mean(0), F.std(0) + 1e-9
    Fz = (F - mu) / sd
    off = topic.decision_function(Xw)

    def topic_logit(rows):
        return topic.decision_function(vec.transform([r["text"] for r in rows]))

    def feats(rows):
        return (np.array([features(r["text"]) for r in rows]) - mu) / sd

    for l2 in (0.0, 0.01, 0.1):
        w, b = fit_offset(Fz, y, off, l2)
        out = [f"l2={l2:<5}"]
        for k in ("mmlu", "rllm"):
            v = [r for r in sets[k] if r["split"] == "validation"]
            wv, sv = [r["weak_correct"] for r in v], [r["strong_correct"] for r in v]
            t = topic_logit(v)
            res = feats(v) @ w
            out.append(f"{k}: topic {routing(t, wv, sv)['apgr']:.3f} +resid {routing(t + res + b, wv, sv)['apgr']:.3f}")
        t = topic_logit(math_val)
        res = feats(math_val) @ w
        lv = [r["level"] for r in math_val]
        out.append(
            f"math rho: topic {spearmanr(t, lv).statistic:.3f} resid {spearmanr(res, lv).statistic:.3f} "
            f"sum {spearmanr(t + res, lv).statistic:.3f}"
        )
        print("  ".join(out), flush=True)
        if l2 == 0.01:
            print("  weights:", np.round(w, 3))


if __name__ == "__main__":
    main()
