#!/usr/bin/env python3
"""Tokenizer throughput: our tokenize job (build/tokenize) beside the Hugging Face `tokenizers` library's batch
encoding, on the same documents, the same machine and the same thread count, with a check that the ids agree.

    python3 scripts/bench_tokenizer.py [--threads N] [--repeats 3] [--corpus_mb 16] [--families gpt-neox,llama3,...]
                                        [--assets ../shared/assets/tokenizers] [--json out.json]

Needs build/tokenize (make build/tokenize) and a Python with `tokenizers` (e.g. pip install tokenizers).

The corpus (written to a temporary folder, deleted afterwards) is varied on purpose: the bundled King James text
(English prose), this Python's own standard library sources (code: indentation, runs of spaces, tabs), and the
multilingual fixture corpus (tests/fixtures/tokenizers/corpus.json: CJK, Arabic, Devanagari, Cyrillic, emoji,
digits, CRLF...) mixed into documents. Every document goes to both sides as one text: ours reads them from a JSONL
file, tokenizes and writes a token file (`--format llmc --bos false --eos false`; its own timer, which starts after
the tokenizer is loaded, so reading and writing the files count against us); `tokenizers` gets the same strings
in memory and runs encode_batch_fast (its fastest batch call, no offsets) and encode_batch, with
RAYON_NUM_THREADS = the thread count. Special-token strings are text on both sides (tokenizers'
encode_special_tokens = True). The two sides alternate, `--repeats` times each; the best run of each is reported,
with the machine's load average before and after (a shared machine makes every number noisy: compare within a row).
The ids of our token file are compared with tokenizers' for every document.
"""
import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAMILIES = ["gpt-neox", "llama3", "qwen2.5", "mistral-7b-v0.1"]

# Runs in a child process so that RAYON_NUM_THREADS applies: times the batch calls, dumps the ids once.
HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer
path, docs_path, ids_out, calls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
docs = [json.loads(line)["text"] for line in open(docs_path, encoding="utf-8")]
tok = Tokenizer.from_file(path)
tok.encode_special_tokens = True
result = {}
for call in calls:
    fn = getattr(tok, call)
    t0 = time.perf_counter()
    enc = fn(docs, add_special_tokens=False)
    result[call] = time.perf_counter() - t0
    result["tokens"] = sum(len(e.ids) for e in enc)
    if ids_out != "-":
        with open(ids_out, "w") as f:
            json.dump([e.ids for e in enc], f)
        ids_out = "-"
