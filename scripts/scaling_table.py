#!/usr/bin/env python3
"""Per-GPU memory, per-step communication and predicted throughput for LongLoRA recipes under ZeRO stages 0/2/3.

Prints the tables of docs/scaling.md (run: python3 scripts/scaling_table.py; --comm_model prints only the
communication model of 8-GPU nodes). Pure arithmetic from the model shapes and one measured number (the single-H100
tokens/s of docs/gpu-log.md); the assumptions are printed with the tables. No dependencies beyond the standard library.
"""
import sys

GiB = 1024 ** 3
MODELS = {  # hidden, intermediate, layers, heads, kv heads, vocab (LongLoRA adds [PAD]: 32001)
    "7B": (4096, 11008, 32, 32, 32, 32001),
    "13B": (5120, 13824, 40, 40, 40, 32001),
    "70B": (8192, 28672, 80, 64, 8, 32001),
}


def counts(name, lora_r=8, full=False):
    d, f, layers, h, hkv, v = MODELS[name]
    kv = d * hkv // h
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d
    total = layers * per_layer + 2 * v * d + d
    lora = layers * lora_r * ((d + d) * 2 + (d + kv) * 2)  # q, o: d→d; k, v: d→kv
    trainable = lora + v * d + (2 * layers + 1) * d  # LoRA+: adapters, embedding, norms
    if full:  # full fine-tuning: every weight trains, no adapters
        trainable = total
    return total, trainable, layers, d, f, v


def activations(name, ctx):
    """bf16 bytes with per-layer checkpointing: every layer input kept, one layer's activations live."""
    total, _, layers, d, f, v = counts(name)
    _, _, _, h, hkv, _ = MODELS[name]
    kv = d * hkv // h
    inputs = layers * ctx * d * 2
    one_layer = ctx * (6 * d + 2 * kv + 4 * f) * 2 + ctx * h * 4  # norms, q/k/v/o, attn out, mlp, lse (f32)
    head = 32 * 2 ** 20 + ctx * d * 4  # one logits chunk + final hidden state
    return inputs + 2 * one_layer + head  # forward set + gradient scratch


def memory(name, ctx, stage, n, full=False):
    total, trainable, *_ = counts(name, full=full)
    weights = total * 2 / (n if stage == 3 else 1)            # bf16 working copy
    masters_moments = trainable * 12 / (1 if stage == 0 else n)  # fp32 master + m + v
    grads = trainable * 4 / (n if stage == 3 else 1)          # fp32 accumulation buffer
    gather = 0
    if stage == 3:
        _, _, layers, *_ = counts(name)
        gather = 2 * (total / layers) * 2                     # two layers in flight (prefetch)
    return (weights + masters_moments + grads + gather + activations(name, ctx)) / GiB


def comm_per_step(name, stage, n, micro_batches=8):
    """Bytes each rank sends per optimizer step (ring collectives: (n-1)/n of the buffer per pass)."""
    total, trainable, *_ = counts(name)
    ring = (n - 1) / n
    if stage == 0:
        return 2 * ring * trainable * 4 / GiB  # all-reduce fp32 gradients
    if stage == 2:
        return ring * (trainable * 4 + trainable * 2) / GiB  # reduce-scatter fp32 grads + all-gather bf16 weights
    # stage 3: per micro-batch, weights gathered for forward and again for backward, grads reduce-scattered
    return micro_batches * ring * (2 * total * 2 + trainable * 4) / GiB


# --- the communication model of one 8-GPU node (docs/scaling.md, "Communication model") ---
# What the code sends (mpi/zero.cpp, mpi/zero3.cpp; CUDA ranks: f32 gradients, bf16 weights):
#   ZeRO-0  one all-reduce of the f32 gradient arena per optimizer step, after the last micro-batch's backward,
#           waited for before clipping: nothing overlaps it.
#   ZeRO-2  reduce-scatter of the f32 gradients bucket by bucket (2^24 elements with NCCL), each started as soon as
#           its last layer's backward is done in the last micro-batch (overlaps the rest of that backward: only the
#           last bucket is exposed); after the update, all-gather of the bf16 weights each rank updated (overlaps only
#           the next bucket's update, short: counted as exposed).
#   ZeRO-3  every micro-batch: all-gather of each group's bf16 weights (trainable and frozen) for the forward and
#           again for the backward, prefetched one layer ahead; reduce-scatter of each layer's f32 trainable
#           gradients right after its backward, waited for when its slot is reused. Exposed: the first group of
#           each pass (the embedding/LM-head group) and whatever a layer's transfer takes beyond its compute.
# Ring collectives, bytes each rank sends: all-reduce 2(N-1)/N*S, reduce-scatter and all-gather (N-1)/N*S.
NODES = {  # name: (NVLink GB/s as marketed (both directions), HBM TB/s, dense bf16 TFLOP/s)
    "8xA100": (600, 2.04, 312),
    "8xH100": (900, 3.35, 989),
}
LINK_EFFICIENCY = 0.8   # of one direction's bandwidth (half the marketed figure): NCCL's measured bus bandwidth
H100_TOKENS_PER_S = 12859  # 7B LoRA+S2 at 8k, every layer recomputed, one H100 (docs/gpu-log.md, e801be0)
PRODUCT_SHARE = 0.68    # matrix products' share of that step (docs/gpu-log.md's op profile)
ATTENTION_SHARE = 0.2   # attention's share of that step at 8k with S2
ADAMW_BYTES = 30        # per updated element: read master, m, v, grad (f32), write master, m, v (f32), bf16 weight
GiB_ = 1e9              # the model speaks GB (10^9) like the link bandwidths


