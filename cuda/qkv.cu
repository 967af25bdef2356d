#include "cuda/qkv.cuh"

#include "cuda/launch_plan.h"
#include "cuda/vec8.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;

// Unit: bf16 (one element) or uint4 (8 elements). units = head_dim in units; i runs over (row, head, unit).
template <typename Unit>
__global__ void split_qkv_kernel(Unit* q, Unit* k, Unit* v, const Unit* qkv, int64_t n, int64_t units) {
  LL_GRID_STRIDE(i, n) {
    const int64_t head = i / units, u = i % units;  // head = row·heads + h
    const Unit* src = qkv + head * 3 * units + u;
    q[i] = src[0];
    k[i] = src[units];
    v[i] = src[2 * units];
  }
}

template <typename Unit>
__global__ void merge_qkv_kernel(Unit* qkv, const Unit* q, const Unit* k, const Unit* v, int64_t n, int64_t units) {
  LL_GRID_STRIDE(i, n) {
    const int64_t head = i / units, u = i % units;
    Unit* dst = qkv + head * 3 * units + u;
    dst[0] = q[i];
    dst[units] = k[i];
    dst[2 * units] = v[i];
  }
}

bool vector_path(int64_t head_dim, const void* a, const void* b, const void* c, const void* d) {
  return head_dim % kVec == 0 && aligned16(a) && aligned16(b) && aligned16(c) && aligned16(d);
}

}  // namespace

void launch_split_qkv(bf16* q, bf16* k, bf16* v, const bf16* qkv, int64_t rows, int64_t heads, int64_t head_dim,
                      cudaStream_t s) {
  const int64_t n = rows * heads * head_dim;
  if (n == 0) return;
  if (vector_path(head_dim, q, k, v, qkv)) {
    split_qkv_kernel<<<unsigned(cuda_plan::elementwise_blocks(n / kVec, kThreads)), kThreads, 0, s>>>(
        reinterpret_cast<uint4*>(q), reinterpret_cast<uint4*>(k), reinterpret_cast<uint4*>(v),
        reinterpret_cast<const uint4*>(qkv), n / kVec, head_dim / kVec);
  } else {
    split_qkv_kernel<<<unsigned(cuda_plan::elementwise_blocks(n, kThreads)), kThreads, 0, s>>>(q, k, v, qkv, n,
                                                                                               head_dim);
  }
  LL_LAUNCH_CHECK("split_qkv_kernel");
}

void launch_merge_qkv(bf16* qkv, const bf16* q, const bf16* k, const bf16* v, int64_t rows, int64_t heads,
                      int64_t head_dim, cudaStream_t s) {
  const int64_t n = rows * heads * head_dim;
  if (n == 0) return;
  if (vector_path(head_dim, q, k, v, qkv)) {
    merge_qkv_kernel<<<unsigned(cuda_plan::elementwise_blocks(n / kVec, kThreads)), kThreads, 0, s>>>(
        reinterpret_cast<uint4*>(qkv), reinterpret_cast<const uint4*>(q), reinterpret_cast<const uint4*>(k),
        reinterpret_cast<const uint4*>(v), n / kVec, head_dim / kVec);
  } else {
    merge_qkv_kernel<<<unsigned(cuda_plan::elementwise_blocks(n, kThreads)), kThreads, 0, s>>>(qkv, q, k, v, n,
                                                                                               head_dim);
  }
  LL_LAUNCH_CHECK("merge_qkv_kernel");
}

}  // namespace ll::cuda
