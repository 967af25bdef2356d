#!/usr/bin/env python3
"""Per-GPU memory and per-step communication for LongLoRA recipes under ZeRO stages 0/2/3.

Prints the tables of docs/scaling.md (run: python3 scripts/scaling_table.py). Pure arithmetic from the model
shapes; the assumptions are printed with the tables. No dependencies beyond the standard library.
"""

GiB = 1024 ** 3
MODELS = {  # hidden, intermediate, layers, heads, kv heads, vocab (LongLoRA adds [PAD]: 32001)
    "7B": (4096, 11008, 32, 32, 32, 32001),
    "13B": (5120, 13824, 40, 40, 40, 32001),
    "70B": (8192, 28672, 80, 64, 8, 32001),
}


def counts(name, lora_r=8):
    d, f, layers, h, hkv, v = MODELS[name]
    kv = d * hkv // h
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d
    total = layers * per_layer + 2 * v * d + d
    lora = layers * lora_r * ((d + d) * 2 + (d + kv) * 2)  # q, o: d→d; k, v: d→kv
    trainable = lora + v * d + (2 * layers + 1) * d  # LoRA+: adapters, embedding, norms
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


def memory(name, ctx, stage, n):
    total, trainable, *_ = counts(name)
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
    # stage 3: weights gathered for forward and again for backward (recompute), per micro-batch, + grads
    return (micro_batches * 2 * ring * total * 2 + ring * (trainable * 4 + trainable * 2)) / GiB


def main():
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


if __name__ == "__main__":
    main()
