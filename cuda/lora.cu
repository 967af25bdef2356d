// LoRA's thin products: see lora.cuh for the math, the launch configurations and the supported shapes.
#include "cuda/lora.cuh"

#include <algorithm>

#include "cuda/lora_timing.h"
#include "cuda/vec8.cuh"

namespace ll::cuda {

namespace {

constexpr int kThreads = 256;  // 8 warps, every kernel here

__device__ __forceinline__ void load8(const bf16* p, float (&out)[8]) {  // p 16-byte aligned
  Bf16x8 u;
  u.raw = __ldg(reinterpret_cast<const uint4*>(p));
#pragma unroll
  for (int c = 0; c < 8; ++c) out[c] = to_f32(u.h[c]);
}

__device__ __forceinline__ void store8(bf16* p, const float (&v)[8]) {  // p 16-byte aligned
  Bf16x8 u;
#pragma unroll
  for (int c = 0; c < 8; ++c) u.h[c] = to_bf16(v[c]);
  *reinterpret_cast<uint4*>(p) = u.raw;
}

// ---- down: out[t,j] = alpha · Σ_k X[t,k]·W(j,k) ------------------------------------------------------------------
// RMAX: the rank rounded up (8, 16, 32, 64; ranks ≥ r are zero in shared memory and never written).
// RT rows per warp, all of K per warp: each lane accumulates k ≡ 8·lane (mod 256) for RT×RMAX outputs, in order of
// k; then a butterfly reduction over the lanes (the same fixed tree for every output).
template <int RMAX, int RT>
__global__ void __launch_bounds__(kThreads, 2)
    lora_down_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, int rows, int K, const bf16* __restrict__ w,
                     int64_t wj, int64_t wk, bool w_vec, int r, float alpha) {
  constexpr int KC = 16384 / RMAX;  // K per staged chunk: RMAX·KC bf16 = 32 KB (a multiple of 256)
  constexpr int LD = KC + 8;        // padded shared row (keeps 16-byte alignment)
  __shared__ __align__(16) bf16 ws[RMAX * LD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = (int64_t(blockIdx.x) * (kThreads / 32) + warp) * RT;

  float acc[RT][RMAX];
#pragma unroll
  for (int i = 0; i < RT; ++i)
#pragma unroll
    for (int j = 0; j < RMAX; ++j) acc[i][j] = 0.f;

  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = min(KC, K - k0);  // a multiple of 8 (K is)
    __syncthreads();                 // the previous chunk is consumed
    // Staging: every thread loads a fixed number of elements in batches (all of a batch's loads in flight
    // together), then stores them; entries for j >= r or k >= kc are zero.
    if (w_vec) {  // W(j, k) = w[j·wj + k], rows 16-byte aligned: 8 elements per load
      constexpr int kPerRow = KC / 8, kPer = RMAX * kPerRow / kThreads, kBatch = 4;
      static_assert(kPer % kBatch == 0, "staging batches");
#pragma unroll
      for (int b0 = 0; b0 < kPer; b0 += kBatch) {
        uint4 v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = (b0 + u) * kThreads + threadIdx.x, j = i / kPerRow, kk = (i - j * kPerRow) * 8;
          v[u] = (j < r && kk < kc) ? __ldg(reinterpret_cast<const uint4*>(w + int64_t(j) * wj + k0 + kk))
                                    : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = (b0 + u) * kThreads + threadIdx.x, j = i / kPerRow, kk = (i - j * kPerRow) * 8;
          *reinterpret_cast<uint4*>(&ws[j * LD + kk]) = v[u];
        }
      }
    } else {  // element by element; k fastest when wk == 1 (A), else rank fastest (W(j,k) = B[k,j]: rows of B)
      constexpr int kPer = RMAX * KC / kThreads, kBatch = 16;
      static_assert(kPer % kBatch == 0, "staging batches");
      const bool k_fastest = wk == 1;
#pragma unroll 1
      for (int b0 = 0; b0 < kPer; b0 += kBatch) {
        bf16 v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = (b0 + u) * kThreads + threadIdx.x;
          const int j = k_fastest ? i / KC : i % RMAX, kk = k_fastest ? i % KC : i / RMAX;
          v[u] = (j < r && kk < kc) ? w[int64_t(j) * wj + int64_t(k0 + kk) * wk] : to_bf16(0.f);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = (b0 + u) * kThreads + threadIdx.x;
          const int j = k_fastest ? i / KC : i % RMAX, kk = k_fastest ? i % KC : i / RMAX;
          ws[j * LD + kk] = v[u];
        }
      }
    }
    __syncthreads();
    // X in registers one step ahead (the next step's loads are in flight while this one is multiplied).
    uint4 next[RT];
#pragma unroll
    for (int i = 0; i < RT; ++i) {
      const int64_t t = row0 + i;
      next[i] = (t < rows && lane * 8 < kc) ? __ldg(reinterpret_cast<const uint4*>(x + t * K + k0 + lane * 8))
                                             : make_uint4(0, 0, 0, 0);
    }
    for (int kk = lane * 8; kk < kc; kk += 256) {
      float xv[RT][8];
#pragma unroll
      for (int i = 0; i < RT; ++i) {
        Bf16x8 u;
        u.raw = next[i];
#pragma unroll
        for (int c = 0; c < 8; ++c) xv[i][c] = to_f32(u.h[c]);
        const int64_t t = row0 + i;
        next[i] = (t < rows && kk + 256 < kc)
                      ? __ldg(reinterpret_cast<const uint4*>(x + t * K + k0 + kk + 256))
                      : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int j = 0; j < RMAX; ++j) {
        Bf16x8 u;
        u.raw = *reinterpret_cast<const uint4*>(&ws[j * LD + kk]);
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          const float wv = to_f32(u.h[c]);
#pragma unroll
          for (int i = 0; i < RT; ++i) acc[i][j] = fmaf(xv[i][c], wv, acc[i][j]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < RT; ++i) {
    const int64_t t = row0 + i;
#pragma unroll
    for (int j = 0; j < RMAX; ++j) {
      const float sum = warp_sum(acc[i][j]);  // every lane gets the same value
      if (t < rows && j < r && lane == (j & 31)) out[t * r + j] = to_bf16(alpha * sum);
    }
  }
}

template <int RMAX, int RT>
void run_down(bf16* out, const bf16* x, int64_t rows, int64_t K, const bf16* w, int64_t wj, int64_t wk, bool w_vec,
              int64_t r, float alpha, cudaStream_t s) {
  constexpr int64_t rows_per_block = (kThreads / 32) * RT;
  const unsigned blocks = unsigned((rows + rows_per_block - 1) / rows_per_block);
  lora_down_kernel<RMAX, RT><<<blocks, kThreads, 0, s>>>(out, x, int(rows), int(K), w, wj, wk, w_vec, int(r), alpha);
  LL_LAUNCH_CHECK("lora_down_kernel");
}

// ---- up: Y[t,n] = (Y[t,n] +) alpha · Σ_j Xa[t,j]·V(n,j) -----------------------------------------------------------
// A block owns a 256-column tile (blockIdx.y) and walks row tiles of 32 rows (blockIdx.x, step gridDim.x); a thread
// computes rows 4·warp … 4·warp+3 of the tile, columns 8·lane … 8·lane+7. V is staged in shared memory as f32 in
// chunks of JC ranks (once per block when r ≤ JC); the warp's Xa values are loaded one per lane and broadcast by
// shuffles. The ranks are summed in order j = 0, 1, …, r−1 (padded ranks are zero); which block computes an output
// does not change its value, so the grid size (from the device's occupancy) does not affect the result.
constexpr int kUpCols = 256, kUpRowsPerThread = 4, kUpRows = (kThreads / 32) * kUpRowsPerThread;

// Shared-memory position of tile column nn: a thread's columns 8·lane … +3 at 4·lane, 8·lane+4 … +7 at 128 + 4·lane,
// so each of its two float4 reads is one conflict-free 512-byte row across the warp.
__device__ __forceinline__ int up_slot(int nn) { return ((nn & 4) ? kUpCols / 2 : 0) + (nn >> 3) * 4 + (nn & 3); }

// vs[jj][slot(nn)] = V(n0+nn, j0+jj), zero outside (j < r, n < N). Loads first (in flight together), then stores.
template <int JC>
__device__ __forceinline__ void up_stage_v(float* vs, const bf16* __restrict__ v, int64_t vn, int64_t vj, int n0,
                                           int N, int j0, int r) {
  constexpr int LDV = kUpCols + 4, kPer = JC * kUpCols / kThreads;
  const bool n_fastest = vn == 1;  // A[j,n]: columns contiguous; else B[n,j]: ranks contiguous
  float vv[kPer];
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int i = u * kThreads + threadIdx.x;
    const int jj = n_fastest ? i / kUpCols : i % JC, nn = n_fastest ? i % kUpCols : i / JC, j = j0 + jj;
    vv[u] = (j < r && n0 + nn < N) ? to_f32(v[int64_t(n0 + nn) * vn + int64_t(j) * vj]) : 0.f;
  }
#pragma unroll
  for (int u = 0; u < kPer; ++u) {
    const int i = u * kThreads + threadIdx.x;
    const int jj = n_fastest ? i / kUpCols : i % JC, nn = n_fastest ? i % kUpCols : i / JC;
    vs[jj * LDV + up_slot(nn)] = vv[u];
  }
}

template <int JC, bool ACC, bool SINGLE>  // SINGLE: r <= JC, V staged once
__global__ void __launch_bounds__(kThreads)
    lora_up_kernel(bf16* __restrict__ y, const bf16* __restrict__ xa, int rows, int N, int r,
                   const bf16* __restrict__ v, int64_t vn, int64_t vj, float alpha) {
  constexpr int LDV = kUpCols + 4;  // padded (16-byte multiple): the rank-fastest fill hits distinct banks
  constexpr int kXPerLane = (kUpRowsPerThread * JC + 31) / 32;  // the warp's 4 rows × JC ranks, over 32 lanes
  __shared__ __align__(16) float vs[JC * LDV];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n0 = blockIdx.y * kUpCols;
  const int n = n0 + lane * 8;
  const int64_t tiles = (int64_t(rows) + kUpRows - 1) / kUpRows;
  if (SINGLE) {
    up_stage_v<JC>(vs, v, vn, vj, n0, N, 0, r);
    __syncthreads();
  }
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t t0 = tile * kUpRows + warp * kUpRowsPerThread;  // this warp's first row
    // The accumulated Y first: its latency overlaps the products below.
    uint4 old_y[kUpRowsPerThread];
#pragma unroll
    for (int i = 0; i < kUpRowsPerThread; ++i)
      old_y[i] = (ACC && n < N && t0 + i < rows) ? *reinterpret_cast<const uint4*>(y + (t0 + i) * N + n)
                                                 : make_uint4(0, 0, 0, 0);
    float acc[kUpRowsPerThread][8];
#pragma unroll
    for (int i = 0; i < kUpRowsPerThread; ++i)
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[i][c] = 0.f;
    for (int j0 = 0; j0 < r; j0 += JC) {
      if (!SINGLE) {
        __syncthreads();  // the previous chunk is consumed
        up_stage_v<JC>(vs, v, vn, vj, n0, N, j0, r);
        __syncthreads();
      }
      // Xa(t0 + e / JC, j0 + e % JC) for e = lane + 32·u, zero outside.
      float xv[kXPerLane];
#pragma unroll
      for (int u = 0; u < kXPerLane; ++u) {
        const int e = lane + 32 * u, row = e / JC, j = j0 + e % JC;
        const int64_t t = t0 + row;
        xv[u] = (row < kUpRowsPerThread && t < rows && j < r) ? to_f32(xa[t * r + j]) : 0.f;
      }
#pragma unroll
      for (int jj = 0; jj < JC; ++jj) {
        const float4 va = *reinterpret_cast<const float4*>(&vs[jj * LDV + lane * 4]);
        const float4 vb = *reinterpret_cast<const float4*>(&vs[jj * LDV + kUpCols / 2 + lane * 4]);
        const float vv[8] = {va.x, va.y, va.z, va.w, vb.x, vb.y, vb.z, vb.w};
#pragma unroll
        for (int i = 0; i < kUpRowsPerThread; ++i) {
          const int e = i * JC + jj;  // compile-time: which lane and register hold Xa(t0 + i, j0 + jj)
          const float a = __shfl_sync(0xffffffffu, xv[e / 32], e % 32);
#pragma unroll
          for (int c = 0; c < 8; ++c) acc[i][c] = fmaf(a, vv[c], acc[i][c]);
        }
      }
    }
    if (n < N) {
#pragma unroll
      for (int i = 0; i < kUpRowsPerThread; ++i) {
        const int64_t t = t0 + i;
        if (t >= rows) continue;
        float o[8];
        if (ACC) {
          Bf16x8 u;
          u.raw = old_y[i];
#pragma unroll
          for (int c = 0; c < 8; ++c) o[c] = fmaf(alpha, acc[i][c], to_f32(u.h[c]));
        } else {
#pragma unroll
          for (int c = 0; c < 8; ++c) o[c] = alpha * acc[i][c];
        }
        store8(y + t * N + n, o);
      }
    }
  }
}

