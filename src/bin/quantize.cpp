// build/quantize: a dense Hugging Face folder → the transformers + bitsandbytes 4-bit layout (QLoRA's base). The work
// is in io/quantize_folder.h.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "io/quantize_folder.h"
#include "util/error.h"
#include "util/flags.h"

int main(int argc, char** argv) {
  ll::QuantizeFolderOptions o;
  int64_t shard_mb = 5000;  // transformers' default max_shard_size ("5GB")
  ll::Flags flags("quantize",
                  "Quantizes a dense Hugging Face folder to 4 bits as transformers + bitsandbytes save it (every linear "
                  "but the output head;\nnf4 or fp4, optionally double-quantized); train, eval and merge load the "
                  "result directly.");
  flags.add("model_name_or_path", &o.model_name_or_path, "dense HF folder (bf16, f16 or f32 safetensors)");
  flags.add("output_dir", &o.output_dir, "output folder (created; must differ from the input)");
  ll::add_quant_flags(flags, o.quant);
  flags.add("max_shard_size_mb", &shard_mb, "largest weight file in MB (10^6 bytes); 0 writes one model.safetensors")
      .at_least(0)
      .at_most(1e9);
  try {
    if (!flags.parse(argc, argv)) return 0;
    o.max_shard_bytes = uint64_t(shard_mb) * 1000000ull;
    ll::quantize_hf_folder(o, std::cout);
  } catch (const std::exception& e) {
    std::string message = ll::exception_message(e);
    if (message.rfind("quantize: ", 0) == 0) message.erase(0, 10);
    std::fprintf(stderr, "quantize: error: %s\n", message.c_str());
    return 1;
  }
  return 0;
}
