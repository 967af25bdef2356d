#!/usr/bin/env python3
"""PyTorch + transformers + PEFT baseline for the end-to-end benchmark (scripts/bench_cuda.sh e2e), same recipe:

  Llama-2-7B shape (random weights, bf16), LoRA r=8 alpha=16 on q,k,v,o, embed_tokens + norms trainable (LongLoRA's
  LoRA+), gradient checkpointing (--no_checkpointing: without, as far as it fits), AdamW (fused) on the trainable parameters, one sequence of --seq_len tokens,
  S2-Attn with group ratio 1/4 applied as LongLoRA's paper-era code does (Algorithm 1: shift half the heads by -G/2,
  fold groups into the batch, causal attention per group, shift back) through SDPA with the flash backend.

Prints tokens/s and peak memory, writes JSON (--json), and, given --ours FILE (the e2e JSON of build/bench_cuda),
prints our tokens/s over the baseline's.

Needs torch, transformers and peft on a CUDA machine (docs/gpu-log.md has what it measured on the cards we had).

--device cpu: the CPU comparison (issue 21) with `build/bench_cpu_train --case peft --json FILE`: the model of that case
(4 layers, hidden 512, MLP 1408, 4/2 heads, vocab 512; --ours FILE checks the shape against the one in FILE), fp32, no
autocast, SDPA without a forced backend, --threads torch threads (default 2: run ours with OMP_NUM_THREADS=2), and
the ratio against the row of FILE with the same checkpointing. scripts/bench_cpu_vs_peft.sh runs both interleaved.
"""
import argparse
import json
import time