// Blocks of `kernel` resident per SM × SMs: the grid that fills the device once (at least 1).
template <typename Kernel>
int64_t resident_blocks(Kernel kernel) {
  int device = 0, sms = 0, per_sm = 0;
  LL_CUDA_CHECK(cudaGetDevice(&device));
  LL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  LL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0));
  return std::max<int64_t>(1, int64_t(sms) * std::max(per_sm, 1));
}

template <int JC, bool ACC, bool SINGLE>
void run_up_as(bf16* y, const bf16* xa, int64_t rows, int64_t N, int64_t r, const bf16* v, int64_t vn, int64_t vj,
               float alpha, cudaStream_t s) {
  const int64_t col_tiles = (N + kUpCols - 1) / kUpCols, row_tiles = (rows + kUpRows - 1) / kUpRows;
  const int64_t fill = resident_blocks(lora_up_kernel<JC, ACC, SINGLE>);
  const int64_t row_blocks = std::min(row_tiles, std::max<int64_t>(1, fill / col_tiles));
  const dim3 grid{unsigned(row_blocks), unsigned(col_tiles)};
  lora_up_kernel<JC, ACC, SINGLE><<<grid, kThreads, 0, s>>>(y, xa, int(rows), int(N), int(r), v, vn, vj, alpha);
  LL_LAUNCH_CHECK("lora_up_kernel");
}

