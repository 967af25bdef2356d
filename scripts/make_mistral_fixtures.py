#!/usr/bin/env python3
"""Mistral parity fixtures from Hugging Face ``transformers`` (and ``peft``) for tests/test_mistral_fixtures.cpp.

    /path/to/venv/bin/python scripts/make_mistral_fixtures.py [--out tests/fixtures]

needs torch, transformers (written with 5.24) and peft (0.21). Each case builds a random ``MistralForCausalLM``
(hidden 32, 4 query heads of 8 over 2 KV heads (GQA), intermediate 48, 2 layers, vocabulary 29, sliding_window 5
on sequences of 16: the window is SMALLER than the sequence, so it masks; every tensor perturbed away from HF's init
so each one matters), runs it in float64 with eager attention on fixed tokens, and writes
``<out>/mistral_<case>.safetensors`` in the layout of scripts/make_neox_fixtures.py:

  * metadata ``config``: the config.json transformers writes for the model (our loader parses it as a folder's);
    metadata ``case``: {lora_rank, lora_alpha, lora_targets, trainable, attention, s2_group_size};
  * every parameter under its Hugging Face name (LoRA A/B under PEFT's names without ".default"), ``input_ids`` and
    ``targets`` int32 [B, L], ``logits`` [B, L, V], ``loss`` [1] (mean cross-entropy of ``targets``; no shift), and
    ``grad/<name>`` for every parameter that trains — float32 (the float64 results rounded).

transformers' Mistral upcasts to float32 inside RMSNorm and the eager softmax, and computes the RoPE angles in float32,
whatever the model's dtype; ``exact_float64`` swaps in the same three formulas evaluated in the model's dtype (the
attention keeps transformers' own mask), so the float64 run is exact (~3e-7 of float32 noise otherwise, more than the
2e-7 the float64 test allows). In float32 they are identical to transformers'.

Cases:
  window_full   sliding window 5, every parameter trains (transformers' own sliding-window mask);
  window_lora   the same model shape, ``peft`` LoRA r 4 / alpha 8 on q_proj, k_proj, v_proj, o_proj (B drawn at random)
                plus LongLoRA's ``embed,norm`` substring rule;
  s2_window     LoRA + embed,norm as above, trained with S2-Attn (leak-free, G = L/4 = 4) composed with the window 3:
                query i of head h attends key j iff j <= i, j > i - W, and i, j lie in one of the head's segments
                (heads [H/2, H) shifted by G/2) — core/attention_mask.h's rule, plugged into transformers' attention
                interface so the rest of the layer (GQA included) is transformers' own.

The window_full model is also saved as ``<out>/mistral_tiny/`` (save_pretrained), which MistralFolder.* reads.

Interop: OUR writers checked with transformers + peft (rerun whenever the adapter or merge writers change)
---------------------------------------------------------------------------------------------------------
    make -j2 build/test_all
    LL_MISTRAL_INTEROP_DIR=/tmp/mistral_interop build/test_all --gtest_filter='MistralInterop.*'
    python scripts/make_mistral_fixtures.py --check-ours /tmp/mistral_interop --record

MistralInterop writes, from mistral_tiny: ``adapter/`` (our save_adapter: LoRA r 4 / alpha 8 on q,k,v,o_proj,
embed_tokens and every RMSNorm trained), ``merged/`` (build/merge's pipeline) and our logits of both. The check:
(1) peft loads the adapter onto MistralForCausalLM (eager attention, so the window 5 applies) with exactly our tensors
and gives our logits; (2) transformers loads merged/ (sliding_window 5 in its config.json) and gives our logits.
Each run is recorded in ``<out>/mistral_interop.json`` under its transformers / peft versions with the sha256 of every
file written; MistralInterop.MatchesRecordedCheck requires every run passed and the same bytes.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

DIMS = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48, num_hidden_layers=2,
            vocab_size=29, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0, hidden_act="silu",
            tie_word_embeddings=False, attention_dropout=0.0)
BATCH, SEQ = 2, 16
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
TRAINABLE = ["embed", "norm"]


def case(window, lora, attention="full"):
    return dict(window=window, lora=lora, attention=attention)


CASES = {
    "window_full": case(5, False),
    "window_lora": case(5, True),
    "s2_window": case(3, True, "s2"),
}
FOLDER_CASE = "window_full"


def s2_window_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Leak-free S2 (G = L/4, heads [H/2, H) shifted by G/2) intersected with the sliding window, q [B, H, L, hd],
    k and v [B, Hkv, L, hd] (RoPE applied); returns [B, L, H, hd] as transformers' attention functions do."""
    bsz, nh, q_len, hd = query.shape
    rep = nh // key.shape[1]
    k = key.repeat_interleave(rep, dim=1)
    v = value.repeat_interleave(rep, dim=1)
    group, window = q_len // 4, module.config.sliding_window or q_len
    pos = torch.arange(q_len)
    allowed = torch.zeros(nh, q_len, q_len, dtype=torch.bool)
    for h in range(nh):
        shift = group // 2 if h >= nh // 2 else 0
        seg = torch.where(pos < shift, torch.zeros_like(pos), (pos - shift) // group + 1) if shift else pos // group
        allowed[h] = (seg[:, None] == seg[None, :]) & (pos[None, :] <= pos[:, None]) & \
                     (pos[None, :] > pos[:, None] - window)
    scores = torch.matmul(query, k.transpose(2, 3)) * scaling
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out.transpose(1, 2).contiguous(), None


def exact_float64():
    """RMSNorm and the rotary embedding of transformers' Mistral, without their float32 upcasts (see the docstring)."""
    from transformers.models.mistral import modeling_mistral as mm

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rotary(self, x, position_ids):
        dim = self.inv_freq.shape[0] * 2
        theta = self.config.rope_parameters["rope_theta"]
        inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].double() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)

    def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        # transformers' eager attention with ITS mask (the sliding window's), the softmax in the model's dtype
        k = mm.repeat_kv(key, module.num_key_value_groups)
        v = mm.repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        weights = torch.softmax(scores, dim=-1)
        return torch.matmul(weights, v).transpose(1, 2).contiguous(), weights

    mm.MistralRMSNorm.forward = rms_norm
    mm.MistralRotaryEmbedding.forward = rotary
    mm.eager_attention_forward = eager_attention


