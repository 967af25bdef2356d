// Host-side launch planning of the CUDA backend's deterministic reductions and scatter, in plain C++ so it is
// unit-tested on CPU. Every plan depends only on the problem shape (never on the device or its SM count), so
// results are bit-identical on every card.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rope_frequencies.h"

namespace ll::cuda_plan {

// ---- RMSNorm dw: column sums over rows in two fixed passes ------------------------------------------------
// Pass 1: chunk c sums rows [c·rows_per_chunk, …) of every column, in row order, into partial[c][d] (f32).
// Pass 2: for every column, the chunks are summed in chunk order and added to dw.
struct ColumnReducePlan {
  int64_t rows_per_chunk;
  int64_t chunks;
};
constexpr int64_t kColumnReduceMinRows = 32;
constexpr int64_t kColumnReduceMaxChunks = 256;
ColumnReducePlan plan_column_reduce(int64_t rows);

// ---- Σ x²: fixed-size blocks, then the block sums in order (double) ----------------------------------------
struct SumSquaresPlan {
  int64_t block_elems;  // elements per CTA
  int64_t blocks;
};
constexpr int64_t kSumSquaresBlockElems = 1 << 16;
SumSquaresPlan plan_sum_squares(int64_t n);

// ---- embedding backward: rows grouped by token id ---------------------------------------------------------
// order: row indices stably sorted by id (rows of one id stay in increasing row order); runs: for each distinct
// id, [run_start[r], run_start[r+1]) indexes `order`, and run_id[r] is the id. One CTA column-block owns one run:
// it adds the run's rows in order to dtable[id] — no atomics, and the same summation order as the CPU.
struct EmbeddingBackwardPlan {
  std::vector<int32_t> order;
  std::vector<int32_t> run_start;  // runs + 1 entries
  std::vector<int32_t> run_id;     // runs entries
  int64_t runs() const { return int64_t(run_id.size()); }
};
// Throws ll::Error naming the row when an id is outside [0, vocab).
EmbeddingBackwardPlan plan_embedding_backward(const int32_t* ids, int64_t rows, int64_t vocab);

// ---- AdamW: the per-step scalars, computed in double on the host, rounded to f32 for the kernel -------------
struct AdamWArgs {
  float lr_decay;  // 1 − lr·weight_decay
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float step_size;  // lr / (1 − β1^t)
  float bc2_sqrt;   // sqrt(1 − β2^t)
  float eps;
};
AdamWArgs make_adamw_args(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step);

// ---- element-wise launches --------------------------------------------------------------------------------------
// Grid size for a grid-stride loop over n elements with `threads` per block (at least 1, at most max_blocks).
int64_t elementwise_blocks(int64_t n, int threads, int64_t max_blocks = 65535);

// RoPE angle rates inv_freq[i] / factor, i < R/2, R = the rotated dims of a head (the head dimension unless the rotary
// is partial), inv_freq = θ^(−2i/R) with Llama-3's per-frequency rule when `llama3` is set (rope_inv_freq, the CPU
// rope's too), computed in double and rounded to f32: the kernels form the angle as f32(position) · rate in f32
// (Hugging Face's precision) and take sincosf of it.
std::vector<float> rope_angle_rates(double theta, double factor, int64_t rotary_dims, const RopeLlama3& llama3 = {});

// ---- attention kernel families --------------------------------------------------------------------------------
// Which tensor-core attention passes at head dim 128 run the wgmma kernels (attention_wgmma.cu, sm_90a) instead of
// the mma.sync ones (attention.cu).
struct AttentionWgmma {
  bool forward = false, dq = false, dkdv = false;
  bool operator==(const AttentionWgmma& o) const { return forward == o.forward && dq == o.dq && dkdv == o.dkdv; }
};
// `spec` as LONGLORA_ATTENTION_WGMMA / bench_cuda --attention_wgmma take it: "auto" (or empty: every pass when
// `available`, else none), "none", or a comma-separated list of fwd, dq, dkdv. Throws ll::Error naming `what` and
// the expected values on anything else, and when a listed pass cannot run (`available` false).
AttentionWgmma parse_attention_wgmma(const std::string& spec, bool available, const std::string& what);
std::string to_string(const AttentionWgmma& w);  // "none" or the list, e.g. "fwd,dq,dkdv"

}  // namespace ll::cuda_plan