template <int JC, bool SINGLE>
void run_up(bf16* y, const bf16* xa, int64_t rows, int64_t N, int64_t r, const bf16* v, int64_t vn, int64_t vj,
            float alpha, bool accumulate, cudaStream_t s) {
  if (accumulate)
    run_up_as<JC, true, SINGLE>(y, xa, rows, N, r, v, vn, vj, alpha, s);
  else
    run_up_as<JC, false, SINGLE>(y, xa, rows, N, r, v, vn, vj, alpha, s);
}

// ---- reduce_rows: G(j,k) += alpha · Σ_t Xa[t,j]·X[t,k] -------------------------------------------------------------
// Pass 1: block (column tile of 256, row chunk c, rank group of 8). Thread (lane, warp) sums rows
// warp, warp+8, … of the chunk (in increasing order) for columns 8·lane … 8·lane+7 and the group's 8 ranks; the 8
// warps are then added by a fixed tree (4+4, 2+2, 1+1) in shared memory; warp 0 writes the partial.
// Pass 2: G = alpha·Σ_c partial[c] + G, chunks in increasing order.
constexpr int kRedCols = 256, kRedRanks = 8, kRedStage = 256;  // rows of Xa staged in shared memory at a time
constexpr int64_t kRedMaxChunks = 64;

