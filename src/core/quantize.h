// bitsandbytes' 4-bit weight quantization on the host: NF4 / FP4 codes in blocks of 64 with an f32 absmax per block,
// optionally double-quantized, into and out of the layout of core/dtype.h (quant_layout). The rules follow
// bitsandbytes' published CUDA kernels (kQuantizeBlockwise with dQuantizeNF4 / dQuantizeFP4 / dQuantize), value for
// value in IEEE float arithmetic:
//   absmax_b = max |w| over block b (64 consecutive elements of the row-major tensor; the last block may be shorter);
//   x = w · (1/absmax_b) (the reciprocal rounded to float first, then the product); the code is chosen by strict
//   comparisons x > threshold down bitsandbytes' decision tree (a value exactly on a midpoint takes the lower code).
//   An all-zero block has absmax 0, so x = 0·inf = NaN, which every comparison rejects: code 0 (NF4: −1.0, which
//   dequantizes to −0.0).
// Double quantization (compress_statistics): offset = mean(absmax) — summed in double, divided, rounded to float
// (bitsandbytes takes torch's float mean, whose summation order is the library's; the two can differ in the last
// bit) — then v = absmax − offset in float, quantized in blocks of 256 with the signed 8-bit dynamic map by
// bitsandbytes' binary search and midpoint rule (dQuantize<0>), each block with its f32 absmax.
// Dequantization, as bitsandbytes' float32 path: absmax_b = code2[q_b]·nested[b/256] (float), + offset (float);
// w = code[c]·absmax_b (float).
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace ll {

// The 16 values a code stands for (bitsandbytes' dequantization tables, in code order): NF4's normal-float values,
// or FP4's (sign bit 8, then the 3-bit table 0, 0.0052, 0.667, 1, 0.333, 0.5, 0.167, 0.25).
const float* quant_code_values(DType format);
// The 256 values of the signed 8-bit dynamic map (create_dynamic_map(signed=True, max_exponent_bits=7,
// total_bits=8)), sorted: the double quantization's code book.
const float* dynamic_map_values();

// One value's code (x = w / absmax, already scaled).
uint8_t nf4_code(float x);
uint8_t fp4_code(float x);
// The dynamic map's code of x (bitsandbytes' dQuantize<0>: binary search, then the nearer neighbour by midpoints).
uint8_t dynamic_map_code(float x);

// Quantizes `n` values into `format`'s layout at `dst` (storage_bytes(format, n) bytes, padding zeroed).
// `format` must be block-quantized.
void quantize_4bit(DType format, const float* src, int64_t n, void* dst);
// Elements [begin, begin + count) of a tensor of `n` elements stored in `format` at `src`, as float.
void dequantize_4bit(DType format, const void* src, int64_t n, int64_t begin, int64_t count, float* out);
// The absmax of block `b` as dequantization uses it (after undoing the double quantization).
float quant_block_absmax(DType format, const void* src, int64_t n, int64_t b);

// "nf4" / "fp4" (bitsandbytes' quant_type) with or without double quantization → the format; anything else throws
// naming `what` (a flag, a file's field) and the accepted values.
DType quant_format(const std::string& quant_type, bool double_quant, const std::string& what);
// "nf4" / "fp4".
const char* quant_type_name(DType format);

}  // namespace ll
