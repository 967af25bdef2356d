#include "core/tensor_host.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/quantize.h"

namespace ll {

uint16_t f32_to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if (std::isnan(x)) return uint16_t((bits >> 16) | 0x40);  // keep NaN a NaN
  bits += 0x7FFF + ((bits >> 16) & 1);
  return uint16_t(bits >> 16);
}
float bf16_to_f32(uint16_t x) {
  const uint32_t bits = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const int32_t exp = int32_t((b >> 23) & 0xFF) - 127 + 15;
  uint32_t mant = b & 0x7FFFFFu;
  if (((b >> 23) & 0xFF) == 0xFF) return uint16_t(sign | 0x7C00u | (mant ? 0x200u : 0));  // inf / nan
  if (exp >= 31) return uint16_t(sign | 0x7C00u);                                         // overflow → inf
  if (exp <= 0) {                                                                         // subnormal or zero
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = sign | (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;  // may carry into the exponent: correct
  return uint16_t(half);
}
float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FFu;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(mant), -24);
    return sign ? -f : f;
  }
  uint32_t bits = exp == 31 ? sign | 0x7F800000u | (mant << 13) : sign | ((exp - 15 + 127) << 23) | (mant << 13);
  std::memcpy(&f, &bits, 4);
  return f;
}

void convert_values(const void* src, DType src_type, void* dst, DType dst_type, size_t count) {
  LL_ASSERT(is_dense_float(src_type) && is_dense_float(dst_type), "convert_values: ", dtype_name(src_type), " -> ",
           dtype_name(dst_type), " is not a floating-point conversion");
  if (src_type == dst_type) {
    std::memcpy(dst, src, count * dtype_size(src_type));
    return;
  }
  const auto* in = static_cast<const unsigned char*>(src);
  auto* out = static_cast<unsigned char*>(dst);
  const size_t in_size = dtype_size(src_type), out_size = dtype_size(dst_type);
  for (size_t i = 0; i < count; ++i, in += in_size, out += out_size) {
    double v = 0;
    float f;
    uint16_t h;
    switch (src_type) {
      case DType::F64: std::memcpy(&v, in, 8); break;
      case DType::F32: std::memcpy(&f, in, 4), v = f; break;
      case DType::BF16: std::memcpy(&h, in, 2), v = bf16_to_f32(h); break;
      case DType::F16: std::memcpy(&h, in, 2), v = f16_to_f32(h); break;
      default: break;  // not reached (checked above)
    }
    switch (dst_type) {
      case DType::F64: std::memcpy(out, &v, 8); break;
      case DType::F32: f = float(v), std::memcpy(out, &f, 4); break;
      case DType::BF16: h = f32_to_bf16(float(v)), std::memcpy(out, &h, 2); break;
      case DType::F16: h = f32_to_f16(float(v)), std::memcpy(out, &h, 2); break;
      default: break;  // not reached (checked above)
    }
  }
}

namespace {

// A value is NaN or ±inf exactly when all its exponent bits are set. Chunks are tested in parallel (a 7B model's
// weights stream through at memory bandwidth), then the first bad chunk is scanned for the exact index.
template <typename Bits, Bits kExponent>
size_t find_nonfinite_bits(const unsigned char* data, size_t count) {
  constexpr size_t kChunk = 4096;
  const size_t chunks = (count + kChunk - 1) / kChunk;
  size_t first_bad_chunk = chunks;
#pragma omp parallel for schedule(static) reduction(min : first_bad_chunk) if (chunks >= 256)
  for (size_t c = 0; c < chunks; ++c) {
    const unsigned char* p = data + c * kChunk * sizeof(Bits);
    const size_t n = std::min(count - c * kChunk, kChunk);
    unsigned bad = 0;
#pragma omp simd reduction(| : bad)
    for (size_t i = 0; i < n; ++i) {
      Bits x;
      std::memcpy(&x, p + i * sizeof(Bits), sizeof(Bits));
      bad |= unsigned((x & kExponent) == kExponent);
    }
    if (bad) first_bad_chunk = std::min(first_bad_chunk, c);
  }
  for (size_t i = first_bad_chunk * kChunk; i < count; ++i) {
    Bits x;
    std::memcpy(&x, data + i * sizeof(Bits), sizeof(Bits));
    if ((x & kExponent) == kExponent) return i;
  }
  return count;
}

}  // namespace

