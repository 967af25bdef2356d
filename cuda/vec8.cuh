// 16-byte vector access to bf16 tensors: 8 consecutive elements per load/store (one LDG.128/STG.128), converted
// element by element with the same to_f32/to_bf16 as the scalar kernels, so a kernel written over Vec8 computes
// bit-identical results. A kernel may use these only when every pointer it touches this way is 16-byte aligned
// (aligned16); launchers check that and fall back to the scalar kernel otherwise (tensors may be views at any
// element offset).
#pragma once
#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

constexpr int kVec = 8;  // bf16 elements per 16-byte vector

union Bf16x8 {
  uint4 raw;
  bf16 h[kVec];
};

struct Vec8 {
  float v[kVec];
};

__device__ __forceinline__ uint4 load_raw8(const bf16* p) { return *reinterpret_cast<const uint4*>(p); }

__device__ __forceinline__ Vec8 unpack8(uint4 raw) {
  Bf16x8 u;
  u.raw = raw;
  Vec8 r;
#pragma unroll
  for (int k = 0; k < kVec; ++k) r.v[k] = to_f32(u.h[k]);
  return r;
}

__device__ __forceinline__ Vec8 load8(const bf16* p) { return unpack8(load_raw8(p)); }  // p: 16-byte aligned

__device__ __forceinline__ void store8(bf16* p, const Vec8& x) {  // p: 16-byte aligned
  Bf16x8 u;
#pragma unroll
  for (int k = 0; k < kVec; ++k) u.h[k] = to_bf16(x.v[k]);
  *reinterpret_cast<uint4*>(p) = u.raw;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace ll::cuda
