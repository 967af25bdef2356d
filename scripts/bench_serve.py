#!/usr/bin/env python3
"""CPU (or GPU) throughput of a running build/serve, standard library only:

    build/serve --base_model M [--peft_model A] --port 8898 &
    python3 scripts/bench_serve.py http://127.0.0.1:8898 [--prompt_tokens 200] [--gen 64] [--clients 1,2,4]

prefill tokens/s (a fresh prompt of about --prompt_tokens tokens, cache_prompt false, 1 new token), decode tokens/s
(the server's own timing of --gen greedy tokens), and for each client count the total generated tokens/s over the
wall clock with that many concurrent requests (the server runs one at a time: this shows queueing, not batching).
Prints one JSON object.
"""
import argparse
import json
import threading
import time
import urllib.request


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--prompt_tokens", type=int, default=200)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    comp = a.base + "/v1/completions"
    words = ("the cat sat on the mat and looked at the dog " * 100).split()
    n_words = a.prompt_tokens
    while True:  # the longest run of words that tokenizes to at most --prompt_tokens tokens
        text = " ".join(words[:n_words])
        if len(post(a.base + "/tokenize", {"content": text})["tokens"]) <= a.prompt_tokens - 8:
            break
        n_words = int(n_words * 0.9)
    out = {"prefill": [], "decode": [], "clients": {}}
    for i in range(a.repeats):
        r = post(comp, {"prompt": f"{i} " + text, "max_tokens": 1, "temperature": 0, "cache_prompt": False})
        t = r["usage"]["timings"]
        out["prefill"].append({"tokens": r["usage"]["prompt_tokens"], "seconds": t["prefill_seconds"],
                               "tokens_per_second": r["usage"]["prompt_tokens"] / max(t["prefill_seconds"], 1e-9)})
        r = post(comp, {"prompt": f"{i} once upon a time", "max_tokens": a.gen, "temperature": 0,
                        "cache_prompt": False})
        out["decode"].append({"tokens": r["usage"]["completion_tokens"],
                              "tokens_per_second": r["usage"]["timings"]["decode_tokens_per_second"]})
    for n in [int(c) for c in a.clients.split(",")]:
        done = []

        def client(k):
            r = post(comp, {"prompt": f"client {k} once upon a time", "max_tokens": a.gen, "temperature": 0,
                            "cache_prompt": False})
            done.append(r["usage"]["completion_tokens"])

        t0 = time.time()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.time() - t0
        out["clients"][n] = {"generated": sum(done), "seconds": wall, "tokens_per_second": sum(done) / wall}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