size_t find_nonfinite(const void* data, DType type, size_t count) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  switch (type) {
    case DType::F64: return find_nonfinite_bits<uint64_t, 0x7FF0000000000000ull>(bytes, count);
    case DType::F32: return find_nonfinite_bits<uint32_t, 0x7F800000u>(bytes, count);
    case DType::BF16: return find_nonfinite_bits<uint16_t, 0x7F80u>(bytes, count);
    case DType::F16: return find_nonfinite_bits<uint16_t, 0x7C00u>(bytes, count);
    default: return count;  // integers, bytes, and 4-bit codes (their statistics are checked when read)
  }
}

void upload_f64(Backend& backend, Tensor dst, const double* values) {
  const int64_t n = dst.numel();
  std::vector<unsigned char> staging(dst.nbytes());
  if (is_quantized(dst.dtype)) {  // the values rounded to float, then quantized (core/quantize.h)
    const std::vector<float> f(values, values + n);
    quantize_4bit(dst.dtype, f.data(), n, staging.data());
    backend.copy_from_host(dst, staging.data());
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    switch (dst.dtype) {
      case DType::F64: reinterpret_cast<double*>(staging.data())[i] = values[i]; break;
      case DType::F32: reinterpret_cast<float*>(staging.data())[i] = float(values[i]); break;
      case DType::BF16: reinterpret_cast<uint16_t*>(staging.data())[i] = f32_to_bf16(float(values[i])); break;
      case DType::F16: reinterpret_cast<uint16_t*>(staging.data())[i] = f32_to_f16(float(values[i])); break;
      default: fail("upload_f64: destination is a ", dtype_name(dst.dtype), " tensor ", dst.shape_str());
    }
  }
  backend.copy_from_host(dst, staging.data());
}
void upload_f64(Backend& backend, Tensor dst, const std::vector<double>& values) {
  LL_ASSERT(int64_t(values.size()) == dst.numel(), "upload_f64: ", values.size(), " values for a tensor of shape ",
           dst.shape_str());
  upload_f64(backend, dst, values.data());
}

std::vector<double> download_f64(Backend& backend, const Tensor& src) {
  std::vector<unsigned char> staging(src.nbytes());
  backend.copy_to_host(staging.data(), src);
  std::vector<double> out(src.numel());
  if (is_quantized(src.dtype)) {  // dequantized as float (core/quantize.h)
    std::vector<float> f(out.size());
    dequantize_4bit(src.dtype, staging.data(), src.numel(), 0, src.numel(), f.data());
    std::copy(f.begin(), f.end(), out.begin());
    return out;
  }
  for (int64_t i = 0; i < src.numel(); ++i) {
    switch (src.dtype) {
      case DType::F64: out[i] = reinterpret_cast<const double*>(staging.data())[i]; break;
      case DType::F32: out[i] = reinterpret_cast<const float*>(staging.data())[i]; break;
      case DType::BF16: out[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(staging.data())[i]); break;
      case DType::F16: out[i] = f16_to_f32(reinterpret_cast<const uint16_t*>(staging.data())[i]); break;
      case DType::I32: out[i] = reinterpret_cast<const int32_t*>(staging.data())[i]; break;
      case DType::U8: out[i] = staging[size_t(i)]; break;
      default: break;  // not reached (quantized above)
    }
  }
  return out;
}

void upload_i32(Backend& backend, Tensor dst, const int32_t* values) {
  LL_ASSERT(dst.dtype == DType::I32, "upload_i32: destination has dtype ", dtype_name(dst.dtype));
  backend.copy_from_host(dst, values);
}

}  // namespace ll