struct RedPlan {
  int64_t rows_per_chunk, chunks, rank_pad;
};
RedPlan plan_reduce(int64_t rows, int64_t rank) {
  const int64_t stages = std::max<int64_t>(1, (rows + kRedStage - 1) / kRedStage);
  const int64_t stages_per_chunk = (stages + kRedMaxChunks - 1) / kRedMaxChunks;
  const int64_t rows_per_chunk = stages_per_chunk * kRedStage;
  return {rows_per_chunk, (rows + rows_per_chunk - 1) / rows_per_chunk, (rank + kRedRanks - 1) / kRedRanks * kRedRanks};
}

__global__ void __launch_bounds__(kThreads)
    lora_reduce_partial_kernel(float* __restrict__ partial, const bf16* __restrict__ xa, const bf16* __restrict__ x,
                               int rows, int K, int r, int rank_pad, int rows_per_chunk) {
  __shared__ __align__(16) float red[4][kRedRanks][kRedCols];  // 32 KB
  __shared__ __align__(16) float xs[kRedStage][kRedRanks];     // 8 KB
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int k = blockIdx.x * kRedCols + lane * 8;
  const int chunk = blockIdx.y, j0 = blockIdx.z * kRedRanks;
  const int64_t t_begin = int64_t(chunk) * rows_per_chunk;
  const int64_t t_end = t_begin + rows_per_chunk < rows ? t_begin + rows_per_chunk : int64_t(rows);

  float acc[kRedRanks][8];
#pragma unroll
  for (int j = 0; j < kRedRanks; ++j)
#pragma unroll
    for (int c = 0; c < 8; ++c) acc[j][c] = 0.f;

  for (int64_t ts = t_begin; ts < t_end; ts += kRedStage) {
    const int n_rows = int(t_end - ts < kRedStage ? t_end - ts : int64_t(kRedStage));
    __syncthreads();  // the previous stage is consumed
    {
      constexpr int kPer = kRedStage * kRedRanks / kThreads;  // loads first (in flight together), then stores
      float v[kPer];
#pragma unroll
      for (int u = 0; u < kPer; ++u) {
        const int i = u * kThreads + threadIdx.x, row = i / kRedRanks, jj = i - row * kRedRanks, j = j0 + jj;
        v[u] = (row < n_rows && j < r) ? to_f32(xa[(ts + row) * r + j]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kPer; ++u) {
        const int i = u * kThreads + threadIdx.x, row = i / kRedRanks, jj = i - row * kRedRanks;
        xs[row][jj] = v[u];
      }
    }
    __syncthreads();
    if (k < K) {
      for (int row = warp; row < n_rows; row += 4 * (kThreads / 32)) {  // 4 rows per iteration: 4 loads in flight
        float xv[4][8];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int rr = row + u * (kThreads / 32);
          if (rr < n_rows) {
            load8(x + (ts + rr) * K + k, xv[u]);
          } else {
#pragma unroll
            for (int c = 0; c < 8; ++c) xv[u][c] = 0.f;
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int rr = row + u * (kThreads / 32);
          if (rr >= n_rows) break;  // uniform over the warp
          const float4 a0 = *reinterpret_cast<const float4*>(&xs[rr][0]);
          const float4 a1 = *reinterpret_cast<const float4*>(&xs[rr][4]);
          const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
          for (int j = 0; j < kRedRanks; ++j)
#pragma unroll
            for (int c = 0; c < 8; ++c) acc[j][c] = fmaf(av[j], xv[u][c], acc[j][c]);
        }
      }
    }
  }
  // Fixed tree over the 8 warps: w += w+4, then w += w+2, then w += w+1.
  for (int half = 4; half >= 1; half >>= 1) {
    __syncthreads();
    if (warp >= half && warp < 2 * half) {
#pragma unroll
      for (int j = 0; j < kRedRanks; ++j) {
        float* p = &red[warp - half][j][lane * 8];
        *reinterpret_cast<float4*>(p) = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
        *reinterpret_cast<float4*>(p + 4) = make_float4(acc[j][4], acc[j][5], acc[j][6], acc[j][7]);
      }
    }
    __syncthreads();
    if (warp < half) {
#pragma unroll
      for (int j = 0; j < kRedRanks; ++j)
#pragma unroll
        for (int c = 0; c < 8; ++c) acc[j][c] += red[warp][j][lane * 8 + c];
    }
  }
  if (warp == 0 && k < K) {
#pragma unroll
    for (int j = 0; j < kRedRanks; ++j) {
      float* p = partial + (int64_t(chunk) * rank_pad + j0 + j) * K + k;
      *reinterpret_cast<float4*>(p) = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
      *reinterpret_cast<float4*>(p + 4) = make_float4(acc[j][4], acc[j][5], acc[j][6], acc[j][7]);
    }
  }
}

__global__ void lora_reduce_finish_kernel(float* __restrict__ g, int64_t gj, int64_t gk,
                                          const float* __restrict__ partial, int chunks, int r, int rank_pad, int K,
                                          float alpha) {
  const int64_t total = int64_t(r) * K;
  LL_GRID_STRIDE(e, total) {
    int j, k;
    if (gk == 1) {  // G rows along k: consecutive threads write consecutive k
      j = int(e / K), k = int(e - int64_t(j) * K);
    } else {  // G(j,k) = dB[k,j]: consecutive threads write consecutive j
      k = int(e / r), j = int(e - int64_t(k) * r);
    }
    const float* src = partial + int64_t(j) * K + k;
    const int64_t chunk_stride = int64_t(rank_pad) * K;
    float sum = 0.f;
    int c = 0;
    for (; c + 8 <= chunks; c += 8) {  // 8 loads in flight, added in chunk order
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = src[(c + u) * chunk_stride];
#pragma unroll
      for (int u = 0; u < 8; ++u) sum += v[u];
    }
    for (; c < chunks; ++c) sum += src[c * chunk_stride];
    float* p = g + int64_t(j) * gj + int64_t(k) * gk;
    *p = fmaf(alpha, sum, *p);
  }
}

}  // namespace

