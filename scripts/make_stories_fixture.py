#!/usr/bin/env python3
"""Golden logits for the real trained checkpoint ../shared/assets/stories260K.bin (llama2.c legacy format).

What it produces
----------------
``tests/fixtures/stories260K_logits.safetensors`` with
  * ``input_ids`` int32 [B, L] (B=2, L=48): token 1 (BOS) then ids drawn uniformly from [0, 512) with a fixed seed;
  * ``logits`` float32 [B, L, 512]: the model's logits at every position;
  * metadata ``asset_md5`` (md5 of the .bin the logits came from).
The checkpoint itself is NOT copied into the project: tests/test_llama2c.cpp reads it from the shared assets
directory, checks its md5 against ``asset_md5``, imports it with src/io/llama2c.cpp and compares.

The math
--------
This is llama2.c's own forward (run.c), written independently of the engine, in float64 on the file's float32
weights, on the ORIGINAL Meta layout: RoPE rotates adjacent pairs (2j, 2j+1) of each head by
pos * 10000^(-2j/head_dim) -- no q/k row permutation anywhere. RMSNorm with eps 1e-5 (x * rsqrt(mean(x^2) + eps) * w),
causal attention with GQA (query head h reads KV head h // (n_heads / n_kv_heads)), scale 1/sqrt(head_dim), SwiGLU
FFN w2(silu(w1 x) * w3 x), final RMSNorm, classifier = token embedding when vocab_size > 0 (shared). The batched
PyTorch version is cross-checked against a literal per-token, per-head transliteration of run.c's forward() loop
(numpy, KV cache and all) before anything is written.

How to run
----------
    python3 scripts/make_stories_fixture.py [--asset ../shared/assets/stories260K.bin] [--out tests/fixtures]

Run by hand, from the repository root, when the fixture needs regenerating; reruns give byte-identical output.
Needs numpy, torch and safetensors (pip). Not run at test time.
"""

import argparse
import hashlib
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

F64 = torch.float64
BATCH, LENGTH, SEED = 2, 48, 260


