#!/usr/bin/env python3
"""Fixtures for parity with Hugging Face ``transformers`` and ``peft`` (tests/test_hf_checkpoint.cpp, test_peft.cpp).

Mode 1 (default): a tiny random transformers model and its logits
---------------------------------------------------------------------
    python3 scripts/make_hf_fixtures.py [--out tests/fixtures]

builds a random ``LlamaForCausalLM`` (GQA 4 heads / 2 KV heads, hidden 32, intermediate 64, 2 layers, vocab 37,
rms_norm_eps 1e-6, ``rope_scaling={"type": "linear", "factor": 2.0}``; norms and weights perturbed so every tensor
matters), saves it with ``save_pretrained(safe_serialization=True, max_shard_size="30KB")`` (so it is sharded with an
index, in whatever config.json form the installed transformers writes) into ``<out>/hf_tiny/``, and writes fixed
tokens ``input_ids`` int32 [2, 16] and their ``logits`` float32 [2, 16, 37] (eager attention, fp32) into
``<out>/hf_tiny_logits.safetensors``. ``HfParity.TransformersLogits`` loads the folder with our loader and compares
our CPU forward's logits (relative error <= 1e-4). Reruns reproduce the same values (fixed torch seed), but
transformers' own files (config.json, generation_config.json) carry its version, and the merged folder of mode 2
copies generation_config.json: after regenerating with another transformers version, rerun mode 2 too.

Mode 2: check OUR writers with transformers + peft (run this whenever the writers change)
-------------------------------------------------------------------------------------------
    make BUILD=build -j2 all
    LL_INTEROP_DIR=/tmp/ll_interop build/test_all --gtest_filter='PeftInterop.*'
    python3 scripts/make_hf_fixtures.py --check-ours /tmp/ll_interop [--out tests/fixtures]
    build/test_all --gtest_filter='PeftInterop.*'        # now passes again

The C++ test (with ``LL_INTEROP_DIR`` set) writes into that folder, deterministically:
  * ``adapter/``  our save_adapter() output for hf_tiny + LoRA (r 4, alpha 8, all seven projections) with trainable
    embed and norms, trained RoPE factor 4 recorded in ``longlora.json``;
  * ``merged/``   our merge pipeline's output (the code behind build/merge): sharded f32 safetensors + index +
    config.json with rope_scaling factor 4;
  * ``ours_logits.safetensors``: ``input_ids`` and our CPU logits of the LoRA model (``lora_logits``) and of the
    merged folder as loaded back by our loader (``merged_logits``).
This mode then checks, with transformers + peft:
  1. ``peft``: hf_tiny (rope factor overridden to 4, as LongLoRA's eval does) + ``PeftModel.from_pretrained(adapter)``;
     PEFT's state dict must hold exactly our tensors (names and values, modules_to_save included), and its logits
     must match ``lora_logits``;
  2. ``longlora``: hf_tiny + ``load_state_dict(torch.load(trainable_params.bin, weights_only=True), strict=False)``
     (LongLoRA's eval.py; the .bin must equal trainable_params.safetensors tensor for tensor; no unexpected keys
     allowed) + W += (alpha/r)·B·A done here by hand; logits must match ``lora_logits``;
     ``longlora_merge_script``: the steps of LongLoRA's merge_lora_weights_and_save_hf_model.py (the .bin into the
     base, PeftModel, merge_and_unload, save_pretrained), loaded back with factor 4: logits must match too;
  3. ``merged``: ``LlamaForCausalLM.from_pretrained(merged)`` must see rope factor 4 and give ``merged_logits``
     (and ``lora_logits``).
and records ``<out>/hf_interop.json``: per-check and max relative errors (||a-b|| / ||b||), ``passed`` (all <= 1e-4),
the transformers / peft / torch versions, and the sha256 of every file under ``adapter/`` and ``merged/``.
``PeftInterop.MatchesRecordedCheck`` regenerates those files and requires ``passed`` and equal sha256s, so any
change to the writers fails that test until this check is rerun. ``ours_logits.safetensors`` is not hashed: it
depends on the BLAS build, the writers' files do not.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

TOL = 1e-4
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
            vocab_size=37, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
            rope_scaling={"type": "linear", "factor": 2.0}, tie_word_embeddings=False)
BATCH, SEQ = 2, 16
TRAIN_ROPE_FACTOR = 4.0  # what the C++ interop case records in longlora.json


def rel_err(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def load_llama(path, rope_factor=None):
    import transformers
    from transformers import AutoConfig, LlamaForCausalLM
    config = AutoConfig.from_pretrained(path)
    if rope_factor is not None:  # LongLoRA's eval: overwrite the scaling with the training factor
        params = getattr(config, "rope_parameters", None)
        if isinstance(params, dict):  # transformers >= 5 keeps rope_theta in here too
            config.rope_parameters = {**params, "rope_type": "linear", "type": "linear", "factor": rope_factor}
        else:
            config.rope_scaling = {"type": "linear", "factor": rope_factor}
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model = LlamaForCausalLM.from_pretrained(path, config=config, attn_implementation="eager",
                                             **{dtype_key: torch.float32})
    return model.eval()


def rope_factor_of(config):
    scaling = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return float(scaling.get("factor", 1.0))


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids.long()).logits.float()


def make_tiny(out):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(1234)
    model = LlamaForCausalLM(LlamaConfig(**TINY)).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms: away from 1 so a wrong norm shows
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:  # larger than HF's 0.02 init so the logits are far from uniform
                p.copy_(0.15 * torch.randn_like(p))
    folder = os.path.join(out, "hf_tiny")
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="30KB")
    shards = sorted(f for f in os.listdir(folder) if f.startswith("model-"))
    assert len(shards) >= 3 and os.path.exists(os.path.join(folder, "model.safetensors.index.json")), shards
    ids = torch.randint(0, TINY["vocab_size"], (BATCH, SEQ), dtype=torch.int32)
    logits = logits_of(load_llama(folder), ids)  # from the saved folder: what the C++ loader will read
    save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()},
              os.path.join(out, "hf_tiny_logits.safetensors"),
              metadata={"format": "pt", "transformers_version": __import__("transformers").__version__})
    print(f"wrote {folder} ({len(shards)} shards) and hf_tiny_logits.safetensors; logits std {logits.std():.3f}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def check_ours(out, ours):
    import peft
    import transformers
    from peft import PeftModel, get_peft_model_state_dict

    tiny = os.path.join(out, "hf_tiny")
    adapter, merged = os.path.join(ours, "adapter"), os.path.join(ours, "merged")
    mine = load_file(os.path.join(ours, "ours_logits.safetensors"))
    ids, lora_logits, merged_logits = mine["input_ids"], mine["lora_logits"], mine["merged_logits"]
    lora_logits = lora_logits.reshape(BATCH, SEQ, -1)
    merged_logits = merged_logits.reshape(BATCH, SEQ, -1)
    errors = {}

    # 1. PEFT loads our adapter folder: exactly our tensors, and the same function.
    pm = PeftModel.from_pretrained(load_llama(tiny, TRAIN_ROPE_FACTOR), adapter).eval()
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    state = get_peft_model_state_dict(pm)
    assert set(state) == set(saved), f"PEFT state dict keys differ: {sorted(set(state) ^ set(saved))}"
    for k, v in saved.items():
        assert torch.equal(state[k].float(), v.float()), f"PEFT did not load {k}"
    errors["peft_vs_ours_lora"] = rel_err(logits_of(pm, ids), lora_logits)

    # 2. LongLoRA's way (eval.py): trainable_params.bin torch.load-ed into the base (strict=False), then the LoRA
    #    product by hand. torch >= 2.6 loads with weights_only=True by default; ask for it so older ones check it too.
    #    The .bin must hold exactly the tensors of trainable_params.safetensors (names, dtypes, bytes).
    base = load_llama(tiny, TRAIN_ROPE_FACTOR)
    trainable = torch.load(os.path.join(adapter, "trainable_params.bin"), map_location=base.device, weights_only=True)
    twin = load_file(os.path.join(adapter, "trainable_params.safetensors"))
    assert type(trainable) is dict and set(trainable) == set(twin), \
        f"trainable_params.bin names differ from the .safetensors: {sorted(set(trainable) ^ set(twin))}"
    for k, v in twin.items():
        assert trainable[k].dtype == v.dtype and torch.equal(trainable[k], v), f"trainable_params.bin differs at {k}"
    result = base.load_state_dict(trainable, strict=False)
    assert not result.unexpected_keys, f"trainable_params names unknown to transformers: {result.unexpected_keys}"
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    scale = cfg["lora_alpha"] / cfg["r"]
    params = dict(base.named_parameters())
    prefix = "base_model.model."
    with torch.no_grad():
        for k, a in saved.items():
            if ".lora_A." in k:
                b = saved[k.replace(".lora_A.", ".lora_B.")]
                params[k[len(prefix):].replace(".lora_A.weight", ".weight")] += scale * (b.double() @ a.double()).float()
    errors["longlora_vs_ours_lora"] = rel_err(logits_of(base, ids), lora_logits)

    # 2b. LongLoRA's merge_lora_weights_and_save_hf_model.py, step by step (f32 on CPU instead of fp16 on a GPU; no
    #     tokenizer to resize with): trainable_params.bin into the base, PeftModel over it, merge_and_unload,
    #     save_pretrained; that folder, loaded with the training RoPE factor as eval.py does, gives our logits.
    import tempfile
    model = load_llama(tiny)
    model.load_state_dict(torch.load(os.path.join(adapter, "trainable_params.bin"), map_location=model.device),
                          strict=False)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    with tempfile.TemporaryDirectory() as saved_by_script:
        model.save_pretrained(saved_by_script)
        errors["longlora_merge_script_vs_ours_lora"] = rel_err(
            logits_of(load_llama(saved_by_script, TRAIN_ROPE_FACTOR), ids), lora_logits)

    # 3. transformers loads our merged folder, with the RoPE factor we recorded.
    mm = load_llama(merged)
    factor = rope_factor_of(mm.config)
    assert factor == TRAIN_ROPE_FACTOR, f"merged config.json gives rope factor {factor}, expected {TRAIN_ROPE_FACTOR}"
    got = logits_of(mm, ids)
    errors["merged_vs_ours_merged"] = rel_err(got, merged_logits)
    errors["merged_vs_ours_lora"] = rel_err(got, lora_logits)

    files = {}
    for sub in ("adapter", "merged"):
        for name in sorted(os.listdir(os.path.join(ours, sub))):
            files[f"{sub}/{name}"] = sha256(os.path.join(ours, sub, name))
    worst = max(errors.values())
    record = {"passed": worst <= TOL, "max_rel_err": worst, "tolerance": TOL, "checks": errors,
              "merged_rope_factor": factor, "transformers_version": transformers.__version__,
              "peft_version": peft.__version__, "torch_version": torch.__version__, "files": files}
    with open(os.path.join(out, "hf_interop.json"), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(record, indent=2, sort_keys=True))
    return record["passed"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--check-ours", metavar="DIR", help="check the folders our C++ test wrote into DIR")
    args = ap.parse_args()
    if args.check_ours:
        sys.exit(0 if check_ours(args.out, args.check_ours) else 1)
    make_tiny(args.out)


if __name__ == "__main__":
    main()