bool lora_kernels_support(int64_t rows, int64_t in, int64_t out, int64_t rank) {
  return rank >= 1 && rank <= kLoraKernelMaxRank && rows >= 1 && in >= 8 && out >= 8 && in % 8 == 0 &&
         out % 8 == 0 && rows * std::max(in, out) < (int64_t(1) << 31);
}

void launch_lora_down(bf16* out, const bf16* x, int64_t rows, int64_t k, const bf16* w, int64_t w_stride_j,
                      int64_t w_stride_k, int64_t rank, float alpha, cudaStream_t s) {
  const bool w_vec = w_stride_k == 1 && w_stride_j % 8 == 0 && aligned16(w);
  if (rank <= 8)
    run_down<8, 4>(out, x, rows, k, w, w_stride_j, w_stride_k, w_vec, rank, alpha, s);
  else if (rank <= 16)
    run_down<16, 4>(out, x, rows, k, w, w_stride_j, w_stride_k, w_vec, rank, alpha, s);
  else if (rank <= 32)
    run_down<32, 2>(out, x, rows, k, w, w_stride_j, w_stride_k, w_vec, rank, alpha, s);
  else
    run_down<64, 1>(out, x, rows, k, w, w_stride_j, w_stride_k, w_vec, rank, alpha, s);
}

