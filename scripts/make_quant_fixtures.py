#!/usr/bin/env python3
"""Writes tests/fixtures/quant_4bit.txt: bitsandbytes 4-bit quantization (nf4, fp4, with and without double
quantization) of deterministic and adversarial inputs, for QuantFormat.* in tests/test_quantize.cpp.

The expected outputs come from a reference written from bitsandbytes' published CUDA algorithm (kQuantizeBlockwise with
dQuantizeNF4 / dQuantizeFP4, and dQuantize<0> for the double quantization), in numpy float32 arithmetic:
  absmax = max|w| per block of 64; x = w * float32(1/absmax); code by strict `x > midpoint` (a tie takes the lower
  code); an all-zero block gives 0*inf = NaN, which fails every comparison: code 0, absmax stored as 0.
  Double quantization: offset = float32(mean of the absmax in double); absmax - offset (float32) quantized in blocks of
  256 with the signed dynamic map (binary search, then the nearer neighbour by midpoint).
When bitsandbytes is importable (its CPU path: `pip install bitsandbytes`), the script also quantizes the random case
with bitsandbytes.functional.quantize_4bit on the CPU and checks codes and absmax agree with the reference. Its CPU path
is not the CUDA kernel: it clamps absmax to 1e-38 (an all-zero block stores 1e-38 and codes 7), divides instead of
multiplying by the reciprocal in a ragged last block, and takes float32 midpoints; the adversarial cases therefore
follow the CUDA rule only (that is what GPU-made checkpoints hold).

Usage: python3 scripts/make_quant_fixtures.py [--check-bitsandbytes] > tests/fixtures/quant_4bit.txt
"""
import sys

import numpy as np
import torch

F32 = np.float32

def f32_literal(text):
    """A C/CUDA float literal's value: the decimal rounded once, directly to float32 (np.float32(float(text)) rounds
    twice, through double, and lands one ulp off for some of bitsandbytes' thresholds)."""
    from fractions import Fraction
    exact = Fraction(text)
    near = np.float32(float(text))
    candidates = [np.nextafter(near, F32(-2)), near, np.nextafter(near, F32(2))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1))


NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
# bitsandbytes' dQuantizeNF4 thresholds (float literals in the CUDA source), low to high.
NF4_MID = [f32_literal(t) for t in (
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683", "0.5016634166240692",
    "0.6427869200706482", "0.8614784181118011")]
# bitsandbytes' dQuantizeFP4 thresholds on |x|.
FP4_MID = {t: f32_literal(t) for t in ("0.29166667", "0.583333", "0.8333333", "0.4166667", "0.0859375",
                                       "0.20833333", "0.00260417")}


def nf4_code(x):
    x = F32(x)
    code = 0
    for k, t in enumerate(NF4_MID):  # strict comparisons; NaN is never greater
        if x > t:
            code = k + 1
    return code


def fp4_code(x):
    x = F32(x)
    sign = 8 if x < 0 else 0
    x = abs(x)
    m = FP4_MID
    if x > m["0.29166667"]:
        if x > m["0.583333"]:
            return (3 if x > m["0.8333333"] else 2) + sign
        return (5 if x > m["0.4166667"] else 4) + sign
    if x > m["0.0859375"]:
        return (7 if x > m["0.20833333"] else 6) + sign
    return (1 if x > m["0.00260417"] else 0) + sign


def dynamic_map():
    """create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted, float32 (bitsandbytes' algorithm)."""
    data = []
    for i in range(7):
        items = 2 ** i + 1
        bounds = torch.linspace(0.1, 1, items, dtype=torch.float32)  # torch's float32 linspace, as bitsandbytes
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += list(((10 ** (-6 + i)) * means).numpy())  # torch's float32 product with a Python scalar
        data += list((-(10 ** (-6 + i)) * means).numpy())
    data += [F32(0.0), F32(1.0)]
    assert len(data) == 256
    return np.array(sorted(data), dtype=np.float32)


DMAP = dynamic_map()


