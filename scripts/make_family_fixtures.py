#!/usr/bin/env python3
"""Llama-3.x and Qwen2 parity fixtures from Hugging Face ``transformers`` (and ``peft``) for
tests/test_family_fixtures.cpp.

    /path/to/venv/bin/python scripts/make_family_fixtures.py [--out tests/fixtures]

needs torch, transformers (written with 5.24) and peft (0.21). Each case builds a random ``LlamaForCausalLM`` or
``Qwen2ForCausalLM`` (hidden 32, 4 query heads of 8 sharing 2 KV heads (GQA), intermediate 48, 2 layers,
vocabulary 61; every tensor perturbed away from HF's init so each one matters), runs it in float64 with eager
attention on fixed tokens, and writes ``<out>/family_<case>.safetensors`` in the layout of make_neox_fixtures.py:

  * metadata ``config``: the config.json transformers writes for the model as the test builds it (our loader parses
    it); ``case``: {lora_rank, lora_alpha, lora_targets, trainable, attention, s2_group_size, rope_scaling_factor};
    ``ran_config``: the config transformers computed with (differs from ``config`` only when LongLoRA's factor is
    composed on top: see below);
  * every parameter under its Hugging Face name (LoRA A/B under PEFT's names without ".default"), ``input_ids`` and
    ``targets`` int32 [B, L], ``logits`` [B, L, V], ``loss`` [1] (mean cross-entropy of ``targets``, no shift),
    ``grad/<name>`` for every parameter that trains, and ``inv_freq`` (the model's rotary_emb.inv_freq buffer).

Cases:
  llama3_full      Llama-3.2-like: tied embeddings, rope_scaling {rope_type llama3, factor 4, low_freq_factor 1,
                   high_freq_factor 4, original_max_position_embeddings 64} with rope_theta 100 so that the 4
                   frequencies of an 8-dim head fall in all three of the llama3 rule's bands; every parameter trains.
  llama3_pi2_lora  LongLoRA's position interpolation (factor 2) on top of a llama3 config of factor 2: ``config`` is
                   the base (llama3 factor 2), ``case.rope_scaling_factor`` 2, and transformers ran the COMPOSED
                   config (llama3 factor 2 × 2 = 4, the rule of docs/architecture.md); peft LoRA r 4 / alpha 8 on
                   q,k,v,o_proj plus LongLoRA's embed,norm substring rule; untied.
  qwen2_full       Qwen2: q/k/v biases, tied embeddings, rope_theta 1e6; every parameter trains.
  qwen2_lora       Qwen2, untied; LoRA on the biased q,k,v_proj and o_proj (the biases stay frozen) plus embed,norm.
  qwen2_s2_roll    Qwen2 with LongLoRA's S2-Attn training forward (llama_attn_replace.py, roll variant) under GQA:
                   k and v repeated to the query heads, heads [nh/2, nh) of q, k, v rolled by -G/2, causal attention
                   per group of G = L/4, the output's heads rolled back; LoRA + embed,norm.

Also ``llama31_8b_inv_freq`` in family_llama3_full: the inverse frequencies transformers computes for Llama-3.1-8B's
config (rope_theta 500000, head 128, llama3 factor 8, 1, 4, 8192).

Folders (save_pretrained, sharded, transformers 5's config.json): ``<out>/llama3_tiny/`` (llama3_pi2_lora's weights
with its BASE config, llama3 factor 2) and ``<out>/qwen2_tiny/`` (qwen2_full's model: tied, q/k/v biases), the bases of
the interop check.

Interop: OUR writers checked with transformers + peft (rerun whenever the adapter or merge writers change)
---------------------------------------------------------------------------------------------------------
    make -j2 build/test_all
    LL_FAMILY_INTEROP_DIR=/tmp/family_interop build/test_all --gtest_filter='FamilyInterop.*'
    python scripts/make_family_fixtures.py --check-ours /tmp/family_interop --record

FamilyInterop writes, per family (llama3, qwen2), from its tiny folder: ``adapter/`` (our save_adapter: LoRA r 4 /
alpha 8 on q,k,v,o_proj, embed_tokens and every RMSNorm trained, trained with LongLoRA's factor 2 recorded in
longlora.json), ``merged/`` (build/merge's pipeline) and our logits of both. The check: (1) peft loads the adapter
onto the base model given the config the training ran (linear factor 2 for qwen2; for llama3 the COMPOSED config,
llama3 factor 2 × 2) with exactly our tensors and gives our logits; (2) transformers loads merged/ as written (its
config.json must carry that composed RoPE) and gives our logits. Each run is recorded in
``<out>/family_interop.json`` under its transformers / peft versions with the sha256 of every file written;
FamilyInterop.MatchesRecordedCheck requires every run passed and the same bytes.
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
            vocab_size=61, max_position_embeddings=256, rms_norm_eps=1e-6, hidden_act="silu", attention_dropout=0.0)
BATCH, SEQ = 2, 32
FOLDERS = {"llama3_pi2_lora": "llama3_tiny", "qwen2_full": "qwen2_tiny"}  # fixture case -> base folder it also saves
TRAIN_ROPE_FACTOR = 2.0  # LongLoRA's factor FamilyInterop trains with (tests/test_family_fixtures.cpp)
TOL = 1e-4
LLAMA3 = dict(rope_type="llama3", low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64)
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
TRAINABLE = ["embed", "norm"]


def case(family, tied, lora, theta, llama3_factor=None, pi=1.0, attention="full"):
    return dict(family=family, tied=tied, lora=lora, theta=theta, llama3_factor=llama3_factor, pi=pi,
                attention=attention)


CASES = {
    "llama3_full": case("llama", True, False, 100.0, llama3_factor=4.0),
    "llama3_pi2_lora": case("llama", False, True, 100.0, llama3_factor=2.0, pi=2.0),
    "qwen2_full": case("qwen2", True, False, 1e6),
    "qwen2_lora": case("qwen2", False, True, 1e6),
    "qwen2_s2_roll": case("qwen2", False, True, 1e6, attention="s2_roll"),
}


def s2_roll_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """LongLoRA's shift / per-group causal attention / shift back on q [B, nh, L, hd], k, v [B, nkv, L, hd]."""
    bsz, nh, q_len, hd = query.shape
    rep = nh // key.shape[1]
    key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)  # transformers' repeat_kv
    group = q_len // 4
    num_group = q_len // group

    def shift(x):  # [B, nh, L, hd] -> [B·groups, nh, G, hd]
        x = x.transpose(1, 2).clone()
        x[:, :, nh // 2:] = x[:, :, nh // 2:].roll(-group // 2, dims=1)
        return x.reshape(bsz * num_group, group, nh, hd).transpose(1, 2)

    q, k, v = shift(query), shift(key), shift(value)
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    causal = torch.ones(group, group, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    out = out.transpose(1, 2).reshape(bsz, q_len, nh, hd).clone()
    out[:, :, nh // 2:] = out[:, :, nh // 2:].roll(group // 2, dims=1)
    return out, None


def make_config(c, llama3_factor):
    from transformers import LlamaConfig, Qwen2Config
    cfg = dict(DIMS, tie_word_embeddings=c["tied"], rope_theta=c["theta"])
    if llama3_factor is not None:
        cfg["rope_scaling"] = dict(LLAMA3, factor=llama3_factor)
    return (LlamaConfig if c["family"] == "llama" else Qwen2Config)(**cfg)


def build(c, seed, composed=True):
    """The case's model: with the config transformers runs (composed) or the base config (same weights)."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM
    torch.manual_seed(seed)
    ran_factor = c["llama3_factor"] * (c["pi"] if composed else 1.0) if c["llama3_factor"] is not None else None
    config = make_config(c, ran_factor)
    model = (LlamaForCausalLM if c["family"] == "llama" else Qwen2ForCausalLM)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def ours(name):
    """PEFT's in-memory parameter name -> the name our adapters and checkpoints use."""
    return name.replace("base_model.model.", "").replace(".base_layer.", ".").replace(".default.weight", ".weight")


def llama31_8b_inv_freq():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_theta=500000.0, max_position_embeddings=131072,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                           original_max_position_embeddings=8192))
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    return inv_freq.float().contiguous()


def run(name, c, seed, out):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface

    model = build(c, seed)
    if name in FOLDERS:  # the same weights with the base config, as transformers saves a folder (sharded)
        folder = os.path.join(out, FOLDERS[name])
        shutil.rmtree(folder, ignore_errors=True)
        build(c, seed, composed=False).save_pretrained(folder, safe_serialization=True, max_shard_size="40KB")
    ran_config = model.config.to_json_string()
    base_config = make_config(c, c["llama3_factor"]).to_json_string() if c["pi"] != 1.0 else ran_config
    inv_freq = model.model.rotary_emb.inv_freq.float().clone()
    torch.manual_seed(seed + 1)
    ids = torch.randint(0, DIMS["vocab_size"], (BATCH, SEQ), dtype=torch.int32)
    targets = torch.randint(0, DIMS["vocab_size"], (BATCH, SEQ), dtype=torch.int32)

    if c["attention"] == "s2_roll":
        AttentionInterface.register("longlora_s2_roll", s2_roll_attention)
        model.config._attn_implementation = "longlora_s2_roll"
    else:
        model.config._attn_implementation = "eager"
    model = model.double()
    if c["lora"]:
        model = get_peft_model(model, LoraConfig(lora_dropout=0.0, bias="none", **LORA))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if ".lora_B." in n:
                    p.copy_(0.2 * torch.randn_like(p))
                p.requires_grad_(".lora_" in n or any(t in ours(n) for t in TRAINABLE))
    model.train()

    logits = model(input_ids=ids.long()).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())
    loss.backward()
    if c["attention"] == "s2_roll":  # guard: the shifted attention really ran
        model.config._attn_implementation = "eager"
        with torch.no_grad():
            causal = model(input_ids=ids.long()).logits
        assert (causal - logits).norm() > 1e-2 * logits.norm(), "the S2 roll attention did not run"

    tensors = {"input_ids": ids.contiguous(), "targets": targets.contiguous(), "inv_freq": inv_freq,
               "logits": logits.detach().float().contiguous(), "loss": loss.detach().reshape(1).float()}
    if name == "llama3_full":
        tensors["llama31_8b_inv_freq"] = llama31_8b_inv_freq()
    trainable = []
    for n, p in model.named_parameters():
        tensors[ours(n)] = p.detach().float().contiguous()
        if p.requires_grad:
            tensors["grad/" + ours(n)] = p.grad.float().contiguous()
            trainable.append(ours(n))
    meta = {"lora_rank": LORA["r"] if c["lora"] else 0, "lora_alpha": LORA["lora_alpha"],
            "lora_targets": LORA["target_modules"] if c["lora"] else [],
            "trainable": TRAINABLE if c["lora"] else ["all"], "attention": c["attention"],
            "s2_group_size": SEQ // 4, "rope_scaling_factor": c["pi"]}
    path = os.path.join(out, f"family_{name}.safetensors")
    save_file(tensors, path, metadata={"config": base_config, "ran_config": ran_config, "case": json.dumps(meta),
                                       "transformers_version": transformers.__version__})
    print(f"{path}: loss {loss.item():.6f}, {len(trainable)} trainable tensors, logits std {logits.std():.3f}")


def rel_err(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_causal_lm(path, llama3_times=None, linear=None):
    """A folder in float32, eager attention; the RoPE as LongLoRA trained on top of it: llama3_times multiplies a
    llama3 factor (the composed config), linear sets linear interpolation."""
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(path)
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if llama3_times is not None:
        assert rope.get("rope_type") == "llama3", rope
        rope["factor"] = rope["factor"] * llama3_times
        config.rope_parameters = rope
    if linear is not None:
        config.rope_parameters = {**rope, "rope_type": "linear", "factor": linear}
    model = AutoModelForCausalLM.from_pretrained(path, config=config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids.long()).logits.float()


def check_ours(out, ours):
    """transformers + peft on what FamilyInterop wrote into `ours`; records <out>/family_interop.json."""
    import peft
    import transformers
    from peft import PeftModel
    errors, files, merged_rope = {}, {}, {}
    for family, folder in (("llama3", "llama3_tiny"), ("qwen2", "qwen2_tiny")):
        base_dir, here = os.path.join(out, folder), os.path.join(ours, family)
        mine = load_file(os.path.join(here, "ours_logits.safetensors"))
        ids = mine["input_ids"]
        lora_logits = mine["lora_logits"].reshape(*ids.shape, -1)
        merged_logits = mine["merged_logits"].reshape(*ids.shape, -1)
        rope = dict(llama3_times=TRAIN_ROPE_FACTOR) if family == "llama3" else dict(linear=TRAIN_ROPE_FACTOR)
        # 1. peft loads our adapter (LoRA on q,k,v,o_proj; embed_tokens and the RMSNorms as modules_to_save).
        adapter = os.path.join(here, "adapter")
        pm = PeftModel.from_pretrained(load_causal_lm(base_dir, **rope), adapter).eval()
        # A tied model (qwen2_tiny): our adapter trains the ONE matrix that is the embedding and the head. peft 0.21
        # wraps embed_tokens (modules_to_save) in a trained copy and leaves lm_head on the original, untying them
        # (it warns; its ensure_weight_tying option then wants an lm_head entry our file does not have, as the tie
        # makes it the same tensor). The check ties them again — lm_head reads the trained embedding — and records
        # that it did.
        tied = pm.base_model.model.config.tie_word_embeddings
        if tied:
            inner = pm.base_model.model
            inner.lm_head.weight = inner.model.embed_tokens.modules_to_save["default"].weight
        saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
        state = peft.get_peft_model_state_dict(pm)
        missing = sorted(set(saved) - set(state))
        assert not missing, f"{family}: peft did not load {missing} (it holds {sorted(state)})"
        for k, v in saved.items():
            assert torch.equal(state[k].float(), v.float()), f"{family}: peft loaded {k} with other values"
        errors[f"{family}_peft{'_head_retied' if tied else ''}_vs_ours_lora"] = rel_err(logits_of(pm, ids), lora_logits)
        # 2. transformers loads our merged folder as written (the RoPE it records included) and gives our logits.
        mm = load_causal_lm(os.path.join(here, "merged"))
        merged_rope[family] = dict(mm.config.rope_parameters)
        got = logits_of(mm, ids)
        errors[f"{family}_merged_vs_ours_merged"] = rel_err(got, merged_logits)
        errors[f"{family}_merged_vs_ours_lora"] = rel_err(got, lora_logits)
        for sub in ("adapter", "merged"):
            for name in sorted(os.listdir(os.path.join(here, sub))):
                files[f"{family}/{sub}/{name}"] = sha256(os.path.join(here, sub, name))
    worst = max(errors.values())
    record = {"passed": worst <= TOL, "max_rel_err": worst, "tolerance": TOL, "checks": errors,
              "merged_rope": merged_rope, "transformers_version": transformers.__version__,
              "peft_version": peft.__version__, "torch_version": torch.__version__, "files": files}
    print(json.dumps(record, indent=2, sort_keys=True))
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--check-ours", metavar="DIR", help="check the folders FamilyInterop wrote into DIR")
    ap.add_argument("--record", action="store_true", help="with --check-ours: write <out>/family_interop.json")
    args = ap.parse_args()
    if args.check_ours:
        record = check_ours(args.out, args.check_ours)
        if args.record:
            path = os.path.join(args.out, "family_interop.json")
            runs = json.load(open(path))["runs"] if os.path.exists(path) else {}
            runs[f"transformers {record['transformers_version']} / peft {record['peft_version']}"] = record
            with open(path, "w") as f:
                json.dump({"runs": runs}, f, indent=2, sort_keys=True)
                f.write("\n")
        sys.exit(0 if record["passed"] else 1)
    for i, (name, c) in enumerate(CASES.items()):
        run(name, c, 301 + 10 * i, args.out)


if __name__ == "__main__":
    main()