void launch_lora_up(bf16* y, const bf16* xa, int64_t rows, int64_t n, int64_t rank, const bf16* v,
                    int64_t v_stride_n, int64_t v_stride_j, float alpha, bool accumulate, cudaStream_t s) {
  if (rank <= 8)
    run_up<8, true>(y, xa, rows, n, rank, v, v_stride_n, v_stride_j, alpha, accumulate, s);
  else if (rank <= 16)
    run_up<16, true>(y, xa, rows, n, rank, v, v_stride_n, v_stride_j, alpha, accumulate, s);
  else
    run_up<16, false>(y, xa, rows, n, rank, v, v_stride_n, v_stride_j, alpha, accumulate, s);
}

size_t lora_reduce_rows_scratch_bytes(int64_t rows, int64_t k, int64_t rank) {
  const RedPlan p = plan_reduce(rows, rank);
  return size_t(p.chunks * p.rank_pad * k) * sizeof(float);
}

void launch_lora_reduce_rows(float* g, int64_t g_stride_j, int64_t g_stride_k, const bf16* xa, const bf16* x,
                             int64_t rows, int64_t k, int64_t rank, float alpha, float* scratch, cudaStream_t s) {
  const RedPlan p = plan_reduce(rows, rank);
  const dim3 grid(unsigned((k + kRedCols - 1) / kRedCols), unsigned(p.chunks), unsigned(p.rank_pad / kRedRanks));
  lora_reduce_partial_kernel<<<grid, kThreads, 0, s>>>(scratch, xa, x, int(rows), int(k), int(rank), int(p.rank_pad),
                                                       int(p.rows_per_chunk));
  LL_LAUNCH_CHECK("lora_reduce_partial_kernel");
  const int64_t total = rank * k;
  const unsigned blocks = unsigned(std::min<int64_t>((total + kThreads - 1) / kThreads, 4096));
  lora_reduce_finish_kernel<<<blocks, kThreads, 0, s>>>(g, g_stride_j, g_stride_k, scratch, int(p.chunks), int(rank),
                                                        int(p.rank_pad), int(k), alpha);
  LL_LAUNCH_CHECK("lora_reduce_finish_kernel");
}

