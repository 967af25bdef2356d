// Element types and their traits: the dense dtypes (one value per element), U8 (raw bytes in files), and the
// block-quantized weight formats of bitsandbytes' 4-bit quantization, which are ordinary tensor dtypes here (ggml's
// type traits are the model): a tensor of logical shape [out, in] in such a format owns storage_bytes(format, numel)
// bytes laid out as quant_layout() says, so arenas, shards, copies and plans size it like any tensor. Only the ops
// that read a weight (linear, LoRA) and the host converters (core/quantize.h) look inside.
//
// Plain C++ with inline functions only, also usable by device code (the layout is needed by CUDA kernels).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/host_device.h"
#include "util/error.h"

namespace ll {

// NF4 / FP4: 4-bit codes of bitsandbytes' "nf4" / "fp4" code books, blocks of 64 elements, an f32 absmax per block.
// NF4DQ / FP4DQ: the same codes with the absmax double-quantized (bitsandbytes' compress_statistics): absmax − offset
// as 8-bit codes of the signed dynamic map, blocks of 256 absmax values with an f32 absmax each, one f32 offset.
enum class DType : uint8_t { F32, F64, BF16, F16, I32, U8, NF4, NF4DQ, FP4, FP4DQ };

LL_HOST_DEVICE inline bool is_quantized(DType t) {
  return t == DType::NF4 || t == DType::NF4DQ || t == DType::FP4 || t == DType::FP4DQ;
}
LL_HOST_DEVICE inline bool is_double_quantized(DType t) { return t == DType::NF4DQ || t == DType::FP4DQ; }
LL_HOST_DEVICE inline bool is_nf4(DType t) { return t == DType::NF4 || t == DType::NF4DQ; }

constexpr int64_t kQuantBlock = 64;         // elements per 4-bit block (bitsandbytes' blocksize for 4-bit weights)
constexpr int64_t kNestedQuantBlock = 256;  // absmax values per block of the double quantization

// Where each part of a block-quantized tensor of `numel` elements lies, in bytes from its start. Sections start on
// 16-byte boundaries, so every f32 is aligned whenever the tensor is 4-byte aligned.
//   codes:   ceil(numel/2) bytes, element 2j in the high nibble of byte j, 2j+1 in the low one (bitsandbytes' packing)
//   absmax:  f32[blocks], or u8[blocks] (double quantization)
//   nested:  f32[nested_blocks] (double quantization only)
//   offset:  f32 (double quantization only)
struct QuantLayout {
  int64_t numel = 0, blocks = 0, nested_blocks = 0;
  size_t codes = 0, absmax = 0, nested = 0, offset = 0, bytes = 0;
};

LL_HOST_DEVICE inline size_t align16(size_t x) { return (x + 15) / 16 * 16; }

LL_HOST_DEVICE inline QuantLayout quant_layout(DType t, int64_t numel) {
  QuantLayout l;
  l.numel = numel;
  l.blocks = (numel + kQuantBlock - 1) / kQuantBlock;
  l.codes = 0;
  l.absmax = align16(size_t((numel + 1) / 2));
  if (!is_double_quantized(t)) {
    l.bytes = align16(l.absmax + 4 * size_t(l.blocks));
    return l;
  }
  l.nested_blocks = (l.blocks + kNestedQuantBlock - 1) / kNestedQuantBlock;
  l.nested = align16(l.absmax + size_t(l.blocks));
  l.offset = l.nested + 4 * size_t(l.nested_blocks);
  l.bytes = align16(l.offset + 4);
  return l;
}

// Bytes of one element of a dense dtype. A block-quantized format has no per-element size: use storage_bytes.
inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
    case DType::U8: return 1;
    case DType::NF4:
    case DType::NF4DQ:
    case DType::FP4:
    case DType::FP4DQ: break;
  }
  LL_ASSERT(false, "dtype_size: block-quantized format has no per-element size (use storage_bytes)");
  return 0;
}

// Bytes a tensor of `numel` elements occupies: numel × element size, or the quantized layout's size.
inline size_t storage_bytes(DType t, int64_t numel) {
  if (is_quantized(t)) return numel == 0 ? 0 : quant_layout(t, numel).bytes;
  return size_t(numel) * dtype_size(t);
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I32: return "i32";
    case DType::U8: return "u8";
    case DType::NF4: return "nf4";
    case DType::NF4DQ: return "nf4 (double-quantized)";
    case DType::FP4: return "fp4";
    case DType::FP4DQ: return "fp4 (double-quantized)";
  }
  return "?";
}

// Floating dtypes the host converters handle value by value (F64, F32, BF16, F16).
inline bool is_dense_float(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

}  // namespace ll