def step_compute_seconds(name, full, node, tokens):
    """One rank's forward+backward time for `tokens` tokens at 8k (not the optimizer update)."""
    _, _, layers, d, *_ = counts(name)
    p7, _, l7, d7, *_ = counts("7B")
    total = counts(name)[0]
    per_token = 1 / H100_TOKENS_PER_S
    # 13B from 7B: the products grow with the parameters, attention with layers x hidden
    per_token *= (1 - ATTENTION_SHARE) * total / p7 + ATTENTION_SHARE * layers * d / (l7 * d7)
    if full:  # + the weight gradients of every frozen product: 8 instead of 6 passes over the weights (recomputing)
        per_token *= 1 + PRODUCT_SHARE * (8 / 6 - 1)
    return tokens * per_token * NODES["8xH100"][2] / NODES[node][2]


def comm_model(name, full, stage, node, n=8, ctx=8192, micro_batches=8, bucket=2 ** 24):
    """(GB each rank sends per step, seconds exposed, seconds of compute + update, predicted node tokens/s)."""
    total, trainable, layers, d, f, v = counts(name, full=full)
    ring = (n - 1) / n
    link = NODES[node][0] / 2 * LINK_EFFICIENCY * GiB_  # bytes/s one way
    compute = step_compute_seconds(name, full, node, ctx * micro_batches)
    updated = trainable if stage == 0 else trainable / n
    update = updated * ADAMW_BYTES / (NODES[node][1] * 1e12)
    if stage == 0:
        sent = 2 * ring * trainable * 4
        exposed = sent / link
    elif stage == 2:
        reduce, gather = ring * trainable * 4, ring * trainable * 2
        sent = reduce + gather
        exposed = ring * min(bucket, trainable) * 4 / link + gather / link
    else:
        gathers = micro_batches * 2 * ring * total * 2
        reduces = micro_batches * ring * trainable * 4
        sent = gathers + reduces
        per_layer_compute = compute / micro_batches / layers / 3  # forward ~1/3 of forward+backward
        per_layer_gather = ring * (total - 2 * v * d) / layers * 2 / link
        edge_group = ring * 2 * v * d * 2 / link  # the embedding/LM-head group opens each pass, nothing to hide it
        exposed = micro_batches * (2 * edge_group + 2 * layers * max(0.0, per_layer_gather - per_layer_compute))
    seconds = compute + update + exposed
    return sent / GiB_, exposed, compute + update, n * ctx * micro_batches / seconds


def print_comm_model():
    print("Communication model, one node of 8 GPUs (NVLink; no measurement behind it yet): LongLoRA's recipe, 8k context,")
    print("per_device_train_batch_size 1, gradient_accumulation_steps 8 (65,536 tokens per GPU per optimizer step),")
    print(f"bf16 weights, f32 gradients; link = {LINK_EFFICIENCY:.0%} of one direction of the marketed NVLink bandwidth;")
    print(f"compute from one H100's measured {H100_TOKENS_PER_S} tokens/s (7B LoRA+S2 8k, recomputing), scaled to 13B by")
    print("parameters (all but attention) and layers x hidden (attention), to full fine-tuning by the extra weight-gradient")
    print("products, to the A100 by dense bf16 peak (312 vs 989 TFLOP/s); AdamW memory-bound on the elements a rank updates.\n")
    print("| node | model | training | ZeRO | GB sent / GPU / step | exposed comm (ms) | compute + update (s) "
          "| predicted tokens/s (node) | of 8 GPUs without comm | memory at 8k (GiB/GPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for node in NODES:
        for name in ("7B", "13B"):
            for full in (False, True):
                for stage in (0, 2, 3):
                    sent, exposed, busy, tps = comm_model(name, full, stage, node)
                    ideal = 8 * 65536 / busy
                    mem = memory(name, 8192, stage, 8, full=full)
                    fits = "" if mem < 78 else " (does not fit 80 GB)"
                    print(f"| {node} | {name} | {'full' if full else 'LoRA+'} | {stage} | {sent:.1f} | "
                          f"{exposed * 1e3:.0f} | {busy:.2f} | {tps:,.0f} | {tps / ideal:.1%} | {mem:.0f}{fits} |")


def main():
    if "--comm_model" in sys.argv[1:]:
        print_comm_model()
        return
    n = 8
    print("Assumptions: LoRA+ (r=8 on q,k,v,o + embedding + norms), bf16 weights/activations, fp32 masters, moments")
    print(f"and gradients for trainable parameters only, per-layer checkpointing, {n} GPUs, 8 micro-batches per step.\n")
    print("| model | params | trainable | ZeRO | comm / rank / step (GiB) |")
    print("|---|---|---|---|---|")
    for name in MODELS:
        total, trainable, *_ = counts(name)
        for stage in (0, 2, 3):
            print(f"| {name} | {total / 1e9:.2f}B | {trainable / 1e6:.1f}M | {stage} | {comm_per_step(name, stage, n):.2f} |")
    print("\n| model | context | ZeRO-0 GiB/GPU | ZeRO-2 GiB/GPU | ZeRO-3 GiB/GPU | fits 80 GiB with |")
    print("|---|---|---|---|---|---|")
    for name in MODELS:
        for ctx in (8192, 16384, 32768, 65536, 100000):
            m = [memory(name, ctx, s, n) for s in (0, 2, 3)]
            fit = next((f"ZeRO-{s}" for s, x in zip((0, 2, 3), m) if x < 78), "none")
            print(f"| {name} | {ctx} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | {fit} |")
    print()
    print_comm_model()


if __name__ == "__main__":
    main()