def build(c, seed):
    from transformers import MistralConfig, MistralForCausalLM
    torch.manual_seed(seed)
    config = MistralConfig(**DIMS, sliding_window=c["window"])
    model = MistralForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def ours(name):
    """PEFT's in-memory parameter name -> the file name (ours)."""
    return name.replace("base_model.model.", "").replace(".base_layer.", ".").replace(".default.weight", ".weight")


def run(name, c, seed, out):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface

    model = build(c, seed)
    config_json = model.config.to_json_string()
    if name == FOLDER_CASE:
        folder = os.path.join(out, "mistral_tiny")
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True)
    torch.manual_seed(seed + 1)
    ids = torch.randint(0, DIMS["vocab_size"], (BATCH, SEQ), dtype=torch.int32)
    targets = torch.randint(0, DIMS["vocab_size"], (BATCH, SEQ), dtype=torch.int32)

    if c["attention"] == "s2":
        AttentionInterface.register("longlora_s2_window", s2_window_attention)
        model.config._attn_implementation = "longlora_s2_window"
    else:
        model.config._attn_implementation = "eager"
    model = model.double()
    # Guard: the window really masks (the same weights without it give other logits).
    with torch.no_grad():
        windowed = model(input_ids=ids.long()).logits
        model.config.sliding_window = None
        full = model(input_ids=ids.long()).logits
        model.config.sliding_window = c["window"]
    assert (windowed - full).norm() > 1e-2 * full.norm(), "the sliding window did not change the logits"
    if c["lora"]:
        model = get_peft_model(model, LoraConfig(lora_dropout=0.0, bias="none", **LORA))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".lora_B." in n:
                    p.copy_(0.2 * torch.randn_like(p))
                p.requires_grad_(".lora_" in n or any(t in ours(n) for t in TRAINABLE))
                p.copy_(p.float().double())  # run with exactly the float32 values the fixture stores (LoRA A, B)
    model.train()

    logits = model(input_ids=ids.long()).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())
    loss.backward()

    tensors = {"input_ids": ids.contiguous(), "targets": targets.contiguous(),
               "logits": logits.detach().float().contiguous(), "loss": loss.detach().reshape(1).float()}
    trainable = []
    for n, p in model.named_parameters():
        tensors[ours(n)] = p.detach().float().contiguous()
        if p.requires_grad:
            tensors["grad/" + ours(n)] = p.grad.float().contiguous()
            trainable.append(ours(n))
    meta = {"lora_rank": LORA["r"] if c["lora"] else 0, "lora_alpha": LORA["lora_alpha"],
            "lora_targets": LORA["target_modules"] if c["lora"] else [],
            "trainable": TRAINABLE if c["lora"] else ["all"], "attention": c["attention"],
            "s2_group_size": SEQ // 4}
    path = os.path.join(out, f"mistral_{name}.safetensors")
    save_file(tensors, path, metadata={"config": config_json, "case": json.dumps(meta),
                                       "transformers_version": transformers.__version__})
    print(f"{path}: loss {loss.item():.6f}, {len(trainable)} trainable tensors, logits std {logits.std():.3f}")


def rel_err(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_mistral(path):
    from transformers import MistralForCausalLM
    import transformers
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return MistralForCausalLM.from_pretrained(path, attn_implementation="eager", **{dtype_key: torch.float32}).eval()


def check_ours(out, ours):
    """transformers + peft on what MistralInterop wrote into `ours`."""
    import peft
    import transformers
    from peft import PeftModel

    tiny = os.path.join(out, "mistral_tiny")
    adapter, merged = os.path.join(ours, "adapter"), os.path.join(ours, "merged")
    mine = load_file(os.path.join(ours, "ours_logits.safetensors"))
    ids = mine["input_ids"].long()
    lora_logits = mine["lora_logits"].reshape(*ids.shape, -1)
    merged_logits = mine["merged_logits"].reshape(*ids.shape, -1)
    errors = {}
    pm = PeftModel.from_pretrained(load_mistral(tiny), adapter).eval()
    assert pm.config.sliding_window == 5, pm.config
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    state = peft.get_peft_model_state_dict(pm)
    missing = sorted(set(saved) - set(state))
    assert not missing, f"peft did not load {missing} (it holds {sorted(state)})"
    for k, v in saved.items():
        assert torch.equal(state[k].float(), v.float()), f"peft loaded {k} with other values"
    with torch.no_grad():
        errors["peft_vs_ours_lora"] = rel_err(pm(input_ids=ids).logits.float(), lora_logits)
    mm = load_mistral(merged)
    assert mm.config.sliding_window == 5 and mm.config.num_key_value_heads == 2, mm.config
    with torch.no_grad():
        got = mm(input_ids=ids).logits.float()
    errors["merged_vs_ours_merged"] = rel_err(got, merged_logits)
    errors["merged_vs_ours_lora"] = rel_err(got, lora_logits)
    files = {}
    for sub in ("adapter", "merged"):
        for name in sorted(os.listdir(os.path.join(ours, sub))):
            files[f"{sub}/{name}"] = sha256(os.path.join(ours, sub, name))
    worst = max(errors.values())
    record = {"passed": worst <= 1e-4, "max_rel_err": worst, "tolerance": 1e-4, "checks": errors,
              "transformers_version": transformers.__version__, "peft_version": peft.__version__,
              "torch_version": torch.__version__, "files": files}
    print(json.dumps(record, indent=2, sort_keys=True))
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--check-ours", metavar="DIR", help="check the folders MistralInterop wrote into DIR")
    ap.add_argument("--record", action="store_true", help="with --check-ours: write <out>/mistral_interop.json")
    args = ap.parse_args()
    if args.check_ours:
        record = check_ours(args.out, args.check_ours)
        if args.record:  # one entry per transformers / peft pair, kept across runs with other versions
            path = os.path.join(args.out, "mistral_interop.json")
            runs = json.load(open(path))["runs"] if os.path.exists(path) else {}
            runs[f"transformers {record['transformers_version']} / peft {record['peft_version']}"] = record
            with open(path, "w") as f:
                json.dump({"runs": runs}, f, indent=2, sort_keys=True)
                f.write("\n")
        sys.exit(0 if record["passed"] else 1)
    exact_float64()
    for i, (name, c) in enumerate(CASES.items()):
        run(name, c, 201 + 10 * i, args.out)


if __name__ == "__main__":
    main()
