#!/usr/bin/env python3
"""StreamingLLM reference for tests/test_streaming_llm.cpp (StreamingLlmReference.*).

    /tmp/h13venv/bin/python scripts/make_streaming_fixture.py [--out tests/fixtures]

An independent numpy port of streaming-llm's cache policy (mit-han-lab/streaming-llm, which LongLoRA's
run_streaming_llama_longalpaca.py vendors) on the committed tiny random Llama tests/fixtures/hf_tiny (GQA, linear
RoPE factor 2), float64:
  * StartRecentKVCache: keep the first start_size and the last recent_size positions; evict_for_space(n) before a
    turn of n tokens keeps start_size + the last recent_size - n;
  * pos-shift attention (streaming_llm/pos_shift/modify_llama.py): keys are cached BEFORE RoPE and rotated at every
    step by their index in the cache (0..kv_len-1); queries by past_len + i;
  * run_streaming_llama.py's loop: per turn evict_for_space(prompt_len + max_gen_len), one forward over the turn's
    ids, then greedy decoding of up to max_gen_len tokens, the last one (and EOS) never fed.
The port is first checked against transformers' logits of hf_tiny (hf_tiny_logits.safetensors, max error 1e-6).
Writes <out>/streaming_reference.json: scenario `turns` (several turns far past the window) with every step's
logits and the greedy tokens, and scenario `long_generation` (one prompt, more tokens than the window: our
extension evicts for one token before each decode step, evict_for_space(1)).
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import load_file


def load_tiny(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    w = {}
    for shard in sorted(set(index["weight_map"].values())):
        w.update({k: v.astype(np.float64) for k, v in load_file(os.path.join(folder, shard)).items()})
    scaling = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    cfg["factor"] = float(scaling.get("factor", 1.0))
    cfg["theta"] = float(scaling.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    return cfg, w


class TinyLlama:
    def __init__(self, cfg, w):
        self.c, self.w = cfg, w
        self.H, self.Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.D = cfg.get("head_dim") or cfg["hidden_size"] // self.H
        self.inv_freq = 1.0 / (self.c["theta"] ** (np.arange(0, self.D, 2) / self.D))

    def rope(self, x, pos):  # x [T, heads, D]; transformers' rotate_half convention, linear interpolation
        ang = np.outer(np.asarray(pos, np.float64) / self.c["factor"], self.inv_freq)
        cos, sin = np.cos(np.concatenate([ang, ang], -1))[:, None], np.sin(np.concatenate([ang, ang], -1))[:, None]
        half = self.D // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def norm(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.c["rms_norm_eps"]) * self.w[name]

    def forward(self, ids, past):
        """ids: new tokens; past: per layer (k_pre_rope [T, Hkv, D], v). Returns logits [n, V], new past."""
        w, n = self.w, len(ids)
        x = w["model.embed_tokens.weight"][ids]
        new_past = []
        for l in range(self.c["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = self.norm(x, p + "input_layernorm.weight")
            q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(n, self.H, self.D)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(n, self.Hkv, self.D)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(n, self.Hkv, self.D)
            pk, pv = past[l] if past else (np.zeros((0, self.Hkv, self.D)), np.zeros((0, self.Hkv, self.D)))
            k_all, v_all = np.concatenate([pk, k]), np.concatenate([pv, v])
            new_past.append((k_all, v_all))  # keys cached before RoPE
            past_len, kv_len = len(pk), len(k_all)
            qr = self.rope(q, past_len + np.arange(n))
            kr = self.rope(k_all, np.arange(kv_len))  # pos-shift: rotated by their index in the cache
            group = self.H // self.Hkv
            out = np.zeros((n, self.H, self.D))
            mask = np.arange(kv_len)[None, :] <= (past_len + np.arange(n))[:, None]
            for hh in range(self.H):
                s = qr[:, hh] @ kr[:, hh // group].T / np.sqrt(self.D)
                s = np.where(mask, s, -np.inf)
                s = np.exp(s - s.max(-1, keepdims=True))
                out[:, hh] = (s / s.sum(-1, keepdims=True)) @ v_all[:, hh // group]
            x = x + out.reshape(n, -1) @ w[p + "self_attn.o_proj.weight"].T
            h = self.norm(x, p + "post_attention_layernorm.weight")
            g = h @ w[p + "mlp.gate_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        logits = self.norm(x, "model.norm.weight") @ w["lm_head.weight"].T
        return logits, new_past


class StartRecentKVCache:  # streaming-llm's kv_cache.py, on the sequence axis 0
    def __init__(self, start_size, recent_size):
        self.start_size, self.recent_size = start_size, recent_size
        self.cache_size = start_size + recent_size

    def evict_for_space(self, past, num_coming):
        if past is None:
            return None
        seq_len = len(past[0][0])
        if seq_len + num_coming <= self.cache_size:
            return past
        keep = lambda t: np.concatenate([t[:self.start_size], t[seq_len - self.recent_size + num_coming:]])
        return [(keep(k), keep(v)) for k, v in past]


def greedy_generate(model, ids, past, max_gen_len, eos, per_step_cache=None):
    logits, past = model.forward(ids, past)
    steps, tokens = [logits[-1]], [int(logits[-1].argmax())]
    assert tokens[0] != eos, "streaming-llm does not stop at a first EOS; pick another seed"
    for _ in range(max_gen_len - 1):
        if per_step_cache:
            past = per_step_cache.evict_for_space(past, 1)
        logits, past = model.forward([tokens[-1]], past)
        steps.append(logits[-1])
        tokens.append(int(logits[-1].argmax()))
        if tokens[-1] == eos:
            break
    return tokens, steps, past


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    cfg, w = load_tiny(os.path.join(args.out, "hf_tiny"))
    model, eos, bos, vocab = TinyLlama(cfg, w), cfg["eos_token_id"], cfg["bos_token_id"], cfg["vocab_size"]
    # The port itself against transformers' logits of the same folder (make_hf_fixtures.py).
    ref = load_file(os.path.join(args.out, "hf_tiny_logits.safetensors"))
    for ids, want in zip(ref["input_ids"], ref["logits"]):
        got = model.forward([int(i) for i in ids], None)[0]
        assert np.abs(got - want).max() < 1e-4 * np.abs(want).max(), np.abs(got - want).max()
    rng = np.random.default_rng(2024)
    out = {"model": "hf_tiny", "eos_token_id": eos}

    start, recent, max_gen = 4, 20, 10
    kv, past, turns = StartRecentKVCache(start, recent), None, []
    for t in range(6):
        ids = [bos] + [int(i) for i in rng.integers(3, vocab, size=5 + t % 4)]
        past = kv.evict_for_space(past, len(ids) + max_gen)
        tokens, steps, past = greedy_generate(model, ids, past, max_gen, eos)
        turns.append({"ids": ids, "tokens": tokens, "logits": [s.tolist() for s in steps], "cached_after": len(past[0][0])})
    fed = sum(len(t["ids"]) + len(t["tokens"]) - 1 for t in turns)
    assert fed > 2 * (start + recent), fed
    out["turns"] = {"start_size": start, "recent_size": recent, "max_gen_len": max_gen, "turns": turns}

    start, recent, max_gen = 4, 12, 40
    kv = StartRecentKVCache(start, recent)
    for _ in range(100):  # a prompt whose answer runs well past the window before any EOS
        ids = [bos] + [int(i) for i in rng.integers(3, vocab, size=7)]
        tokens, steps, _ = greedy_generate(model, ids, None, max_gen, eos, per_step_cache=kv)
        if len(ids) + len(tokens) > start + recent + 10:
            break
    assert len(ids) + len(tokens) > start + recent + 10, len(tokens)
    out["long_generation"] = {"start_size": start, "recent_size": recent, "max_gen_len": max_gen, "ids": ids,
                              "tokens": tokens, "logits": [s.tolist() for s in steps]}
    path = os.path.join(args.out, "streaming_reference.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: turns {[len(t['tokens']) for t in turns]}, fed {fed}; long generation {len(tokens)} tokens")


if __name__ == "__main__":
    main()
