#!/usr/bin/env bash
# The CPU comparison of issue 21: build/bench_cpu_train --case peft (ours) and scripts/bench_hf_baseline.py --device
# cpu (PyTorch + transformers + PEFT, same model, recipe and thread count), interleaved over --repeats rounds (ours,
# torch, ours, torch, ...) so that load from other processes hits both sides alike; prints every round, the median
# ratio with its range, and the ratio of the best rounds (each side's highest tokens/s: the least disturbed run), with
# and without checkpointing.
#   scripts/bench_cpu_vs_peft.sh [--repeats N] [--steps N] [--threads N] [--python PY] [--before BIN] [--out DIR]
# --before BIN also runs an older bench_cpu_train build in every round (a before/after table from one run).
# Results: DIR/round<i>_{ours,before,torch_ckpt,torch_nockpt}.json (default DIR: a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=5 steps=5 threads=2 python=python3 before="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --repeats) repeats=$2; shift ;;
    --steps) steps=$2; shift ;;
    --threads) threads=$2; shift ;;
    --python) python=$2; shift ;;
    --before) before=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "bench_cpu_vs_peft.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -x build/bench_cpu_train ] || { echo "bench_cpu_vs_peft.sh: build/bench_cpu_train missing: make build/bench_cpu_train" >&2; exit 2; }
[ -z "$before" ] || [ -x "$before" ] || { echo "bench_cpu_vs_peft.sh: --before $before is not an executable" >&2; exit 2; }
[ -n "$out" ] || out=$(mktemp -d)
mkdir -p "$out"
export OMP_NUM_THREADS=$threads
for i in $(seq 1 "$repeats"); do
  build/bench_cpu_train --case peft --steps "$steps" --json "$out/round${i}_ours.json" >/dev/null
  [ -z "$before" ] || "$before" --case peft --steps "$steps" --json "$out/round${i}_before.json" >/dev/null
  for ck in ckpt nockpt; do
    flag=(); [ $ck = ckpt ] || flag=(--no_checkpointing)
    "$python" scripts/bench_hf_baseline.py --device cpu --threads "$threads" --steps "$steps" "${flag[@]}" \
      --ours "$out/round${i}_ours.json" --json "$out/round${i}_torch_${ck}.json" 2>/dev/null | tail -1 |
      sed "s/^/round $i, $ck: /"
  done
done
"$python" - "$out" "$repeats" <<'PY'
import json, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
def load(i, what):
    try:
        return json.load(open(f"{out}/round{i}_{what}.json"))
    except FileNotFoundError:
        return None
print("\nmedian (and best) over the rounds:\n")
print(f"| checkpointing | ours before tokens/s | ours tokens/s | torch tokens/s | ours / torch: median (range) | "
      f"best ours / best torch | ours / before: median (best / best) |\n|---|---|---|---|---|---|---|")
for ck in (False, True):
    row = lambda j: next(r for r in j["rows"] if r["checkpointing"] == ck)["tokens_per_sec"]
    ours = [row(load(i, "ours")) for i in range(1, repeats + 1)]
    torch = [load(i, "torch_" + ("ckpt" if ck else "nockpt"))["tokens_per_second"] for i in range(1, repeats + 1)]
    ratios = [o / t for o, t in zip(ours, torch)]
    before = [row(j) for j in (load(i, "before") for i in range(1, repeats + 1)) if j]
    med = statistics.median
    b = f"{med(before):.0f} ({max(before):.0f})" if before else "-"
    speedup = (f"{med([o / x for o, x in zip(ours, before)]):.2f}× ({max(ours) / max(before):.2f}×)"
               if before else "-")
    print(f"| {'yes' if ck else 'no'} | {b} | {med(ours):.0f} ({max(ours):.0f}) | {med(torch):.0f} ({max(torch):.0f}) | "
          f"{med(ratios):.2f}× ({min(ratios):.2f}-{max(ratios):.2f}) | {max(ours) / max(torch):.2f}× | {speedup} |")
print(f"\n{repeats} interleaved rounds; JSON in {out}")
PY