print(json.dumps(result))
"""


def load_average():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def build_corpus(target_bytes, seed=1):
    rng = random.Random(seed)
    docs = []
    kjv = open(os.path.join(ROOT, "data", "kjv-genesis-numbers.txt"), encoding="utf-8").read()
    paragraphs = kjv.split("\n\n")
    for i in range(0, len(paragraphs), 30):
        docs.append("\n\n".join(paragraphs[i:i + 30]))
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.append(f.read())
    corpus = json.load(open(os.path.join(ROOT, "tests", "fixtures", "tokenizers", "corpus.json"), encoding="utf-8"))
    lines = [c["text"] for c in corpus["cases"] if c.get("text")]
    for _ in range(len(docs) // 2):
        docs.append(" ".join(rng.choice(lines) for _ in range(40)))
    rng.shuffle(docs)
    out, size = [], 0
    while size < target_bytes:  # repeat the mix (shuffled again) up to the size asked for
        for d in docs:
            out.append(d)
            size += len(d.encode("utf-8"))
            if size >= target_bytes:
                break
        rng.shuffle(docs)
    return out


def read_token_file(path):
    import array
    with open(path, "rb") as f:
        header = array.array("i")
        header.frombytes(f.read(1024))
        magic, _, count = header[0], header[1], header[2]
        data = array.array("H" if magic == 20240520 else "I")
        data.frombytes(f.read())
    assert len(data) == count, (path, len(data), count)
    return data


def run_ours(tokenize, tokenizer, docs_path, out_path, threads):
    cmd = [tokenize, "--tokenizer", tokenizer, "--input", docs_path, "--output", out_path, "--format", "llmc",
           "--bos", "false", "--eos", "false", "--threads", str(threads), "--progress", "false"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"build/tokenize failed: {p.stderr}")
    m = re.search(r"done: .*?, ([0-9.]+) s ->", p.stderr)
    if not m:
        sys.exit(f"cannot read the time from build/tokenize's summary: {p.stderr}")
    return float(m.group(1))


def run_theirs(python, tokenizer_json, docs_path, ids_out, threads, calls):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    p = subprocess.run([python, "-c", HF_CHILD, tokenizer_json, docs_path, ids_out, ",".join(calls)],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"the tokenizers side failed: {p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--corpus_mb", type=float, default=16)
    ap.add_argument("--families", default=",".join(FAMILIES))
    assets = os.environ.get("LONGLORA_ASSETS") or os.path.join(ROOT, "..", "shared", "assets")
    ap.add_argument("--assets", default=os.path.join(assets, "tokenizers"))
    ap.add_argument("--tokenize", default=os.path.join(ROOT, "build", "tokenize"))
    ap.add_argument("--python", default=sys.executable, help="a Python with the tokenizers library")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not os.access(args.tokenize, os.X_OK):
        sys.exit(f"{args.tokenize} not found: make build/tokenize first")

    with tempfile.TemporaryDirectory(prefix="bench_tokenizer_") as tmp:
        docs = build_corpus(int(args.corpus_mb * 1e6))
        docs_path = os.path.join(tmp, "docs.jsonl")
        with open(docs_path, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        corpus_bytes = sum(len(d.encode("utf-8")) for d in docs)
        state = {"cpus": os.cpu_count(), "threads": args.threads, "documents": len(docs),
                 "corpus_bytes": corpus_bytes, "load_before": load_average()}
        print(f"corpus: {len(docs)} documents, {corpus_bytes / 1e6:.1f} MB; {args.threads} threads on "
              f"{os.cpu_count()} CPUs; load average before {state['load_before'][0]:.2f}")
        rows = []
        for family in args.families.split(","):
            tokenizer_json = os.path.join(args.assets, family, "tokenizer.json")
            if not os.path.exists(tokenizer_json):
                print(f"{family}: {tokenizer_json} not found, skipped")
                continue
            out_path = os.path.join(tmp, family + ".bin")
            ids_path = os.path.join(tmp, family + ".ids.json")
            ours, fast, batch, tokens = [], [], [], None
            for r in range(args.repeats):  # alternating
                ours.append(run_ours(args.tokenize, tokenizer_json, docs_path, out_path, args.threads))
                res = run_theirs(args.python, tokenizer_json, docs_path, ids_path if r == 0 else "-", args.threads,
                                 ["encode_batch_fast", "encode_batch"])
                fast.append(res["encode_batch_fast"])
                batch.append(res["encode_batch"])
                tokens = res["tokens"]
            theirs_ids = json.load(open(ids_path))
            flat = [i for ids in theirs_ids for i in ids]
            identical = list(read_token_file(out_path)) == flat
            row = {"family": family, "tokens": tokens, "ours_s": min(ours), "encode_batch_fast_s": min(fast),
                   "encode_batch_s": min(batch), "ids_identical": identical}
            for key in ("ours", "encode_batch_fast", "encode_batch"):
                row[key + "_tokens_per_s"] = tokens / row[key + "_s"]
            rows.append(row)
        state["load_after"] = load_average()

    print(f"\n| tokenizer | tokens | ours tokens/s | tokenizers encode_batch_fast | tokenizers encode_batch | "
          f"ours / fastest | ids identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        best = max(r["encode_batch_fast_tokens_per_s"], r["encode_batch_tokens_per_s"])
        print(f"| {r['family']} | {r['tokens']:,} | {r['ours_tokens_per_s'] / 1e6:.2f} M | "
              f"{r['encode_batch_fast_tokens_per_s'] / 1e6:.2f} M | {r['encode_batch_tokens_per_s'] / 1e6:.2f} M | "
              f"{r['ours_tokens_per_s'] / best:.2f}× | {'yes' if r['ids_identical'] else 'NO'} |")
    print(f"\nbest of {args.repeats} alternating runs each, {args.threads} threads; load average before "
          f"{state['load_before'][0]:.2f}, after {state['load_after'][0]:.2f} (1-minute)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": state, "rows": rows}, f, indent=2)
    if not all(r["ids_identical"] for r in rows):
        sys.exit("ids differ from the tokenizers library")


if __name__ == "__main__":
    main()
