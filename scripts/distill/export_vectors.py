"""Exports the static word vectors for `crossroads train --word-vectors`: the words
(one key a line, `<out>.txt`) and their 384-d vectors (little-endian f32, `<out>.f32`).

The vocabulary keeps only words seen at least twice in the TRAIN split of the corpus
(the salted-hash protocol of src/classify/linear/data.rs) or listed whole in MiniLM's
vocab.txt: no word enters because it occurs in validation or test text.

    python3 scripts/distill/export_vectors.py [data/distill/words384]
"""
import sys
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "research"))
import word_vectors as wv  # noqa: E402
from common import split_of  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else wv.OUT / "words384")
keys = [line.split("\t", 1)[0] for line in open(wv.OUT / "words.tsv", encoding="utf-8") if not line.startswith("#")]
vecs = np.load(wv.OUT / "words_384.npy")
assert len(keys) == len(vecs), (len(keys), len(vecs))
counts = Counter()
for path in wv.CORPUS:
    import json

    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        if split_of(row["text"]) != "train":
            continue
        texts = [row["text"]] + (row.get("options") or [] if "mmlu_pro" in path.name else [])
        for t in texts:
            for s in wv.surface_words(t):
                counts[wv.key(s)] += 1
listed = set()
for line in open(wv.minilm.MODEL_DIR / "vocab.txt", encoding="utf-8"):
    w = line.rstrip("\n")
    if w.isascii() and w.isalnum():
        listed.add(wv.key(w.lower()))
keep = [i for i, k in enumerate(keys) if counts[k] >= 2 or k in listed]
with open(str(out) + ".txt", "w", encoding="utf-8") as f:
    for i in keep:
        f.write(keys[i] + "\n")
vecs[keep].astype("<f4").tofile(str(out) + ".f32")
print(f"{len(keep)} of {len(keys)} words kept (train-split count >= 2 or in vocab.txt) -> {out}.txt/.f32")
