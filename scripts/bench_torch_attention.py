#!/usr/bin/env python3
"""Attention baseline for `bench_cuda attention`: PyTorch's SDPA with the flash backend (FlashAttention-2's kernels
as built into torch) on the same shapes, same card: causal, head dim 128, 16 heads, L = 8k/16k/32k,
batch = max(1, 16k/L), bf16; forward, forward+backward, TFLOP/s in FlashAttention's convention
(forward 4·B·H·L²·D / 2 for causal, backward 2.5× forward). Also S2 as LongLoRA's code runs it (half the heads
rolled by -G/2, the groups folded into the batch, causal SDPA per group), as time relative to full attention.

Given --ours FILE (the JSON of `build/bench_cuda attention --json FILE`), prints ours / theirs per row.
Timing: CUDA events, after warm-up, median of --iters runs. Needs torch on a CUDA machine.
"""
import argparse
import json


def fa_flops(batch, seq, heads, dim, causal=True, backward=True):
    f = 4.0 * batch * seq * seq * heads * dim / (2.0 if causal else 1.0)
    return f * (3.5 if backward else 1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", default="")
    ap.add_argument("--ours", default="", help="bench_cuda attention JSON to compare with")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    heads, dim = 16, 128

    def median_ms(fn):
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]

    def s2_sdpa(q, k, v):  # [B, H, L, D], LongLoRA's shift-and-fold, ratio 1/4
        b, h, seq, d = q.shape
        group, half, n = seq // 4, h // 2, 4

        def fold(x):
            x = torch.cat([x[:, :half], x[:, half:].roll(-(group // 2), dims=2)], dim=1)
            return x.reshape(b, h, n, group, d).permute(0, 2, 1, 3, 4).reshape(b * n, h, group, d)

        o = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), is_causal=True)
        o = o.reshape(b, n, h, group, d).permute(0, 2, 1, 3, 4).reshape(b, h, seq, d)
        return torch.cat([o[:, :half], o[:, half:].roll(group // 2, dims=2)], dim=1)

    ours = {}
    if args.ours:
        for row in json.load(open(args.ours))["results"]:
            ours[(row["seq_len"], row["mask"])] = row

    rows = []
    print(f"PyTorch {torch.__version__} SDPA flash on {torch.cuda.get_device_name()}")
    print(f"{'seq':>6} {'mask':>6} {'batch':>5} {'fwd ms':>8} {'fwd+bwd ms':>11} {'fwd TF/s':>9} {'f+b TF/s':>9}"
          f" {'vs full':>8} {'ours f+b ms':>12} {'ours/theirs speed':>18}")
    gen = torch.Generator(device=dev).manual_seed(0)
    for seq in (8192, 16384, 32768):
        batch = max(1, 16384 // seq)
        q, k, v, do = (torch.randn(batch, heads, seq, dim, device=dev, dtype=torch.bfloat16, generator=gen)
                       for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_(True)
        full_ms = None
        for mask in ("causal", "s2"):
            attn = (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)) if mask == "causal" else \
                (lambda: s2_sdpa(q, k, v))

            def fwd_bwd():
                o = attn()
                torch.autograd.grad(o, (q, k, v), do)

            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                with torch.no_grad():
                    f_ms = median_ms(attn)
                fb_ms = median_ms(fwd_bwd)
            full_ms = full_ms or fb_ms
            row = {"seq_len": seq, "mask": mask, "batch": batch, "heads": heads, "head_dim": dim, "ms_fwd": f_ms,
                   "ms_fwd_bwd": fb_ms, "time_vs_full": fb_ms / full_ms}
            if mask == "causal":
                row["tflops_fwd"] = fa_flops(batch, seq, heads, dim, backward=False) / f_ms / 1e9
                row["tflops_fa_convention"] = fa_flops(batch, seq, heads, dim) / fb_ms / 1e9
            o = ours.get((seq, mask))
            if o:
                row["ours_ms_fwd_bwd"] = o["ms_fwd_bwd"]
                row["ours_speedup"] = fb_ms / o["ms_fwd_bwd"]
            rows.append(row)
            print(f"{seq:>6} {mask:>6} {batch:>5} {f_ms:>8.2f} {fb_ms:>11.2f} {row.get('tflops_fwd', 0):>9.1f}"
                  f" {row.get('tflops_fa_convention', 0):>9.1f} {row['time_vs_full']:>7.2f}x"
                  f" {row.get('ours_ms_fwd_bwd', 0):>12.2f} {row.get('ours_speedup', 0):>17.2f}x")
        del q, k, v, do
        torch.cuda.empty_cache()
    print("TF/s in FlashAttention's convention (causal: half the L² pairs; fwd+bwd = 3.5× forward FLOPs); "
          "ours/theirs > 1: ours is faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "torch_sdpa_flash_attention", "torch": torch.__version__,
                       "device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
