"""Does the distilled word embedding help? Validation macro-F1 on mmlu_pro's 14 labels.

Split as src/classify/linear/data.rs `bucket`: FNV-1a 64 over the salt "xr-split" then
the text up to the first "\\nA. ", ASCII-alphanumeric bytes only, lower-cased; h % 100.
Buckets [0,10) are TEST and are skipped entirely (never read past the bucket test),
[10,20) validation, [20,100) train. All models fit on train only and see `text` only
(not the options), as the teacher sentence embeddings do.

    python3 scripts/distill/evaluate.py
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from word_vectors import surface_words, key  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data/distill"
MMLU = Path(__file__).resolve().parents[3] / "shared/data/domain/mmlu_pro.jsonl"
SALT = b"xr-split"


def bucket(text):
    i = text.find("\nA. ")
    stem = text if i < 0 else text[:i]
    h = 0xCBF29CE484222325
    for b in SALT + stem.encode("utf-8"):
        if (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122):
            h ^= b | 0x20 if b >= 65 else b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % 100


def rust_words(text):
    return [key(s) for s in surface_words(text)]


def load():
    rows, idx = [], []
    for i, line in enumerate(open(MMLU, encoding="utf-8")):
        r = json.loads(line)
        b = bucket(r["text"])
        if b < 10:
            continue  # test: skipped
        rows.append((r["text"], r["label"], "val" if b < 20 else "train"))
        idx.append(i)
    return rows, np.array(idx)


def load_words():
    path = DATA / "words.tsv"
    words, vecs = [], []
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            continue
        w, v = line.rstrip("\n").split("\t")
        words.append(w)
        vecs.append(np.array(v.split(" "), np.float32))
    return {w: i for i, w in enumerate(words)}, np.stack(vecs)


def fit_eval(name, Xtr, ytr, Xva, yva, labels, Cs=(1, 4, 16)):
    best = None
    scores = {}
    preds = {}
    for C in Cs:
        t = time.time()
        clf = LogisticRegression(C=C, max_iter=3000)
        clf.fit(Xtr, ytr)
        preds[C] = clf.predict(Xva)
        f1 = f1_score(yva, preds[C], labels=labels, average="macro")
        scores[C] = round(f1, 4)
        if best is None or f1 > best[0]:
            best = (f1, C)
    print(f"{name:58s} macro-F1 {best[0]:.4f} (C={best[1]}; all {scores})", flush=True)
    return best[0], best[1], preds[best[1]]


def bootstrap(name, yva, pa, pb, labels, n=1000, seed=0):
    """Paired bootstrap over validation rows of macro-F1(b) - macro-F1(a)."""
    rng = np.random.default_rng(seed)
    d = []
    for _ in range(n):
        i = rng.integers(0, len(yva), len(yva))
        d.append(f1_score(yva[i], pb[i], labels=labels, average="macro")
                 - f1_score(yva[i], pa[i], labels=labels, average="macro"))
    d = np.array(d)
    print(f"  bootstrap {name}: mean diff {d.mean():+.4f}, 95% [{np.percentile(d, 2.5):+.4f}, "
          f"{np.percentile(d, 97.5):+.4f}], P(diff<=0)={np.mean(d <= 0):.3f}", flush=True)


def main():
    rows, idx = load()
    texts = [r[0] for r in rows]
    y = np.array([r[1] for r in rows])
    tr = np.array([r[2] == "train" for r in rows])
    va = ~tr
    labels = sorted(set(y))
    print(f"train {tr.sum()}, validation {va.sum()} (test rows skipped), {len(labels)} labels")
    res = {}

    # (a) TF-IDF word 1-2 grams, sublinear tf, words as the Rust classifier splits them.
    tf = TfidfVectorizer(analyzer=lambda t: (lambda w: w + [a + " " + b for a, b in zip(w, w[1:])])(rust_words(t)),
                         sublinear_tf=True, min_df=1)
    A_tr = tf.fit_transform([t for t, m in zip(texts, tr) if m])
    A_va = tf.transform([t for t, m in zip(texts, va) if m])
    res["a"] = fit_eval("(a) tf-idf word 1-2g (ngrams.rs words)", A_tr, y[tr], A_va, y[va], labels)
    tf2 = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    B_tr = tf2.fit_transform([t for t, m in zip(texts, tr) if m])
    B_va = tf2.transform([t for t, m in zip(texts, va) if m])
    fit_eval("(a') tf-idf word 1-2g (sklearn default tokens)", B_tr, y[tr], B_va, y[va], labels)

    # (b) tf-idf weighted mean of static word vectors, L2 normalized.
    w2i, W = load_words()
    uni = TfidfVectorizer(analyzer=rust_words, sublinear_tf=True)
    U_tr = uni.fit_transform([t for t, m in zip(texts, tr) if m])
    U_va = uni.transform([t for t, m in zip(texts, va) if m])
    vocab = uni.get_feature_names_out()
    cover = np.array([w in w2i for w in vocab])
    # Words of the tf-idf vocabulary -> rows of W (zero row when missing).
    M = np.zeros((len(vocab), W.shape[1]), np.float32)
    for j, w in enumerate(vocab):
        if w in w2i:
            M[j] = W[w2i[w]]

    def pooled(U, M):
        X = np.asarray(U @ M)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)

    tok_cover = []
    for t in texts:
        ws = rust_words(t)
        tok_cover.append(sum(w in w2i for w in ws) / max(len(ws), 1))
    print(f"word-vector coverage: {cover.mean():.3f} of train word types, "
          f"{np.mean(tok_cover):.3f} of tokens (train+val)")
    S_tr, S_va = pooled(U_tr, M), pooled(U_va, M)
    Cd = (1, 4, 16, 64)
    res["b"] = fit_eval("(b) static word vectors 128-d, tf-idf mean, L2", S_tr, y[tr], S_va, y[va], labels, Cd)
    raw = DATA / "words_384.npy"
    if raw.exists():
        R = np.load(raw)
        M384 = np.zeros((len(vocab), 384), np.float32)
        for j, w in enumerate(vocab):
            if w in w2i:
                M384[j] = R[w2i[w]]
        P_tr, P_va = pooled(U_tr, M384), pooled(U_va, M384)
        res["b384"] = fit_eval("(b') same, raw 384-d (before PCA)", P_tr, y[tr], P_va, y[va], labels, Cd)
        Mn = M384 / np.maximum(np.linalg.norm(M384, axis=1, keepdims=True), 1e-12)
        fit_eval("(b'') 384-d, each word vector L2-normalized first", pooled(U_tr, Mn), y[tr], pooled(U_va, Mn), y[va], labels, Cd)

    # (c) teacher: full MiniLM sentence embeddings (text truncated to 128 tokens).
    sent = DATA / "sentences_mmlu_pro.npy"
    if sent.exists():
        E = np.load(sent)[idx]
        res["c"] = fit_eval("(c) MiniLM sentence embeddings (teacher, 384-d)", E[tr], y[tr], E[va], y[va], labels, Cd)
    else:
        print("(c) skipped: sentences_mmlu_pro.npy not written yet")

    # (d) concat of (a) and (b); the dense block scaled by alpha (chosen on validation).
    for alpha in (1.0, 2.0):
        D_tr = sp.hstack([A_tr, sp.csr_matrix(alpha * S_tr)]).tocsr()
        D_va = sp.hstack([A_va, sp.csr_matrix(alpha * S_va)]).tocsr()
        res[f"d{alpha}"] = fit_eval(f"(d) concat (a) + {alpha:g} x (b)", D_tr, y[tr], D_va, y[va], labels)
    bootstrap("(d) alpha=1 minus (a)", y[va], res["a"][2], res["d1.0"][2], labels)
    if raw.exists():
        D_tr = sp.hstack([A_tr, sp.csr_matrix(P_tr)]).tocsr()
        D_va = sp.hstack([A_va, sp.csr_matrix(P_va)]).tocsr()
        res["d384"] = fit_eval("(d') concat (a) + (b') 384-d", D_tr, y[tr], D_va, y[va], labels)
        bootstrap("(d') minus (a)", y[va], res["a"][2], res["d384"][2], labels)
    if sent.exists():
        D_tr = sp.hstack([A_tr, sp.csr_matrix(E[tr])]).tocsr()
        D_va = sp.hstack([A_va, sp.csr_matrix(E[va])]).tocsr()
        res["e"] = fit_eval("(e) concat (a) + (c) (teacher at runtime)", D_tr, y[tr], D_va, y[va], labels)
        bootstrap("(c) minus (a)", y[va], res["a"][2], res["c"][2], labels)


if __name__ == "__main__":
    main()