def s2_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention interface: query [B, H, L, D], key/value [B, Hkv, L, D] → ([B, L, H, D], None)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    bsz, heads, seq, dim = query.shape
    kv_heads = key.shape[1]
    if kv_heads != heads:  # repeat_kv, as LongLoRA does before the shift
        key = key.repeat_interleave(heads // kv_heads, dim=1)
        value = value.repeat_interleave(heads // kv_heads, dim=1)
    group = seq // 4
    assert seq % group == 0, "S2 needs the sequence length divisible by the group size"
    half = heads // 2

    def shift(x):  # [B, H, L, D]: roll the second half of the heads by -G/2 along the sequence
        return torch.cat([x[:, :half], x[:, half:].roll(-(group // 2), dims=2)], dim=1)

    def fold(x):  # [B, H, L, D] → [B·n, H, G, D]
        n = seq // group
        return x.reshape(bsz, heads, n, group, dim).permute(0, 2, 1, 3, 4).reshape(bsz * n, heads, group, dim)

    q, k, v = (fold(shift(t)) for t in (query, key, value))
    if q.is_cuda:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)
    else:  # the CPU picks its own (flash-attention-style) kernel
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)
    n = seq // group
    o = o.reshape(bsz, n, heads, group, dim).permute(0, 2, 1, 3, 4).reshape(bsz, heads, seq, dim)
    o = torch.cat([o[:, :half], o[:, half:].roll(group // 2, dims=2)], dim=1)
    return o.transpose(1, 2).contiguous(), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq_len", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no_s2", action="store_true", help="plain causal SDPA instead of S2")
    ap.add_argument("--no_checkpointing", action="store_true",
                    help="keep every activation (no layer recomputation); may not fit")
    ap.add_argument("--json", default="")
    ap.add_argument("--ours", default="", help="e2e JSON from build/bench_cuda (cuda) or build/bench_cpu_train "
                    "--case peft (cpu) to compare with")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: fp32, the small model of bench_cpu_train --case peft, --threads threads")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on --device cpu")
    a = ap.parse_args()
    cpu = a.device == "cpu"
    # The model: Llama-2-7B's shape on CUDA; on the CPU the model of bench_cpu_train --case peft.
    shape = dict(layers=a.layers, hidden_size=4096, intermediate_size=11008, heads=32, kv_heads=32, vocab_size=32000,
                 max_position_embeddings=4096)
    if cpu:
        shape = dict(layers=4, hidden_size=512, intermediate_size=1408, heads=4, kv_heads=2, vocab_size=512,
                     max_position_embeddings=64)
        if a.seq_len == 8192:  # the CUDA default: use the CPU case's length
            a.seq_len = 1024
    ours_rows = None
    if a.ours:
        ours_json = json.load(open(a.ours))
        if cpu:
            if ours_json.get("model") != shape:
                raise SystemExit(f"--ours {a.ours}: model {ours_json.get('model')} is not the baseline's {shape} "
                                 "(expected the JSON of build/bench_cpu_train --case peft)")
            ours_rows = [r for r in ours_json["rows"] if r["checkpointing"] == (not a.no_checkpointing)
                         and r["seq_len"] == a.seq_len and r["s2"] == (not a.no_s2)]
            if not ours_rows:
                raise SystemExit(f"--ours {a.ours}: no row with seq_len {a.seq_len}, s2 {not a.no_s2}, "
                                 f"checkpointing {not a.no_checkpointing}")

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS["longlora_s2"] = s2_attention
    if cpu:
        torch.set_num_threads(a.threads)
    dtype = torch.float32 if cpu else torch.bfloat16
    max_pos = shape["max_position_embeddings"]
    # LongLoRA's ceil(target / original) on CUDA; bench_cpu_train's L / max_pos on the CPU (a cost-free difference)
    factor = a.seq_len / max_pos if cpu else max(1.0, float(-(-a.seq_len // max_pos)))
    cfg = LlamaConfig(hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
                      num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                      num_hidden_layers=shape["layers"], vocab_size=shape["vocab_size"],
                      max_position_embeddings=max_pos,
                      rope_scaling={"type": "linear", "factor": factor} if factor > 1 else None,
                      torch_dtype=dtype,
                      attn_implementation="sdpa" if a.no_s2 else "longlora_s2")
    torch.manual_seed(0)
    with torch.device(a.device):
        model = LlamaForCausalLM(cfg).to(dtype)
    if not a.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():  # LongLoRA's trainable_params: embed,norm
        if "embed_tokens" in name or "norm" in name:
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    # LongLoRA trains in bf16 with fp32 masters (DeepSpeed); keep the trainable parameters in fp32 here.
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.0, fused=True)
    tokens = torch.randint(0, shape["vocab_size"], (1, a.seq_len), device=a.device)

    def step():
        with torch.autocast(a.device, dtype=torch.bfloat16, enabled=not cpu):
            loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if not cpu else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    sec = (time.perf_counter() - t0) / a.steps
    tps = a.seq_len / sec
    if cpu:
        print(f"HF+PEFT baseline on the CPU, {a.threads} threads ({'causal SDPA' if a.no_s2 else 'S2 via SDPA'}, "
              f"{'no ' if a.no_checkpointing else ''}checkpointing), seq {a.seq_len}, {shape}: {sec:.3f} s/step, "
              f"{tps:.0f} tokens/s")
        out = {"benchmark": "hf_baseline", "device": "cpu", "threads": a.threads, "model": shape,
               "seq_len": a.seq_len, "s2": not a.no_s2, "checkpointing": not a.no_checkpointing,
               "step_seconds": sec, "tokens_per_second": tps, "torch": torch.__version__}
        if ours_rows:
            ours = ours_rows[0]["tokens_per_sec"]
            out["ours_tokens_per_second"] = ours
            out["speedup"] = ours / tps
            print(f"ours {ours:.0f} tokens/s = {ours / tps:.2f}x the baseline")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)
        return
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"HF+PEFT baseline ({'causal SDPA' if a.no_s2 else 'S2 via SDPA flash'}, "
          f"{'no ' if a.no_checkpointing else ''}checkpointing), seq {a.seq_len}, "
          f"{a.layers} layers: {sec:.3f} s/step, {tps:.0f} tokens/s, peak allocated {peak:.2f} GiB "
          f"on {torch.cuda.get_device_name()}")
    out = {"benchmark": "hf_baseline", "device": torch.cuda.get_device_name(), "seq_len": a.seq_len,
           "layers": a.layers, "s2": not a.no_s2, "checkpointing": not a.no_checkpointing, "step_seconds": sec, "tokens_per_second": tps,
           "peak_allocated_gib": peak, "torch": torch.__version__}
    if a.ours:
        results = ours_json["results"]
        ours = results["tokens_per_second"]
        out["ours_tokens_per_second"] = ours
        out["speedup"] = ours / tps
        print(f"ours {ours:.0f} tokens/s (checkpointing {results.get('checkpointing', '?')}) = "
              f"{ours / tps:.2f}x the baseline")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
