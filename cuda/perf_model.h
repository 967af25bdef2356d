// FLOP conventions for the CUDA benchmarks (shared/reference/perf.md §1.1 and §4.3). Plain C++, tested on CPU.
#pragma once
#include <cstdint>

#include "core/attention_mask.h"
#include "model/config.h"

namespace ll::perf {

// FlashAttention's benchmark_flash_attention.py: forward = 4·B·L²·H·Dh, halved when causal; backward = 2.5×
// forward; forward+backward = 3.5× forward.
enum class Pass { Forward, Backward, ForwardBackward };
double flash_attention_flops(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim, bool causal, Pass pass);

// The same convention for any mask: 4·Dh·(attended query–key pairs), summed over batch and heads — equal to the
// causal count above up to its L/2 diagonal term, and ~1/4 of it for S2 at ratio 1/4. Exact pair count.
double masked_attention_flops(int64_t batch, int64_t seq_len, int64_t heads, int64_t head_dim,
                              const AttentionMask& mask, Pass pass);

// Matrix-product parameters of a model: every linear of its parameter table plus the output head (the embedding
// lookup is not a product).
double matmul_params(const ModelConfig& c);

// Per-token FLOPs of a LoRA step (§4.3): frozen products cost 4N (forward + input gradient), attention 3× its
// forward (model FLOPs). Attention forward per token = 2·layers·hidden·s for causal attention over s tokens and
// 2·layers·hidden·G for S2 with group G. The adapters' own FLOPs (~6·r·(in+out) per adapted module) are ignored.
double lora_model_flops_per_token(const ModelConfig& c, int64_t seq_len, int64_t s2_group);
// Hardware FLOPs with per-layer recomputation (activation checkpointing) of a share (0..1: recomputed layers /
// all layers) of the model: one more forward of that share, 6N + 4× attention when every layer is recomputed.
double lora_hardware_flops_per_token(const ModelConfig& c, int64_t seq_len, int64_t s2_group, double recomputed_share);

// A dense bf16 tensor-core peak in TFLOP/s for a device name (H100 SXM 989.4, A100 312, H200 989.4; 0 = unknown).
double bf16_peak_tflops(const char* device_name);

}  // namespace ll::perf
