// Cross-entropy over a chunk of logits rows (one CTA per row, f32 statistics, fixed reduction tree), writing
// grad_scale·(softmax − onehot) over the logits in place; and the per-row arg-max (first index on ties).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace ll::cuda {

// targets: −100 ignores a row (loss 0, zero gradient row); any other value outside [0, vocab) gives a NaN loss and
// a NaN gradient row (the model validates targets on the host; NaN makes a bad one impossible to miss).
void launch_cross_entropy(bf16* logits, float* losses, const int32_t* targets, int64_t rows, int64_t vocab,
                          double grad_scale, bool compute_grad, cudaStream_t s);
void launch_argmax_rows(int32_t* out, const bf16* logits, int64_t rows, int64_t vocab, cudaStream_t s);

}  // namespace ll::cuda
