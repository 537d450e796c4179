"""Shared pieces of the classifier research scripts: the split protocol (the same salted
hash as `src/classify/linear/data.rs`), the data readers and the routing metrics (the same
arithmetic as `src/classify/linear/metrics.rs`).

These scripts are where candidate designs are compared on the validation split before
one is built into the Rust trainer; they never read the test split.
"""

import json
import os

DATA = os.environ.get("CROSSROADS_DATA", os.path.join(os.path.dirname(__file__), "../../../shared/data"))

SALT = b"xr-split"
TEST_PERCENT = 10
VALIDATION_PERCENT = 10


def question(text: str) -> str:
    """The question a row asks: its text before an `\nA. ` options block, lower-cased
    letters and digits only (what the split hashes, so two files' copies of one
    question match)."""
    i = text.find("\nA. ")
    stem = text if i < 0 else text[:i]
    return "".join(c.lower() for c in stem if c.isascii() and c.isalnum())


# What the hash keeps of the salt: like the text, its letters and digits only (as Rust's
# `data::bucket` filters the whole byte stream).
HASHED_SALT = bytes(b for b in SALT if bytes([b]).isalnum())


def bucket(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in HASHED_SALT + question(text).encode("ascii"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % 100


def split_of(text: str) -> str:
    b = bucket(text)
    if b < TEST_PERCENT:
        return "test"
    if b < TEST_PERCENT + VALIDATION_PERCENT:
        return "validation"
    return "train"


def read(path: str, splits=("train", "validation")):
    """Rows of a JSONL file in the given splits; the test split is never returned
    unless asked for by name."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            row["split"] = split_of(row["text"])
            if row["split"] in splits:
                rows.append(row)
    return rows


def data(*parts: str) -> str:
    return os.path.join(DATA, *parts)


def external(name: str) -> str:
    """A file that scripts/data/ rebuilds into data/external."""
    return os.path.join(os.path.dirname(__file__), "../../data/external", name)


def outcome_rows(path: str):
    """The train and validation rows of `path` that have both models' outcomes."""
    return [r for r in read(path) if r.get("weak_correct") is not None and r.get("strong_correct") is not None]


def routing(scores, weak, strong, bins=20):
    """APGR, CPT(50%), CPT(80%) as `metrics::routing` computes them."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak, dtype=bool)
    strong = np.asarray(strong, dtype=bool)
    n = len(scores)
    wa, sa = weak.mean(), strong.mean()
    srt = np.sort(scores)
    curve = []
    for i in range(bins + 1):
        q = i / bins
        # quantile with linear interpolation, as metrics::quantile
        pos = q * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        t = srt[lo] + (srt[hi] - srt[lo]) * (pos - lo)
        to = scores >= t if i < bins else scores > t
        acc = np.where(to, strong, weak).mean()
        curve.append((to.mean(), acc))
    curve.sort()
    gap = sa - wa
    if gap <= 0:
        return None
    xs = np.array([c[0] for c in curve])
    ys = np.array([c[1] for c in curve])
    auc = np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2)
    span = xs[-1] - xs[0]
    apgr = (auc - wa * span) / (sa * span - wa * span) if span > 0 else 0.0

    def cpt(p):
        target = wa + p * gap
        if curve[0][1] >= target:
            return curve[0][0]
        for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
            if y0 < target <= y1:
                return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
        return curve[-1][0]

    return {"apgr": round(float(apgr), 4), "cpt50": round(float(cpt(0.5)), 4), "cpt80": round(float(cpt(0.8)), 4)}


def transfer_figures(score, outcome_sets, graded):
    """What the transfer scripts print for one candidate: APGR on each (name, rows) of
    `outcome_sets` and the Spearman correlation of the score with `graded` rows' level."""
    from scipy.stats import spearmanr

    out = []
    for name, rows in outcome_sets:
        r = routing(score(rows), [x["weak_correct"] for x in rows], [x["strong_correct"] for x in rows])
        out.append(f"{name} APGR {r['apgr']:.3f}")
    rho = spearmanr(score(graded), [x["level"] for x in graded]).statistic
    out.append(f"MATH rho {rho:.3f}")
    return out
