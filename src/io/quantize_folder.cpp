#include "io/quantize_folder.h"

#include <filesystem>

#include "core/backend.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "model/params.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

void quantize_hf_folder(const QuantizeFolderOptions& o, std::ostream& log) {
  LL_CHECK(!o.model_name_or_path.empty() && !o.output_dir.empty(),
           "--model_name_or_path and --output_dir are both required");
  LL_CHECK(is_directory(o.model_name_or_path), "--model_name_or_path `", o.model_name_or_path, "` is not a folder");
  std::error_code ec;
  LL_CHECK(!std::filesystem::equivalent(o.model_name_or_path, o.output_dir, ec), "--output_dir `", o.output_dir,
           "` must be a new folder, not the input");
  const HfConfig in = read_hf_config(o.model_name_or_path);
  LL_CHECK(!in.model.load_in_4bit, o.model_name_or_path, "/config.json: the folder is already 4-bit (",
           dtype_name(in.model.base_weight_format), "); quantize a dense folder");
  ModelConfig config = in.model;
  QuantOptions q = o.quant;
  q.load_in_4bit = true;
  apply_quant_options(q, /*low_rank_training=*/true, config);
  const DType dtype = compute_dtype(q);  // the dense tensors' dtype in the folder

  std::unique_ptr<Backend> backend = create_backend("cpu");
  ParamStore params(*backend, config, LoraConfig{}, TrainableConfig{});
  const HfLoadReport loaded = load_hf_weights(o.model_name_or_path, params, *backend);
  int64_t quantized = 0;
  for (const Param& p : params.all()) quantized += is_quantized(p.value.dtype) ? 1 : 0;
  log << "quantized " << quantized << " linear weights of " << loaded.tensors << " tensors to "
      << dtype_name(config.base_weight_format) << " (the others " << dtype_name(dtype) << ")\n";
  HfSaveOptions save;
  save.dtype = dtype;
  save.max_shard_bytes = o.max_shard_bytes;
  save.copy_tokenizer_from = o.model_name_or_path;
  save.info = in.info;
  save.keep_4bit = true;
  const HfSaveReport saved = save_hf_folder(o.output_dir, params, *backend, config, save);
  log << "wrote " << o.output_dir << ": " << saved.weight_files.size() << " weight file(s), " << saved.total_bytes
      << " bytes, config.json with quantization_config\n";
}

}  // namespace ll