def dynamic_code(x):
    x = F32(x)
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = F32(-1.0), F32(1.0)
    val = DMAP[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower, pivot = pivot, val, pivot + i
        else:
            upper_pivot, upper, pivot = pivot, val, pivot - i
        val = DMAP[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = DMAP[upper_pivot]
    if lower_pivot == 0:
        lower = DMAP[lower_pivot]
    if x > val:
        return upper_pivot if x > (upper + val) * F32(0.5) else pivot
    return lower_pivot if x < (lower + val) * F32(0.5) else pivot


def quantize(w, quant_type, double_quant):
    w = np.asarray(w, dtype=np.float32)
    n = len(w)
    blocks = (n + 63) // 64
    code_of = nf4_code if quant_type == "nf4" else fp4_code
    padded = np.concatenate([w, np.zeros(n % 2, dtype=np.float32)])
    codes = np.zeros(len(padded), dtype=np.uint8)
    absmax = np.zeros(blocks, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(blocks):
            blk = padded[b * 64:(b + 1) * 64]
            m = np.max(np.abs(w[b * 64:(b + 1) * 64]))
            absmax[b] = m
            inv = F32(1.0) / m
            for j, v in enumerate(blk):
                codes[b * 64 + j] = code_of(v * inv)
    packed = (codes[0::2] << 4) | codes[1::2]
    if not double_quant:
        return packed, absmax, None, None
    offset = F32(np.sum(absmax.astype(np.float64)) / blocks)
    v = (absmax - offset).astype(np.float32)
    nested_blocks = (blocks + 255) // 256
    nested = np.zeros(nested_blocks, dtype=np.float32)
    qabs = np.zeros(blocks, dtype=np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(nested_blocks):
            blk = v[k * 256:(k + 1) * 256]
            m = np.max(np.abs(blk))
            nested[k] = m
            inv = F32(1.0) / m
            for j, x in enumerate(blk):
                qabs[k * 256 + j] = dynamic_code(x * inv)
    return packed, qabs, nested, offset


def lcg_values(n, seed):
    """Uniform values in [-1, 1) times a per-block power of two, from a 32-bit LCG (test_quantize.cpp repeats it)."""
    out = np.zeros(n, dtype=np.float32)
    s = seed & 0xFFFFFFFF
    for i in range(n):
        s = (1664525 * s + 1013904223) & 0xFFFFFFFF
        u = F32((s >> 8) / 16777216.0) * F32(2.0) - F32(1.0)
        out[i] = u * F32(2.0 ** ((i // 64) % 7 - 3))
    return out


def adversarial():
    """Blocks of 64: ties exactly at the NF4 and FP4 midpoints (absmax 1), an all-zero block, denormals, ±max float,
    a single nonzero element, negative zero; then a ragged odd tail."""
    one = [F32(1.0)]
    blocks = []
    blocks.append(one + list(NF4_MID) + [np.nextafter(t, F32(2)) for t in NF4_MID] +
                  [np.nextafter(t, F32(-2)) for t in NF4_MID] + [-t for t in NF4_MID[:3]] + [F32(0.0)] * 3 + [F32(-0.75)] * 12)
    fp4_mid = list(FP4_MID.values())
    blk = one + fp4_mid + [-t for t in fp4_mid]
    blk += [np.nextafter(t, F32(2)) for t in fp4_mid] + [np.nextafter(-t, F32(-2)) for t in fp4_mid]
    blocks.append(blk + [F32(0.5)] * (64 - len(blk)))
    blocks.append([F32(0.0)] * 64)
    blocks.append([F32(-0.0)] * 64)
    den = np.array([1e-45, -1e-45, 1.17e-38, -5.9e-39, 3e-40, 0.0, 2.8e-45, -1.4e-44], dtype=np.float32)
    blocks.append(list(np.tile(den, 8)))
    big = np.finfo(np.float32).max
    blocks.append([F32(big), F32(-big)] + [F32(big) * F32(k / 64.0) for k in range(62)])
    blocks.append([F32(0.0)] * 37 + [F32(-3.5)] + [F32(0.0)] * 26)
    flat = np.concatenate([np.array(b, dtype=np.float32) for b in blocks])
    assert all(len(b) == 64 for b in blocks), [len(b) for b in blocks]
    tail = np.array([0.25, -0.125, 0.0625, -1.0, 0.5, 0.0, 0.75, -0.5, 0.1], dtype=np.float32)
    return np.concatenate([flat, tail])


def hexf(a):
    return " ".join("%08x" % x for x in np.asarray(a, dtype=np.float32).view(np.uint32))


def hexb(a):
    return np.asarray(a, dtype=np.uint8).tobytes().hex()


def fnv1a(data):
    h = 0xcbf29ce484222325
    for byte in bytes(data):
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def emit(name, fmt, dq, w, generated=None):
    packed, absmax, nested, offset = quantize(w, fmt, dq)
    print("case %s %s %d %d" % (name, fmt, int(dq), len(w)))
    if generated is None:
        print("input " + hexf(w))
        print("codes " + hexb(packed))
    else:
        print("lcg %d" % generated)
        print("codes_fnv1a " + fnv1a(np.asarray(packed, dtype=np.uint8).tobytes()))
    print("absmax " + (hexb(absmax) if dq else hexf(absmax)))
    if dq:
        print("nested " + hexf(nested))
        print("offset " + hexf([offset]))
    return packed, absmax, nested, offset


def check_bitsandbytes(w, fmt, dq, ours):
    import bitsandbytes.functional as bnbf
    q, state = bnbf.quantize_4bit(torch.from_numpy(w.copy()), blocksize=64, quant_type=fmt, compress_statistics=dq)
    packed = q.reshape(-1).numpy()
    if fmt == "fp4":  # the CPU path codes a tiny negative value as +0 (code 0) where the CUDA rule gives -0 (code 8)
        def zero_sign(p):
            hi, lo = p >> 4, p & 15
            return (np.where(hi == 8, 0, hi) << 4) | np.where(lo == 8, 0, lo)
        packed, ours = zero_sign(packed), (zero_sign(ours[0]),) + tuple(ours[1:])
    assert np.array_equal(packed, ours[0]), "%s dq=%d: bitsandbytes' codes differ from the reference" % (fmt, dq)
    if not dq:
        assert np.array_equal(state.absmax.numpy().view(np.uint32), ours[1].view(np.uint32)), "absmax differs"
    else:
        ref_off = ours[3]
        off = np.float32(state.offset.item())
        print("# bitsandbytes %s dq: offset %r (reference %r); nested absmax %s" %
              (fmt, off, ref_off, "equal" if np.array_equal(state.state2.absmax.numpy(), ours[2]) else "differs"),
              file=sys.stderr)
        if off == ref_off:
            assert np.array_equal(state.absmax.numpy(), ours[1]), "double-quantized absmax codes differ"
    dmap = bnbf.create_dynamic_map(signed=True).numpy()
    assert np.array_equal(dmap.view(np.uint32), DMAP.view(np.uint32)), "dynamic map differs"
    print("# bitsandbytes CPU agrees on %s dq=%d (%d values)" % (fmt, dq, len(w)), file=sys.stderr)


def main():
    check = "--check-bitsandbytes" in sys.argv
    print("# bitsandbytes 4-bit quantization fixtures: scripts/make_quant_fixtures.py (do not edit by hand)")
    print("dynamic_map " + hexf(DMAP))
    adv = adversarial()
    for fmt in ("nf4", "fp4"):
        for dq in (False, True):
            emit("adversarial", fmt, dq, adv)
    # 300 blocks (two nested blocks of the double quantization) and a ragged odd tail.
    n = 64 * 300 + 33
    rnd = lcg_values(n, 12345)
    for fmt in ("nf4", "fp4"):
        for dq in (False, True):
            ours = emit("random", fmt, dq, rnd, generated=12345)
            if check:
                check_bitsandbytes(rnd[:64 * 300], fmt, dq, quantize(rnd[:64 * 300], fmt, dq))


if __name__ == "__main__":
    main()
