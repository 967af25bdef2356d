#!/usr/bin/env python3
"""Fixture for the passkey harness (tests/test_passkey.cpp): numpy RandomState parity and LongLoRA's prompts.

    pip install numpy sentencepiece
    python3 scripts/make_passkey_fixtures.py [--tokenizer ../shared/assets/llama2-tokenizer.model] \
        [--out tests/fixtures/passkey_reference.json]

Writes one JSON file with
  * ``mt19937``: raw 32-bit outputs of ``RandomState(seed)`` (``randint(0, 2**32)`` consumes exactly one draw);
  * ``randint``: sequences of ``RandomState(seed).randint(low, high)`` scalar draws over ranges that exercise every
    branch of numpy's bounded-integer code (empty range, masked 32-bit rejection, the full 32-bit range, 64-bit);
  * ``n_garbage``: LongLoRA's length sweep ``int(3.75 * (i + 1) * interval // 1024 * 1024)`` for a few settings;
  * ``prompts``: for seeds 0..9 at several n_garbage, the prefix length, key, prompt length, sha256 of the prompt
    and, with the real Llama-2 tokenizer (plain sentencepiece, as HF's slow LlamaTokenizer gives for this text),
    the prompt token count (BOS included) and the answer ids (BOS dropped); one small prompt in full with its ids.
The prompt construction below is passkey_retrivial.py's ``generate_prompt_landmark`` verbatim (numpy's global RNG).
"""

import argparse
import hashlib
import json
import os

from numpy import random

import numpy as np


def generate_prompt_landmark(n_garbage, seed):
    """Generates a text file and inserts an passkey at a random position."""
    rnd_state = random.get_state()
    random.seed(seed)
    n_garbage_prefix = random.randint(0, n_garbage)
    n_garbage_suffix = n_garbage - n_garbage_prefix

    task_description = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
    garbage = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    garbage_inf = " ".join([garbage] * 5000)
    assert len(garbage_inf) >= n_garbage
    garbage_prefix = garbage_inf[:n_garbage_prefix]
    garbage_suffix = garbage_inf[:n_garbage_suffix]
    pass_key = random.randint(1, 50000)
    information_line = f"The pass key is {pass_key}. Remember it. {pass_key} is the pass key."
    final_question = "What is the pass key? The pass key is"
    lines = [
        task_description,
        garbage_prefix,
        information_line,
        garbage_suffix,
        final_question,
    ]
    random.set_state(rnd_state)
    return "\n".join(lines), str(pass_key), int(n_garbage_prefix)


def n_garbage_sweep(max_tokens, interval):
    return [int(3.75 * (i + 1) * interval // 1024 * 1024) for i in range(max_tokens // interval)]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(here, "..", "..", "shared", "assets", "llama2-tokenizer.model"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "passkey_reference.json"))
    args = ap.parse_args()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    assert sp.bos_id() == 1 and sp.vocab_size() == 32000, "expected the Llama-2 tokenizer"

    out = {"numpy_version": np.__version__, "sentencepiece_version": spm.__version__}
    out["mt19937"] = []
    for seed in [0, 1, 42, 5489, 4294967295]:
        rs = np.random.RandomState(seed)
        draws = [int(v) for v in rs.randint(0, 2**32, size=1300, dtype=np.int64)]
        out["mt19937"].append({"seed": seed, "first": draws[:8], "at_620": draws[620:630], "at_1290": draws[1290:]})

    ranges = [(0, 1), (0, 2), (0, 3), (0, 10), (1, 50000), (0, 3072), (0, 119808), (-5, 5), (0, 2**31),
              (0, 2**31 + 1), (0, 2**32 - 1), (0, 2**32), (0, 2**32 + 1), (0, 2**40), (7, 2**33 + 3),
              (-2**62, 2**62), (-2**63, 2**63 - 1)]
    out["randint"] = []
    for seed in [0, 3, 123456]:
        for low, high in ranges:
            rs = np.random.RandomState(seed)
            vals = [int(rs.randint(low, high, dtype=np.int64)) for _ in range(12)]
            out["randint"].append({"seed": seed, "low": low, "high": high, "values": vals})

    out["n_garbage"] = [{"max_tokens": m, "interval": i, "values": n_garbage_sweep(m, i)}
                        for m, i in [(32768, 1000), (32000, 1000), (4096, 1024), (10000, 300), (100000, 4000)]]

    out["prompts"] = []
    for n_garbage in [3072, 7168, 31744, 119808]:
        for seed in range(10):
            prompt, answer, n_prefix = generate_prompt_landmark(n_garbage, seed)
            ids = [sp.bos_id()] + sp.encode(prompt)
            entry = {"seed": seed, "n_garbage": n_garbage, "n_prefix": n_prefix, "pass_key": int(answer),
                     "chars": len(prompt), "sha256": hashlib.sha256(prompt.encode()).hexdigest(),
                     "prompt_tokens": len(ids), "answer_ids": sp.encode(answer)}
            if n_garbage == 3072 and seed == 0:
                entry["prompt"] = prompt
                entry["prompt_ids"] = ids
            out["prompts"].append(entry)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
