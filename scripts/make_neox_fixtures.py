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
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

DIMS = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2, vocab_size=29,
            max_position_embeddings=64, layer_norm_eps=1e-5, rotary_emb_base=10000.0, hidden_act="gelu",
            tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0)
BATCH, SEQ = 2, 16
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    for i, (name, c) in enumerate(CASES.items()):
        run(name, c, 101 + 10 * i, args.out)
    run_bf16(args.out)


if __name__ == "__main__":
    main()
