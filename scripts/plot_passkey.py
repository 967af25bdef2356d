#!/usr/bin/env python3
"""Plots passkey retrieval accuracy against prompt length from `build/eval passkey --json FILE` results.

    python3 scripts/plot_passkey.py results.json [more.json ...] [--labels a,b] [--out passkey.png] [--title T]

One line per JSON file: accuracy (fraction of the num_tests seeds whose key was reproduced exactly) at each length,
x = mean prompt tokens of that length (what passkey_retrivial.py keys its results by), with the individual trials as
faint dots at their own token counts. Needs matplotlib (pip install matplotlib).
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def label_of(result, path):
    model = result.get("peft_model") or result.get("base_model") or path
    return os.path.basename(os.path.normpath(model))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="JSON files written by build/eval passkey --json")
    ap.add_argument("--labels", default="", help="comma-separated legend labels, one per file")
    ap.add_argument("--out", default="", help="PNG to write (default: the first JSON file with .png)")
    ap.add_argument("--title", default="Passkey retrieval")
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else []
    if labels and len(labels) != len(args.results):
        ap.error(f"--labels has {len(labels)} entries for {len(args.results)} files")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, path in enumerate(args.results):
        with open(path) as f:
            r = json.load(f)
        if r.get("command") != "passkey":
            ap.error(f"{path} is not a passkey result (command: {r.get('command')})")
        points = r["points"]
        x = [p["mean_prompt_tokens"] for p in points]
        y = [p["accuracy"] for p in points]
        line, = ax.plot(x, y, marker="o", label=labels[i] if labels else label_of(r, path))
        tx = [t["prompt_tokens"] for p in points for t in p["trials"]]
        ty = [float(t["correct"]) for p in points for t in p["trials"]]
        ax.scatter(tx, ty, s=6, alpha=0.2, color=line.get_color())
        ctx = r.get("flags", {}).get("context_size", -1)
        if isinstance(ctx, int) and ctx > 0:
            ax.axvline(ctx, color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("prompt tokens (mean per length)")
    ax.set_ylabel("accuracy (exact key)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(args.title)
    ax.legend()
    fig.tight_layout()
    out = args.out or os.path.splitext(args.results[0])[0] + ".png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
