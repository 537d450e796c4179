"""Which request features predict that only the frontier model answers right, in a way
that transfers to a dataset the difficulty head never saw?

Compares feature sets and targets with a logistic regression on the validation split,
within each outcome dataset and leave-one-dataset-out. Prints one line per candidate.

    python3 scripts/research/difficulty.py
"""

import re
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import data, read, routing  # noqa: E402

NUM = re.compile(r"\d+(?:[.,]\d+)*")
WORD = re.compile(r"[A-Za-z]+")
SENT = re.compile(r"[.!?](?:\s|$)")
OPS = re.compile(r"[+\-*/=^<>%$]")
LATEX = re.compile(r"\\[a-zA-Z]+")
CALC = re.compile(r"\b(calculate|compute|how many|how much|find|determine|what is the value|evaluate|solve|total|estimate)\b", re.I)
NEG = re.compile(r"\b(not|except|least|incorrect|false|never|unless)\b", re.I)
PROVE = re.compile(r"\b(prove|show that|derive|explain why|justify)\b", re.I)
CONSTRAINT = re.compile(r"\b(must|exactly|at least|at most|only|each|every|per|if|remaining|times|twice|half)\b", re.I)
UNITS = re.compile(r"\b(kg|g|m|cm|mm|km|s|ms|hz|mol|j|kj|n|pa|v|w|k|l|ml|%|dollars?|hours?|minutes?|days?|years?)\b", re.I)


def features(text: str):
    words = WORD.findall(text)
    nums = NUM.findall(text)
    lw = np.log1p
    return [
        lw(len(words)),
        lw(len(nums)),
        lw(len(set(nums))),
        lw(sum(1 for n in nums if "." in n)),
        lw(len(SENT.findall(text))),
        lw(len(OPS.findall(text))),
        lw(len(LATEX.findall(text))),
        lw(len(CALC.findall(text))),
        lw(len(NEG.findall(text))),
        lw(len(PROVE.findall(text))),
        lw(len(CONSTRAINT.findall(text))),
        lw(len(UNITS.findall(text))),
        np.mean([len(w) for w in words]) / 10 if words else 0.0,
        sum(1 for w in words if w[0].isupper()) / max(1, len(words)),
        lw(text.count("?")),
        lw(len(text)),
    ]


def load():
    sets = {}
    for name, path in [
        ("mmlu_pro", data("domain", "mmlu_pro.jsonl")),
        ("routellm", data("routing", "routellm_mmlu_outcomes.jsonl")),
    ]:
        rows = [r for r in read(path) if "weak_correct" in r and "strong_correct" in r]
        sets[name] = rows
    return sets


def xy(rows):
    X = np.array([features(r["text"]) for r in rows])
    w = np.array([r["weak_correct"] for r in rows], dtype=bool)
    s = np.array([r["strong_correct"] for r in rows], dtype=bool)
    return X, w, s


def score(model, scaler, X, target):
    p = model.predict_proba(scaler.transform(X))
    if target == "gain":
        # classes -1, 0, 1: expected gain of asking the strong model
        classes = list(model.classes_)
        return p[:, classes.index(1)] - p[:, classes.index(-1)]
    return p[:, 1]


def fit(X, w, s, target, C):
    if target == "strong_only":
        y = s & ~w
    elif target == "weak_wrong":
        y = ~w
    else:
        y = s.astype(int) - w.astype(int)
    scaler = StandardScaler().fit(X)
    m = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(X), y)
    return m, scaler


def main():
    sets = load()
    parts = {k: {sp: [r for r in v if r["split"] == sp] for sp in ("train", "validation")} for k, v in sets.items()}
    mats = {k: {sp: xy(rows) for sp, rows in v.items()} for k, v in parts.items()}
    for target in ("strong_only", "weak_wrong", "gain"):
        for C in (0.1, 1.0):
            line = [f"{target:<12} C={C:<4}"]
            for train_on in (["mmlu_pro", "routellm"], ["mmlu_pro"], ["routellm"]):
                X = np.vstack([mats[k]["train"][0] for k in train_on])
                w = np.concatenate([mats[k]["train"][1] for k in train_on])
                s = np.concatenate([mats[k]["train"][2] for k in train_on])
                m, sc = fit(X, w, s, target, C)
                for k in ("mmlu_pro", "routellm"):
                    Xv, wv, sv = mats[k]["validation"]
                    r = routing(score(m, sc, Xv, target), wv, sv)
                    tag = "+".join(t[:4] for t in train_on)
                    line.append(f"{tag}->{k[:4]} {r['apgr']:.3f}")
            print("  ".join(line), flush=True)
    # single features, as a sanity check of direction
    Xv = np.vstack([mats[k]["validation"][0] for k in mats])
    wv = np.concatenate([mats[k]["validation"][1] for k in mats])
    sv = np.concatenate([mats[k]["validation"][2] for k in mats])
    for j in range(Xv.shape[1]):
        r = routing(Xv[:, j] + 1e-6 * np.random.default_rng(0).random(len(Xv)), wv, sv)
        print(f"feature {j:>2}: apgr {r['apgr']:.3f}")


if __name__ == "__main__":
    main()
