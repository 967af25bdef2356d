// Moving values between host double arrays and backend tensors of any floating dtype.
#pragma once
#include <vector>

#include "core/backend.h"

namespace ll {

// bf16 / f16 conversions (round to nearest even), used for host-side staging.
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t x);

// Converts `count = dst.numel()` doubles to dst's dtype and copies them into the backend tensor.
void upload_f64(Backend& backend, Tensor dst, const double* values);
void upload_f64(Backend& backend, Tensor dst, const std::vector<double>& values);
// Copies a backend tensor to the host and widens it to double.
std::vector<double> download_f64(Backend& backend, const Tensor& src);
// Converts `count` values between host buffers of floating dtypes (F64, F32, BF16, F16), rounding to nearest even
// (16-bit targets go through f32). Either buffer may be unaligned (e.g. inside an mmap'd safetensors file).
void convert_values(const void* src, DType src_type, void* dst, DType dst_type, size_t count);

// Index of the first NaN or ±inf among `count` values of a floating dtype at `data` (may be unaligned), or `count`
// when all are finite (always for I32). An exponent-bit test over chunks, vectorised: about memory speed, so a
// pass over every weight while loading or saving costs little next to the conversion and the I/O.
size_t find_nonfinite(const void* data, DType type, size_t count);

// Copies int32 host values into an I32 backend tensor.
void upload_i32(Backend& backend, Tensor dst, const int32_t* values);

}  // namespace ll
