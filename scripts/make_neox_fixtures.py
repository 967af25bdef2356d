#!/usr/bin/env python3
"""GPT-NeoX parity fixtures from Hugging Face ``transformers`` (and ``peft``) for tests/test_neox_fixtures.cpp.

    /path/to/venv/bin/python scripts/make_neox_fixtures.py [--out tests/fixtures]

needs torch, transformers (written with 5.24) and peft (0.21). Each case builds a random ``GPTNeoXForCausalLM``
(hidden 32, 4 heads of 8, intermediate 48, 2 layers, vocabulary 29; every tensor perturbed away from HF's init so each
one matters), runs it in float64 with eager attention on fixed tokens, and writes ``<out>/neox_<case>.safetensors``:

  * metadata ``config``: the config.json transformers writes for the model (our loader parses it as a folder's);
    metadata ``case``: {lora_rank, lora_alpha, lora_targets, trainable, attention, s2_group_size};
  * every parameter under its Hugging Face name (LoRA A/B under PEFT's names without ".default": what our adapters
    save), ``input_ids`` and ``targets`` int32 [B, L], ``logits`` [B, L, V], ``loss`` [1] (mean cross-entropy of
    ``targets``; no shift), and ``grad/<name>`` for every parameter that trains — all float32 (the float64 results
    rounded), so our float64 CPU backend must match within ~1e-7 and the float32 one within 1e-4.

Cases (rotary_pct 0.25 and 1.0, parallel and sequential residual, full fine-tuning and LoRA):
  par_q_pi2_full   parallel, rotary_pct 0.25, rope_scaling linear 2, every parameter trains;
  seq_full         sequential, rotary_pct 1.0, no scaling, every parameter trains;
  par_q_pi2_lora   parallel, 0.25, linear 2; ``peft`` LoRA r 4 / alpha 8 on target_modules [query_key_value, dense]
                   (B drawn at random so it matters) plus LongLoRA's ``embed,norm`` substring rule: embed_in,
                   embed_out and every LayerNorm weight and bias train;
  seq_lora         sequential, 1.0, the same LoRA and trainable set;
  s2_roll          LongLoRA's NeoX training forward (gptneox_attn_replace.py): partial RoPE with PI first, then heads
                   [nh/2, nh) of q, k, v rolled by -G/2 along the sequence (wrap-around), causal attention inside each
                   group of G = L/4 tokens, the output's heads rolled back by +G/2. Its flash-attn varlen call
                   (causal, one sequence per group) is replaced by the exact causal attention per group, plugged into
                   transformers' attention interface so the rest of the layer is transformers' own. LoRA + embed,norm
                   as LongLoRA trains; the loss is the first step's loss.
  bf16             (logits only) the par_q_pi2_full model saved in bfloat16 and run by transformers in bfloat16; the
                   weights are stored in bfloat16. Our CPU reference loads them (exact in float32) and computes in
                   float32; the tolerance (test) covers transformers' bfloat16 rounding of every activation.

The first case's model is also saved as ``<out>/neox_tiny/`` (save_pretrained, sharded: transformers 5's config.json
with rope_parameters), which NeoxFolder.* reads with our loader.

Interop: OUR writers checked with transformers + peft (rerun whenever the adapter or merge writers change)
---------------------------------------------------------------------------------------------------------
    make -j2 build/test_all
    LL_NEOX_INTEROP_DIR=/tmp/neox_interop build/test_all --gtest_filter='NeoxInterop.*'
    python scripts/make_neox_fixtures.py --check-ours /tmp/neox_interop --record          # transformers 5 / peft 0.21
    PYTHONPATH=<transformers 4.x site> python scripts/make_neox_fixtures.py --check-ours /tmp/neox_interop --record

NeoxInterop writes, from neox_tiny: ``adapter/`` (our save_adapter: LoRA r 4 / alpha 8 on query_key_value and dense,
embed_in / embed_out / every LayerNorm trained, RoPE factor 4 in longlora.json), ``merged/`` (build/merge's pipeline)
and our logits of both. The check: (1) peft loads the adapter onto GPTNeoXForCausalLM (factor overridden to 4, as
LongLoRA's eval does) with exactly our tensors and gives our logits — on transformers 5 from a copy whose
modules_to_save entry and tensor ``embed_out`` are renamed ``lm_head`` (transformers 5 names the head lm_head in
memory, so no embed_out adapter loads there as written), recorded under its own key; (2) LongLoRA's way:
trainable_params.bin load_state_dict-ed (strict=False, no unexpected key) + W += (alpha/r)·B·A; (3) transformers
loads merged/ with factor 4 and gives our logits. Each run is recorded in ``<out>/neox_interop.json`` under its
transformers / peft versions with the sha256 of every file written; NeoxInterop.MatchesRecordedCheck requires every
run passed and the same bytes.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

DIMS = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2, vocab_size=29,
            max_position_embeddings=64, layer_norm_eps=1e-5, rotary_emb_base=10000.0, hidden_act="gelu",
            tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0)
BATCH, SEQ = 2, 16
FOLDER_CASE = "par_q_pi2_full"  # also saved as <out>/neox_tiny/, the base of the interop check
TRAIN_ROPE_FACTOR = 4.0  # what NeoxInterop records in longlora.json (tests/test_neox_interop.cpp)
TOL = 1e-4
LORA = dict(r=4, lora_alpha=8, target_modules=["query_key_value", "dense"])
TRAINABLE = ["embed", "norm"]  # LongLoRA's --trainable_params default, a substring rule over parameter names


def case(parallel, rotary_pct, factor, lora, attention="full"):
    return dict(parallel=parallel, rotary_pct=rotary_pct, factor=factor, lora=lora, attention=attention)


CASES = {
    "par_q_pi2_full": case(True, 0.25, 2.0, False),
    "seq_full": case(False, 1.0, 1.0, False),
    "par_q_pi2_lora": case(True, 0.25, 2.0, True),
    "seq_lora": case(False, 1.0, 1.0, True),
    "s2_roll": case(True, 0.25, 2.0, True, "s2_roll"),
}


def s2_roll_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """LongLoRA's shift / per-group causal attention / shift back, on q, k, v [B, nh, L, hd] (RoPE applied)."""
    bsz, nh, q_len, hd = query.shape
    group = q_len // 4
    assert q_len % group == 0
    num_group = q_len // group

    def shift(x):  # [B, nh, L, hd] -> [B·groups, nh, G, hd]
        x = x.transpose(1, 2).clone()  # [B, L, nh, hd]
        x[:, :, nh // 2:] = x[:, :, nh // 2:].roll(-group // 2, dims=1)
        return x.reshape(bsz * num_group, group, nh, hd).transpose(1, 2)

    q, k, v = shift(query), shift(key), shift(value)
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    causal = torch.ones(group, group, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [B·groups, nh, G, hd]
    out = out.transpose(1, 2).reshape(bsz, q_len, nh, hd).clone()
    out[:, :, nh // 2:] = out[:, :, nh // 2:].roll(group // 2, dims=1)
    return out, None  # [B, L, nh, hd], as transformers' attention functions return it


def build(c, seed):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    torch.manual_seed(seed)
    cfg = dict(DIMS, rotary_pct=c["rotary_pct"], use_parallel_residual=c["parallel"])
    if c["factor"] != 1.0:
        cfg["rope_scaling"] = {"type": "linear", "factor": c["factor"]}
    config = GPTNeoXConfig(**cfg)
    model = GPTNeoXForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                p.copy_((1.0 if name.endswith(".weight") else 0.0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def ours(name):
    """PEFT's / transformers' in-memory parameter name -> the file name (ours, and every Pythia checkpoint's).

    transformers 5 calls the output head ``lm_head`` in memory and renames it to ``embed_out`` when it loads or saves
    a folder; LongLoRA's substring rule ran (transformers 4.x) over ``embed_out``, so it trains it."""
    name = name.replace("base_model.model.", "").replace(".base_layer.", ".").replace(".default.weight", ".weight")
    return "embed_out.weight" if name == "lm_head.weight" else name


def run(name, c, seed, out):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AttentionInterface

    model = build(c, seed)
    config_json = model.config.to_json_string()
    if name == FOLDER_CASE:  # the same weights as an HF folder, as transformers saves it (sharded, with an index)
        folder = os.path.join(out, "neox_tiny")
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder, safe_serialization=True, max_shard_size="40KB")
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
    model.train()  # dropouts are 0; train() selects LongLoRA's shifted attention path (it checks self.training)

    logits = model(input_ids=ids.long()).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())
    loss.backward()
    if c["attention"] == "s2_roll":  # guard: the shifted attention really ran (it differs from causal attention)
        model.config._attn_implementation = "eager"
        with torch.no_grad():
            causal = model(input_ids=ids.long()).logits
        model.config._attn_implementation = "longlora_s2_roll"
        assert (causal - logits).norm() > 1e-2 * logits.norm(), "the S2 roll attention did not run"

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
    path = os.path.join(out, f"neox_{name}.safetensors")
    save_file(tensors, path, metadata={"config": config_json, "case": json.dumps(meta),
                                       "transformers_version": transformers.__version__})
    print(f"{path}: loss {loss.item():.6f}, {len(trainable)} trainable tensors, logits std {logits.std():.3f}")
    return model, ids


def run_bf16(out):
    import transformers
    model = build(CASES["par_q_pi2_full"], seed=101).to(torch.bfloat16)
    model.config._attn_implementation = "eager"
    model.eval()
    torch.manual_seed(102)
    ids = torch.randint(0, DIMS["vocab_size"], (BATCH, SEQ), dtype=torch.int32)
    with torch.no_grad():
        logits = model(input_ids=ids.long()).logits.float()
        reference = model.double()(input_ids=ids.long()).logits.float()  # the same bf16 weights, in float64
    tensors = {ours(n): p.detach().to(torch.bfloat16).contiguous() for n, p in model.named_parameters()}
    tensors.update({"input_ids": ids.contiguous(), "logits": logits.contiguous(),
                    "logits_f64": reference.contiguous()})
    err = float((logits.double() - reference.double()).norm() / reference.double().norm())
    path = os.path.join(out, "neox_bf16.safetensors")
    save_file(tensors, path, metadata={"config": model.config.to_json_string(), "case": json.dumps({}),
                                       "transformers_version": transformers.__version__})
    print(f"{path}: transformers bf16 vs f64 on the same weights: relative error {err:.3g}")


def rel_err(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_neox(path, rope_factor=None):
    """GPTNeoXForCausalLM from a folder in float32, eager attention; rope_factor overrides the linear scaling."""
    import transformers
    from transformers import AutoConfig, GPTNeoXForCausalLM
    config = AutoConfig.from_pretrained(path)
    v5 = int(transformers.__version__.split(".")[0]) >= 5
    if rope_factor is not None:  # (4.x keeps a 5.x file's rope_parameters as an unused attribute: set rope_scaling)
        if v5:
            config.rope_parameters = {**config.rope_parameters, "rope_type": "linear", "type": "linear",
                                      "factor": rope_factor}
        else:
            config.rope_scaling = {"type": "linear", "factor": rope_factor}
    dtype_key = "dtype" if v5 else "torch_dtype"
    model = GPTNeoXForCausalLM.from_pretrained(path, config=config, attn_implementation="eager",
                                               **{dtype_key: torch.float32})
    return model.eval()


def rope_factor_of(config):
    scaling = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return float(scaling.get("factor", 1.0))


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids.long()).logits.float()


def check_ours(out, ours):
    """transformers + peft on what NeoxInterop wrote into `ours`; records <out>/neox_interop.json."""
    import peft
    import transformers
    from peft import PeftModel

    tiny = os.path.join(out, "neox_tiny")
    adapter, merged = os.path.join(ours, "adapter"), os.path.join(ours, "merged")
    mine = load_file(os.path.join(ours, "ours_logits.safetensors"))
    ids = mine["input_ids"]
    lora_logits = mine["lora_logits"].reshape(*ids.shape, -1)
    merged_logits = mine["merged_logits"].reshape(*ids.shape, -1)
    errors = {}

    # 1. peft loads our adapter folder (LoRA on query_key_value and dense, embed_in / embed_out / LayerNorms as
    #    modules_to_save) onto GPTNeoXForCausalLM and computes our function.
    #    transformers 5 calls the output head lm_head in memory (embed_out only in files), so peft 0.21 on it cannot
    #    match modules_to_save "embed_out" (nor any Pythia adapter that trained the head): there the check loads a
    #    copy of our folder with that one entry and tensor renamed to lm_head, and records that it did.
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    v5 = int(transformers.__version__.split(".")[0]) >= 5
    scratch = tempfile.TemporaryDirectory()
    if v5:
        renamed = os.path.join(scratch.name, "adapter")
        shutil.copytree(adapter, renamed)
        cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
        cfg["modules_to_save"] = ["lm_head" if m == "embed_out" else m for m in cfg["modules_to_save"]]
        json.dump(cfg, open(os.path.join(renamed, "adapter_config.json"), "w"))
        save_file({k.replace("base_model.model.embed_out.", "base_model.model.lm_head."): v for k, v in saved.items()},
                  os.path.join(renamed, "adapter_model.safetensors"), metadata={"format": "pt"})
        adapter_for_peft = renamed
    else:
        adapter_for_peft = adapter
    pm = PeftModel.from_pretrained(load_neox(tiny, TRAIN_ROPE_FACTOR), adapter_for_peft).eval()
    saved = load_file(os.path.join(adapter_for_peft, "adapter_model.safetensors"))
    state = peft.get_peft_model_state_dict(pm)
    missing = sorted(set(saved) - set(state))
    assert not missing, f"peft did not load {missing} (it holds {sorted(state)})"
    for k, v in saved.items():
        assert torch.equal(state[k].float(), v.float()), f"peft loaded {k} with other values"
    errors["peft_vs_ours_lora" + ("_embed_out_renamed_lm_head" if v5 else "")] = rel_err(logits_of(pm, ids), lora_logits)

    # 2. LongLoRA's way: trainable_params.bin into the base (strict=False), then W += (alpha/r)·B·A by hand.
    base = load_neox(tiny, TRAIN_ROPE_FACTOR)
    trainable = torch.load(os.path.join(adapter, "trainable_params.bin"), map_location="cpu", weights_only=True)
    if hasattr(base, "lm_head") and "embed_out.weight" in trainable:  # transformers 5 names it lm_head in memory
        trainable["lm_head.weight"] = trainable.pop("embed_out.weight")
    result = base.load_state_dict(trainable, strict=False)
    assert not result.unexpected_keys, f"trainable_params names unknown to transformers: {result.unexpected_keys}"
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    scale = cfg["lora_alpha"] / cfg["r"]
    params = dict(base.named_parameters())
    with torch.no_grad():
        for k, a in saved.items():
            if ".lora_A." in k:
                b = saved[k.replace(".lora_A.", ".lora_B.")]
                params[k[len("base_model.model."):].replace(".lora_A.weight", ".weight")] += \
                    scale * (b.double() @ a.double()).float()
    errors["longlora_vs_ours_lora"] = rel_err(logits_of(base, ids), lora_logits)

    # 3. transformers loads our merged folder with the RoPE factor we recorded, and gives our logits.
    mm = load_neox(merged)
    factor = rope_factor_of(mm.config)
    assert factor == TRAIN_ROPE_FACTOR, f"merged config.json gives rope factor {factor}, expected {TRAIN_ROPE_FACTOR}"
    assert mm.config.use_parallel_residual and mm.gpt_neox.layers[0].attention.rotary_ndims == 2, mm.config
    got = logits_of(mm, ids)
    errors["merged_vs_ours_merged"] = rel_err(got, merged_logits)
    errors["merged_vs_ours_lora"] = rel_err(got, lora_logits)

    files = {}
    for sub in ("adapter", "merged"):
        for name in sorted(os.listdir(os.path.join(ours, sub))):
            files[f"{sub}/{name}"] = sha256(os.path.join(ours, sub, name))
    worst = max(errors.values())
    record = {"passed": worst <= TOL, "max_rel_err": worst, "tolerance": TOL, "checks": errors,
              "merged_rope_factor": factor, "transformers_version": transformers.__version__,
              "peft_version": peft.__version__, "torch_version": torch.__version__, "files": files}
    print(json.dumps(record, indent=2, sort_keys=True))
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--check-ours", metavar="DIR", help="check the folders NeoxInterop wrote into DIR")
    ap.add_argument("--record", action="store_true", help="with --check-ours: write <out>/neox_interop.json")
    args = ap.parse_args()
    if args.check_ours:
        record = check_ours(args.out, args.check_ours)
        if args.record:  # one entry per transformers / peft pair, kept across runs with other versions
            path = os.path.join(args.out, "neox_interop.json")
            runs = json.load(open(path))["runs"] if os.path.exists(path) else {}
            runs[f"transformers {record['transformers_version']} / peft {record['peft_version']}"] = record
            with open(path, "w") as f:
                json.dump({"runs": runs}, f, indent=2, sort_keys=True)
                f.write("\n")
        sys.exit(0 if record["passed"] else 1)
    for i, (name, c) in enumerate(CASES.items()):
        run(name, c, 101 + 10 * i, args.out)
    run_bf16(args.out)


if __name__ == "__main__":
    main()
