// The embedded demo (`build/train` with no flags, or `make demo`): a complete LongLoRA run in minutes, on the GPU
// when there is a usable one, else on CPU (LONGLORA_DEMO_DEVICE=cpu|cuda overrides).
//  1. a sentencepiece tokenizer trained on bundled public-domain text (data/kjv-genesis-numbers.txt);
//  2. a tiny Llama pretrained from scratch at a short context (64 tokens);
//  3. perplexity at 4× that context (256) without and with position interpolation;
//  4. LongLoRA: PI factor 4 + S2-Attn + LoRA+ (LoRA on q,k,v,o; embeddings and norms trained) at 256 tokens;
//  5. perplexity at 256 again. Every number printed is measured by the run.
#pragma once
#include <cstdint>
#include <string>

namespace ll {

struct DemoOptions {
  std::string corpus = "data/kjv-genesis-numbers.txt";
  std::string output_dir = "demo_output";
  int64_t short_context = 64, long_context = 256;
  int64_t pretrain_steps = 600, extend_steps = 150;
  int64_t eval_windows = 64;
  uint64_t seed = 1234;
  std::string device;  // backend for training and evaluation; empty: LONGLORA_DEMO_DEVICE, else default_device()
};

// Returns the process exit code (0 on success).
int run_demo(const DemoOptions& options);

}  // namespace ll