std::vector<LoraKernelTiming> lora_kernel_timings(int64_t T, int64_t K, int64_t N, int64_t r, void* stream) {
  LL_ASSERT(lora_kernels_support(T, K, N, r), "lora_kernel_timings: shape T=", T, " K=", K, " N=", N, " r=", r,
           " is outside the kernels' support");
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  std::vector<void*> owned;
  auto alloc = [&](size_t bytes) {
    void* p = nullptr;
    LL_CUDA_CHECK(cudaMalloc(&p, bytes));
    owned.push_back(p);
    LL_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, s));
    return p;
  };
  const size_t e = sizeof(bf16);
  bf16* x = static_cast<bf16*>(alloc(size_t(T * K) * e));
  bf16* dx = static_cast<bf16*>(alloc(size_t(T * K) * e));
  bf16* y = static_cast<bf16*>(alloc(size_t(T * N) * e));
  bf16* dy = static_cast<bf16*>(alloc(size_t(T * N) * e));
  bf16* xa = static_cast<bf16*>(alloc(size_t(T * r) * e));
  bf16* dxa = static_cast<bf16*>(alloc(size_t(T * r) * e));
  bf16* a = static_cast<bf16*>(alloc(size_t(r * K) * e));
  bf16* b = static_cast<bf16*>(alloc(size_t(N * r) * e));
  float* da = static_cast<float*>(alloc(size_t(r * K) * sizeof(float)));
  float* db = static_cast<float*>(alloc(size_t(N * r) * sizeof(float)));
  float* scratch = static_cast<float*>(
      alloc(std::max(lora_reduce_rows_scratch_bytes(T, K, r), lora_reduce_rows_scratch_bytes(T, N, r))));
  cudaEvent_t start = nullptr, stop = nullptr;
  LL_CUDA_CHECK(cudaEventCreate(&start));
  LL_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<LoraKernelTiming> out;
  auto time = [&](const char* what, double bytes, auto&& launch) {
    for (int i = 0; i < 3; ++i) launch();
    constexpr int kIters = 20;
    LL_CUDA_CHECK(cudaEventRecord(start, s));
    for (int i = 0; i < kIters; ++i) launch();
    LL_CUDA_CHECK(cudaEventRecord(stop, s));
    LL_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    out.push_back({what, double(ms) / kIters, bytes});
  };
  const double tk = double(T * K) * e, tn = double(T * N) * e;
  const float sc = 2.f;
  time("fwd down   xa = x·Aᵀ", tk, [&] { launch_lora_down(xa, x, T, K, a, K, 1, r, 1.f, s); });
  time("fwd up     y += s·xa·Bᵀ", 2 * tn, [&] { launch_lora_up(y, xa, T, N, r, b, r, 1, sc, true, s); });
  time("bwd reduce dB += s·dyᵀ·xa", tn, [&] { launch_lora_reduce_rows(db, 1, r, xa, dy, T, N, r, sc, scratch, s); });
  time("bwd down   dxa = s·dy·B", tn, [&] { launch_lora_down(dxa, dy, T, N, b, 1, r, r, sc, s); });
  time("bwd reduce dA += dxaᵀ·x", tk, [&] { launch_lora_reduce_rows(da, K, 1, dxa, x, T, K, r, 1.f, scratch, s); });
  time("bwd up     dx += dxa·A", 2 * tk, [&] { launch_lora_up(dx, dxa, T, K, r, a, 1, K, 1.f, true, s); });
  time("reference  copy [T,N] bf16", 2 * tn,
       [&] { LL_CUDA_CHECK(cudaMemcpyAsync(dy, y, size_t(tn), cudaMemcpyDeviceToDevice, s)); });
  LL_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  for (void* p : owned) cudaFree(p);
  return out;
}

}  // namespace ll::cuda
