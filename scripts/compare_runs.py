#!/usr/bin/env python3
"""Compares what two runs wrote, for scripts/gpu_ranks_check.sh. Prints one line and exits 0 (agree), 1 (differ) or
2 (a file is missing or unreadable: named in the message).

  compare_runs.py train RUN REF --steps N (--exact | --loss_rel X --weights_rel Y)
      build/train output folders: the `loss` of each of the N lines of metrics.jsonl (each within X of the
      reference's, relative), and checkpoint-N/trainable.safetensors (relative L2 distance of all tensors, in name
      order, below Y). --exact: losses equal as logged and every tensor's bytes equal.
  compare_runs.py eval RUN.json REF.json --world_size N
      build/eval JSON: the results (perplexity, losses, accuracy, windows, tokens) equal exactly, and RUN's
      world_size is N.

Standard library only (numpy, when importable, only makes the weight distance faster).
"""
import argparse
import json
import math
import os
import struct
import sys
from array import array


class InputError(Exception):
    pass


def losses(run):
    path = os.path.join(run, "metrics.jsonl")
    try:
        with open(path) as f:
            return [json.loads(line)["loss"] for line in f if line.strip()]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: {e}")


def tensors(path):
    """{name: (dtype, raw bytes)} of a safetensors file."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
        (n,) = struct.unpack_from("<Q", blob, 0)
        header = json.loads(blob[8:8 + n])
    except (OSError, ValueError, struct.error) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})")
    data = blob[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        out[name] = (entry["dtype"], data[begin:end])
    return out


def as_floats(dtype, raw):
    if dtype == "F32":
        return array("f", raw)
    if dtype == "F64":
        return array("d", raw)
    if dtype == "BF16":  # the upper half of an f32
        halves = array("H", raw)
        return array("f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves)))
    if dtype == "F16":
        return array("f", struct.unpack(f"<{len(raw) // 2}e", raw))
    raise InputError(f"tensor dtype {dtype} is not compared (F32, F64, BF16, F16)")


def squared_sums(a, b):
    """(sum (a-b)^2, sum b^2) of two float arrays."""
    try:
        import numpy as np
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(((x - y) ** 2).sum()), float((y ** 2).sum())
    except ImportError:
        return sum((p - q) ** 2 for p, q in zip(a, b)), sum(q * q for q in b)


def compare_train(args):
    a, b = losses(args.run), losses(args.ref)
    for run, got in ((args.run, a), (args.ref, b)):
        if len(got) != args.steps:
            raise InputError(f"{run}/metrics.jsonl: {len(got)} steps logged, expected {args.steps}")
    file = f"checkpoint-{args.steps}/trainable.safetensors"
    ta, tb = tensors(os.path.join(args.run, file)), tensors(os.path.join(args.ref, file))
    if sorted(ta) != sorted(tb):
        print(f"different tensors in {file}: {sorted(set(ta) ^ set(tb))[:5]}")
        return 1
    loss_rel = max(abs(x - y) / max(abs(y), 1e-30) for x, y in zip(a, b))
    identical_losses = a == b
    identical_weights = all(ta[k] == tb[k] for k in ta)
    diff = norm = 0.0
    if not identical_weights:
        for k in sorted(ta):
            if ta[k][0] != tb[k][0] or len(ta[k][1]) != len(tb[k][1]):
                print(f"tensor {k}: {ta[k][0]} of {len(ta[k][1])} bytes against {tb[k][0]} of {len(tb[k][1])}")
                return 1
            d, n = squared_sums(as_floats(*ta[k]), as_floats(*tb[k]))
            diff, norm = diff + d, norm + n
    weights_rel = math.sqrt(diff / max(norm, 1e-30))
    print(f"losses: max relative difference {loss_rel:.3g} over {len(a)} steps "
          f"({'bit-identical' if identical_losses else 'not bit-identical'}); weights: relative L2 {weights_rel:.3g} "
          f"over {len(ta)} tensors ({'bit-identical' if identical_weights else 'not bit-identical'})")
    if args.exact:
        return 0 if identical_losses and identical_weights else 1
    return 0 if loss_rel <= args.loss_rel and weights_rel <= args.weights_rel else 1


RESULTS = ("perplexity", "perplexity_token_weighted", "loss", "accuracy", "num_windows", "tokens_scored")


def compare_eval(args):
    docs = []
    for path in (args.run, args.ref):
        try:
            with open(path) as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: {e}")
    run, ref = docs
    differ = [f"{k} {run.get(k)} vs {ref.get(k)}" for k in RESULTS if k not in ref or run.get(k) != ref.get(k)]
    if run.get("world_size") != args.world_size:
        differ.append(f"world_size {run.get('world_size')} (expected {args.world_size})")
    shown = ", ".join(f"{k} {ref.get(k)}" for k in RESULTS[:2])
    print(f"{shown}; " + ("equal, world_size " + str(args.world_size) if not differ else "differ: " + "; ".join(differ)))
    return 0 if not differ else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("run")
    t.add_argument("ref")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--exact", action="store_true")
    t.add_argument("--loss_rel", type=float, default=0.0)
    t.add_argument("--weights_rel", type=float, default=0.0)
    e = sub.add_parser("eval")
    e.add_argument("run")
    e.add_argument("ref")
    e.add_argument("--world_size", type=int, required=True)
    args = p.parse_args()
    try:
        return compare_train(args) if args.what == "train" else compare_eval(args)
    except InputError as err:
        print(f"compare_runs.py: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
