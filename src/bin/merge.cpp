// build/merge: base HF folder + PEFT/LongLoRA adapter folder → a merged HF folder (W + (α/r)·B·A, trainable
// embed/norm replaced, rope_scaling recorded in config.json, tokenizer files copied). The work is in io/merge.h.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "io/merge.h"
#include "io/model_folder.h"
#include "util/error.h"
#include "util/flags.h"

int main(int argc, char** argv) {
  ll::MergeOptions o;
  int64_t shard_mb = 5000;  // transformers' default max_shard_size ("5GB")
  ll::Flags flags("merge",
                  "Merges a LoRA adapter (PEFT adapter_model.safetensors, plus LongLoRA's trainable embed/norm) into a "
                  "Hugging Face Llama folder\nand writes a complete HF folder that transformers loads without PEFT.");
  flags.add("base_model", &o.base_model, "base HF folder: config.json + model.safetensors or sharded safetensors");
  flags.add("peft_model", &o.peft_model,
            "adapter folder: adapter_config.json, adapter_model.safetensors, optional trainable_params.safetensors "
            "and longlora.json");
  flags.add("save_path", &o.save_path, "output folder (created; must differ from the inputs)");
  flags.add("max_shard_size_mb", &shard_mb, "largest weight file in MB (10^6 bytes); 0 writes one model.safetensors")
      .at_least(0)
      .at_most(1e9);  // 1 PB: keeps shard_mb · 10^6 within uint64
  flags.add("dtype", &o.dtype, "weight dtype written: bf16, f16, f32, or auto (the base's torch_dtype)");
  flags.add("add_pad_token", &o.add_pad_token,
            "append LongLoRA's [PAD] row (mean of the others) to embed and lm_head: true, false, or auto (when the "
            "adapter's vocabulary is the base's + 1)");
  flags.add("rope_scaling_factor", &o.rope_scaling_factor,
            "linear RoPE factor for config.json (0: from --context_size, else from the adapter's longlora.json)")
      .at_least(0);
  flags.add("context_size", &o.context_size,
            "training context length; the factor is LongLoRA's ceil(context / (max_position_embeddings × base factor))")
      .at_least(0);
  flags.add("backend", &o.backend, "backend holding the model while merging (cpu: fp32 in host memory)");
  // merge_lora_weights_and_save_hf_model.py's flags are the ones above, plus:
  flags.add_ignored("cache_dir", "models are read from local folders; nothing is downloaded or cached");
  try {
    if (!flags.parse(argc, argv)) return 0;
    o.max_shard_bytes = uint64_t(shard_mb) * 1000000ull;
    for (const std::string& note : flags.notes()) std::fprintf(stderr, "%s\n", note.c_str());
    o.base_model = ll::resolve_base_model(o.base_model, &std::cerr);
    ll::merge_adapter_folder(o, std::cout);
  } catch (const std::exception& e) {
    std::string message = ll::exception_message(e);
    if (message.rfind("merge: ", 0) == 0) message.erase(0, 7);  // Flags' messages already name the program
    std::fprintf(stderr, "merge: error: %s\n", message.c_str());
    return 1;
  }
  return 0;
}