def read_checkpoint(path):
    """Header and fp32 tensors of a llama2.c legacy checkpoint, in the file's (Meta) layout."""
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = np.frombuffer(raw[:28], dtype="<i4").tolist()
    shared = vocab > 0
    vocab = abs(vocab)
    head = dim // n_heads
    kv_dim = n_kv_heads * head
    data = np.frombuffer(raw[28:], dtype="<f4")
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = data[pos:pos + n].reshape(shape).astype(np.float64)
        pos += n
        return out

    w = dict(
        emb=take(vocab, dim), rms_att=take(n_layers, dim), wq=take(n_layers, dim, dim),
        wk=take(n_layers, kv_dim, dim), wv=take(n_layers, kv_dim, dim), wo=take(n_layers, dim, dim),
        rms_ffn=take(n_layers, dim), w1=take(n_layers, hidden, dim), w2=take(n_layers, dim, hidden),
        w3=take(n_layers, hidden, dim), rms_final=take(dim))
    take(seq_len * head // 2)  # freq_cis_real (unused)
    take(seq_len * head // 2)  # freq_cis_imag (unused)
    w["wcls"] = w["emb"] if shared else take(vocab, dim)
    assert pos == data.size, f"{path}: {data.size - pos} floats left over"
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab=vocab,
               seq_len=seq_len, shared=shared)
    return cfg, w


def rmsnorm(x, weight):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * weight


def rope_interleaved(x, head):
    """x [B, L, nh, head]: rotate pairs (2j, 2j+1) by pos * 10000^(-2j/head) (run.c)."""
    L = x.shape[1]
    freq = 1.0 / (10000.0 ** (torch.arange(0, head, 2, dtype=F64) / head))  # [head/2]
    ang = torch.arange(L, dtype=F64)[:, None] * freq[None, :]  # [L, head/2]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def forward_torch(cfg, w, ids):
    """Batched float64 forward; ids [B, L] -> logits [B, L, V]."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    B, L = ids.shape
    H, Hkv, D = cfg["n_heads"], cfg["n_kv_heads"], cfg["dim"]
    head = D // H
    x = t["emb"][torch.from_numpy(ids).long()]
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for l in range(cfg["n_layers"]):
        xb = rmsnorm(x, t["rms_att"][l])
        q = (xb @ t["wq"][l].T).view(B, L, H, head)
        k = (xb @ t["wk"][l].T).view(B, L, Hkv, head)
        v = (xb @ t["wv"][l].T).view(B, L, Hkv, head)
        q, k = rope_interleaved(q, head), rope_interleaved(k, head)
        rep = H // Hkv
        k = k.repeat_interleave(rep, dim=2)  # query head h uses KV head h // rep
        v = v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bihd,bjhd->bhij", q, k) / head ** 0.5
        s = s.masked_fill(~causal, float("-inf"))
        o = torch.einsum("bhij,bjhd->bihd", torch.softmax(s, dim=-1), v).reshape(B, L, D)
        x = x + o @ t["wo"][l].T
        xb = rmsnorm(x, t["rms_ffn"][l])
        g, u = xb @ t["w1"][l].T, xb @ t["w3"][l].T
        x = x + (torch.nn.functional.silu(g) * u) @ t["w2"][l].T
    return rmsnorm(x, t["rms_final"]) @ t["wcls"].T


def forward_runc(cfg, w, tokens):
    """Literal transliteration of run.c's forward(), one token at a time, with its KV cache (float64 numpy)."""
    D, H, Hkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    head, kv_dim, kv_mul = D // H, Hkv * (D // H), H // Hkv
    key_cache = np.zeros((cfg["n_layers"], len(tokens), kv_dim))
    value_cache = np.zeros_like(key_cache)

    def rms(x, weight):
        ss = np.sum(x * x) / x.size + 1e-5
        return weight * (x / np.sqrt(ss))

    out = []
    for pos, token in enumerate(tokens):
        x = w["emb"][token].copy()
        for l in range(cfg["n_layers"]):
            xb = rms(x, w["rms_att"][l])
            q, k, v = w["wq"][l] @ xb, w["wk"][l] @ xb, w["wv"][l] @ xb
            for i in range(0, D, 2):
                val = pos * (1.0 / 10000.0 ** ((i % head) / head))
                fcr, fci = np.cos(val), np.sin(val)
                for vec in ([q, k] if i < kv_dim else [q]):
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = v0 * fcr - v1 * fci, v0 * fci + v1 * fcr
            key_cache[l, pos], value_cache[l, pos] = k, v
            xb = np.zeros(D)
            for h in range(H):
                qh = q[h * head:(h + 1) * head]
                kvh = (h // kv_mul) * head
                att = np.array([qh @ key_cache[l, t, kvh:kvh + head] / np.sqrt(head) for t in range(pos + 1)])
                att = np.exp(att - att.max())
                att /= att.sum()
                xb[h * head:(h + 1) * head] = att @ value_cache[l, :pos + 1, kvh:kvh + head]
            x = x + w["wo"][l] @ xb
            xb = rms(x, w["rms_ffn"][l])
            hb, hb2 = w["w1"][l] @ xb, w["w3"][l] @ xb
            hb = hb * (1.0 / (1.0 + np.exp(-hb))) * hb2
            x = x + w["w2"][l] @ hb
        out.append(w["wcls"] @ rms(x, w["rms_final"]))
    return np.stack(out)


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--asset", default=os.path.join(repo, "..", "shared", "assets", "stories260K.bin"))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "fixtures"))
    args = ap.parse_args()

    md5 = hashlib.md5(open(args.asset, "rb").read()).hexdigest()
    cfg, w = read_checkpoint(args.asset)
    print(f"{args.asset}: md5 {md5}, {cfg}")

    rng = np.random.default_rng(SEED)
    ids = rng.integers(0, cfg["vocab"], size=(BATCH, LENGTH)).astype(np.int32)
    ids[:, 0] = 1  # BOS
    logits = forward_torch(cfg, w, ids)
    for b in range(BATCH):
        ref = forward_runc(cfg, w, ids[b].tolist())
        err = np.abs(ref - logits[b].numpy()).max()
        print(f"sequence {b}: max |batched - run.c loop| = {err:.3e}")
        if err > 1e-9:
            sys.exit(f"the batched forward disagrees with the run.c transliteration ({err})")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "stories260K_logits.safetensors")
    save_file({"input_ids": torch.from_numpy(ids).contiguous(), "logits": logits.to(torch.float32).contiguous()}, path,
              metadata={"asset_md5": md5})  # one key: safetensors orders metadata keys randomly
    print(f"wrote {path}: input_ids {tuple(ids.shape)}, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
