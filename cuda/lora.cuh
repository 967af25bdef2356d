// LoRA's thin products (rank r ≪ K, N) as memory-bound CUDA-core kernels: bf16 storage, f32 accumulation, no
// atomics, every sum in a fixed order that depends only on the shape (two runs are bit-identical).
//
//   down:        out[T,r] bf16 = alpha · X[T,K]·Wᵀ            W(j,k) = w[j·w_stride_j + k·w_stride_k]
//                (forward xa = x_lora·Aᵀ: W = A, strides (K, 1); backward dxa = s·dy·B: W(j,n) = B[n,j], strides (1, r))
//   up:          Y[T,N] bf16 = (Y +) alpha · Xa[T,r]·Vᵀ        V(n,j) = v[n·v_stride_n + j·v_stride_j]
//                (forward y += s·xa·Bᵀ: V = B, strides (r, 1); backward dx (+)= dxa·A: V(k,j) = A[j,k], strides (1, K))
//   reduce_rows: G(j,k) f32 += alpha · Σ_t Xa[t,j]·X[t,k]      G(j,k) = g[j·g_stride_j + k·g_stride_k]
//                (dA += dxaᵀ·x_lora: strides (K, 1); dB += s·dyᵀ·xa as G(j,n) = dB[n,j]: strides (1, r))
// Xa is [T,r] row-major (leading dimension r), X and Y are row-major with leading dimension K (resp. N).
// The bf16 outputs are rounded once, from alpha·Σ (+ Y) in f32, like the cuBLASLt path they replace.
//
// Launch configurations (256 threads = 8 warps per block everywhere):
//   down:  a warp owns RT rows (RT = 4 for r ≤ 16, 2 for r ≤ 32, 1 for r ≤ 64), each lane 8 consecutive k per
//          step (16-byte loads of X); W is staged in shared memory in chunks of K (r_pad·K_chunk bf16 = 32 KB);
//          per-lane partial sums over k, then a butterfly warp reduction. Grid: ceil(T / (8·RT)) blocks.
//   up:    a block owns a 256-column tile and walks 32-row tiles (grid: the device's resident blocks spread over
//          the column tiles, × ceil(N/256)); each thread 4 rows × 8 consecutive columns (16-byte loads/stores of
//          Y, the old Y loaded before the products); V staged in shared memory as f32 (once per block for r ≤ 16,
//          else per 16-rank chunk and tile); the warp's Xa values loaded one per lane and broadcast by shuffles.
//   reduce_rows: pass 1, grid ceil(K/256) × chunks × ceil(r/8): a block sums rows [c·rows_per_chunk, …) of a
//          256-column tile for 8 ranks (each thread 8 columns × 8 ranks; the 8 warps split the rows and are summed
//          by a fixed tree in shared memory) into f32 partials [chunks][r_pad][K]; pass 2 adds the chunks in order
//          and writes G = alpha·Σ + G. Scratch: lora_reduce_rows_scratch_bytes.
//
// Status (H200, T = 8192, K = N = 4096, r = 8, bench_cuda lora): correct and deterministic (CudaOps GPU tests pass),
// but slower than cuBLASLt — LoRA overhead over the base product 0.128 ms forward / 0.266 ms backward against
// 0.096 / 0.127 — so CudaBackend keeps cuBLASLt as the default (LONGLORA_LORA_KERNELS=kernels selects these).
// Not yet known which kernel loses the time (no per-kernel profile was taken).
//
// Supported shapes (lora_kernels_support; the caller falls back to cuBLASLt otherwise): 1 ≤ r ≤ 64, T ≥ 1,
// K and N multiples of 8, T·max(K,N) < 2³¹, and the matrices read or written with 16-byte accesses (X of down
// and reduce_rows, Y of up) 16-byte aligned. Xa, W, V and G have no alignment requirement.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

constexpr int64_t kLoraKernelMaxRank = 64;

// Shapes only (T rows, K adapter inputs, N outputs, rank r); pointer alignment is checked with aligned16 (vec8.cuh).
bool lora_kernels_support(int64_t rows, int64_t in, int64_t out, int64_t rank);

void launch_lora_down(bf16* out, const bf16* x, int64_t rows, int64_t k, const bf16* w, int64_t w_stride_j,
                      int64_t w_stride_k, int64_t rank, float alpha, cudaStream_t s);

// accumulate: Y = Y + alpha·Xa·Vᵀ; else Y = alpha·Xa·Vᵀ (Y is not read).
void launch_lora_up(bf16* y, const bf16* xa, int64_t rows, int64_t n, int64_t rank, const bf16* v,
                    int64_t v_stride_n, int64_t v_stride_j, float alpha, bool accumulate, cudaStream_t s);

size_t lora_reduce_rows_scratch_bytes(int64_t rows, int64_t k, int64_t rank);
// scratch: at least lora_reduce_rows_scratch_bytes(rows, k, rank) bytes, 16-byte aligned.
void launch_lora_reduce_rows(float* g, int64_t g_stride_j, int64_t g_stride_k, const bf16* xa, const bf16* x,
                             int64_t rows, int64_t k, int64_t rank, float alpha, float* scratch, cudaStream_t s);

}  // namespace ll::cuda
