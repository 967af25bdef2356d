// Token embedding: gather forward; deterministic scatter-add backward over runs of equal ids (see
// cuda_plan::plan_embedding_backward) — each run is owned by one CTA column block, rows added in row order.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

// out[t,:] = table[ids[t],:]; an id outside [0, vocab) writes a NaN row (ids are validated on the host by the model).
void launch_embedding_forward(bf16* out, const int32_t* ids, const bf16* table, int64_t rows, int64_t dim,
                              int64_t vocab, cudaStream_t s);
// dtable[run_id[r],:] += Σ_{i in run r} dout[order[i],:] in order (f32 accumulation).
void launch_embedding_backward(float* dtable, const int32_t* order, const int32_t* run_start, const int32_t* run_id,
                               int64_t runs, const bf16* dout, int64_t dim, cudaStream_t s);

}  // namespace ll::cuda
