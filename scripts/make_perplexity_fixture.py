#!/usr/bin/env python3
"""Fixture for `build/eval perplexity` (tests/test_eval_perplexity.cpp): LongLoRA's eval.py over tests/fixtures/hf_tiny.

    python3 scripts/make_perplexity_fixture.py [--out tests/fixtures]

Writes ``ppl_tokens.bin`` (1400 raw little-endian uint16 token ids < 37, numpy RandomState(0)) and
``perplexity_reference.json`` with, per case, what eval.py's ``evaluate`` returns on that file: ``val_loss``
(mean of per-batch HF losses), ``val_perplexity`` (2.71828 ** val_loss), ``val_acc`` exactly as eval.py computes it
(per batch: correct predictions / seq_len — not / (batch · seq_len), so it is batch_size times the accuracy when
batch_size > 1), the plain accuracy (correct / positions, averaged over batches), eval_distributed.py's token-weighted
perplexity, and the windows. The model is transformers' LlamaForCausalLM in fp32 with eager attention (eval.py's
flash path is full causal attention, the same function). The functions ``get_as_batch`` and ``evaluate`` follow
eval.py line by line (tqdm and printing dropped); ``drop_last=False`` is eval_distributed.py's window set.

Cases:
  * ``config_factor``: seq_len 48, batch 3, stride 256; hf_tiny's own rope_scaling factor 2 (context_size defaults
    to seq_len = 48 <= max_position_embeddings 64, so eval.py keeps the config's factor);
  * ``ceil_rule``: hf_tiny with rope_scaling removed from config.json, context_size 200: eval.py sets factor
    ceil(200 / 64) = 4; seq_len 100 (> max_position_embeddings), batch 2, stride 128;
  * ``no_drop``: seq_len 64, batch 1, stride 200, all starts kept, factor 2.
"""

import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from make_hf_fixtures import load_llama


def get_as_batch(data, seq_length, batch_size, sliding_window=256, drop_last=True):
    all_ix = list(range(0, len(data) - seq_length, sliding_window))
    if drop_last:
        all_ix.pop()
    for idx in range(0, len(all_ix), batch_size):
        ix = all_ix[idx:idx + batch_size]
        assert all([idx + seq_length + 1 <= len(data) for idx in ix])
        x = torch.stack([torch.from_numpy((data[i:i + seq_length]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + seq_length]).astype(np.int64)) for i in ix])
        yield ix, x, y


@torch.no_grad()
def evaluate(model, data, batch_size, seq_length, sliding_window=256, drop_last=True):
    loss_list_val, acc_list, plain_acc, starts = [], [], [], []
    nll_sum, nll_count = 0.0, 0
    for ix, x, y in get_as_batch(data, seq_length, batch_size, sliding_window, drop_last):
        starts += ix
        val_loss, acc, cnt = 0.0, 0.0, 0
        for i in range(0, x.shape[1], seq_length):
            part_len = x[:, i:i + seq_length].shape[1]
            outputs = model(input_ids=x[:, i:i + seq_length], labels=x[:, i:i + seq_length].contiguous(),
                            use_cache=False)
            val_loss = outputs.loss * part_len + val_loss
            acc = ((outputs.logits.argmax(-1) == y[:, i:i + seq_length]).float().sum()) + acc
            cnt += part_len
            # eval_distributed.py's token-weighted perplexity and the plain accuracy, from the same logits.
            logits = outputs.logits.double()
            nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
            nll_sum += nll.item()
            nll_count += x.shape[0] * (x.shape[1] - 1)
            plain_acc.append((outputs.logits.argmax(-1) == y).float().mean().item())
        val_loss /= cnt
        acc /= cnt
        loss_list_val.append(val_loss.item())
        acc_list.append(acc.item())
    val_loss = torch.as_tensor(loss_list_val, dtype=torch.float64).mean().item()
    return {"val_loss": val_loss, "val_perplexity": 2.71828 ** val_loss,
            "val_acc": torch.as_tensor(acc_list, dtype=torch.float64).mean().item(),
            "accuracy": float(np.mean(plain_acc)), "perplexity_token_weighted": math.exp(nll_sum / nll_count),
            "tokens_scored": nll_count, "num_windows": len(starts), "window_starts": starts,
            "batch_losses": loss_list_val}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()
    tiny = os.path.join(args.out, "hf_tiny")
    tokens = np.random.RandomState(0).randint(0, 37, size=1400).astype("<u2")
    tokens.tofile(os.path.join(args.out, "ppl_tokens.bin"))
    data = np.memmap(os.path.join(args.out, "ppl_tokens.bin"), dtype=np.uint16, mode="r")

    cases = [
        dict(name="config_factor", rope_factor=None, expected_factor=2.0, seq_len=48, batch_size=3,
             sliding_window=256, drop_last=True, context_size=-1, strip_rope_scaling=False),
        dict(name="ceil_rule", rope_factor=4.0, expected_factor=4.0, seq_len=100, batch_size=2, sliding_window=128,
             drop_last=True, context_size=200, strip_rope_scaling=True),
        dict(name="no_drop", rope_factor=None, expected_factor=2.0, seq_len=64, batch_size=1, sliding_window=200,
             drop_last=False, context_size=-1, strip_rope_scaling=False),
    ]
    out = {"tokens_file": "ppl_tokens.bin", "num_tokens": len(data), "cases": []}
    for c in cases:
        model = load_llama(tiny, c["rope_factor"])
        stats = evaluate(model, data, c["batch_size"], c["seq_len"], c["sliding_window"], c["drop_last"])
        out["cases"].append({**{k: v for k, v in c.items() if k != "rope_factor"}, **stats})
        print(c["name"], {k: stats[k] for k in ("val_loss", "val_perplexity", "val_acc", "num_windows")})
    with open(os.path.join(args.out, "perplexity_reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
