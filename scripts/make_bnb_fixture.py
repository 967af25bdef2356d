#!/usr/bin/env python3
"""Writes tests/fixtures/hf_tiny_bnb_nf4: tests/fixtures/hf_tiny quantized and saved by transformers + bitsandbytes
themselves (nf4, double quantization, compute dtype bfloat16, weights loaded as float32), on the CPU. BnbFolder.*
reads it: the 4-bit folder layout as transformers writes it, and the values bitsandbytes computes.
Written with transformers 5 and bitsandbytes 0.50 (pip install bitsandbytes; its CPU path runs without a GPU).

Usage: python3 scripts/make_bnb_fixture.py [out_dir]
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures", "hf_tiny_bnb_nf4")
config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=torch.bfloat16)
model = AutoModelForCausalLM.from_pretrained(os.path.join(root, "tests", "fixtures", "hf_tiny"),
                                             quantization_config=config, device_map="cpu", dtype=torch.float32)
model.save_pretrained(out, safe_serialization=True)
print("wrote", out)
