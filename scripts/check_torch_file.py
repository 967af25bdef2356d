#!/usr/bin/env python3
"""Check that PyTorch reads the .bin files our C++ writer makes (src/io/torch_file.h), and record it.

Our adapters carry ``trainable_params.bin`` for LongLoRA's scripts, which ``torch.load`` it. The writer is our own
code (a zip writer and a pickle emitter); this script is the proof that torch reads what it writes.

Rerun whenever src/io/torch_file.*, src/io/zip_writer.* or src/io/pickle_writer.* change:

    make -j2 build/test_all
    LL_TORCH_FILE_DIR=/tmp/ll_torch_file build/test_all --gtest_filter='TorchFile.MatchesRecordedCheck'
    python3 scripts/check_torch_file.py /tmp/ll_torch_file [--out tests/fixtures]
    build/test_all --gtest_filter='TorchFile.*'        # now passes again

The C++ test writes each sample ``<name>.bin`` together with ``<name>.safetensors`` holding the same tensors (the
reference: safetensors is read by an independent library). For every sample this script checks:
  * ``zipfile``: the archive opens, every CRC matches (testzip), every entry is stored, tensor data is 64-byte aligned;
  * ``torch.load(path, weights_only=True)``: a plain dict with exactly the reference's names, each
    tensor's dtype, shape and bytes equal to the reference;
  * the same with ``mmap=True`` and with ``map_location="meta"`` (shapes and dtypes), the other two ways torch reads it.
It writes ``<out>/torch_file_check.json``: per-sample results, ``passed``, the torch version and the sha256 of every
file, which ``TorchFile.MatchesRecordedCheck`` compares with what the writer produces now.
"""

import argparse
import hashlib
import json
import os
import struct
import sys
import zipfile

import torch
from safetensors import safe_open


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def reference(path):
    with safe_open(path, framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                     b.reshape(-1).view(torch.uint8))


def check_zip(path):
    with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
        bad = z.testzip()
        assert bad is None, f"{path}: CRC mismatch in {bad}"
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED, f"{path}: {info.filename} is compressed"
            if "/data/" in info.filename:
                raw.seek(info.header_offset)
                header = raw.read(30)
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                assert start % 64 == 0, f"{path}: {info.filename} data starts at {start}, not 64-aligned"
        return [i.filename for i in z.infolist()]


def check_sample(path, ref_path):
    entries = check_zip(path)
    ref = reference(ref_path)
    got = torch.load(path, weights_only=True)
    assert type(got) is dict, f"{path}: torch.load returned {type(got)}"
    assert set(got) == set(ref), f"{path}: names differ: {sorted(set(got) ^ set(ref))}"
    for name, t in ref.items():
        assert same_bits(got[name], t), f"{path}: `{name}` differs: {got[name].dtype} {tuple(got[name].shape)} " \
                                        f"vs {t.dtype} {tuple(t.shape)}"
        assert got[name].is_contiguous() and not got[name].requires_grad, name
    mapped = torch.load(path, weights_only=True, mmap=True)
    for name, t in ref.items():
        assert same_bits(mapped[name], t), f"{path}: `{name}` differs when memory-mapped"
    meta = torch.load(path, weights_only=True, map_location="meta")
    for name, t in ref.items():
        assert meta[name].dtype == t.dtype and meta[name].shape == t.shape, f"{path}: `{name}` on meta"
    return {"tensors": len(ref), "zip_entries": len(entries),
            "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in ref.values()})}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("dir", help="the folder LL_TORCH_FILE_DIR pointed at")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures"))
    args = ap.parse_args()

    samples = sorted(f[:-4] for f in os.listdir(args.dir) if f.endswith(".bin"))
    assert samples, f"no .bin files in {args.dir}"
    results, passed = {}, True
    for name in samples:
        try:
            results[name] = check_sample(os.path.join(args.dir, name + ".bin"),
                                         os.path.join(args.dir, name + ".safetensors"))
            results[name]["ok"] = True
        except Exception as e:  # record every sample's outcome, then fail
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            passed = False
    files = {f: sha256(os.path.join(args.dir, f)) for f in sorted(os.listdir(args.dir))}
    record = {"passed": passed, "samples": results, "torch_version": torch.__version__, "files": files}
    with open(os.path.join(args.out, "torch_file_check.json"), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(record, indent=2, sort_keys=True))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
