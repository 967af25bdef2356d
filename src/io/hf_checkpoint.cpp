#include "io/hf_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "io/bnb_weights.h"
#include "io/hf_weight_files.h"
#include "io/json_util.h"
#include "io/param_io.h"
#include "io/safetensors.h"
#include "core/quantize.h"
#include "core/tensor_host.h"
#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kSingleFile = kHfWeightsFile;
constexpr const char* kIndexFile = kHfWeightIndexFile;
const char* const kCopiedFiles[] = {"tokenizer.model",  "tokenizer.json",    "tokenizer_config.json",
                                    "special_tokens_map.json", "added_tokens.json", "generation_config.json"};

bool ignorable(const std::string& name, ParamStore& params) {
  if (params.architecture().ignored_tensor(name)) return true;
  // A tied model's head is the embedding; some writers still store it under the head's name.
  for (const ParamSpec& s : params.table())
    if (!s.tied_to.empty() && s.name == name) return true;
  return false;
}

// LongLoRA's [PAD] row: the file holds rows [0, V); row V of the parameter becomes their mean (computed in double).
void load_padded(Backend& backend, Param& p, const SafetensorsEntry& e, const std::string& file) {
  LL_CHECK(is_dense_float(e.dtype), file, ": tensor `", e.name, "` is ", safetensors_dtype_name(e.dtype),
           "; weights must be BF16, F16, F32 or F64");
  const int64_t rows = e.shape[0], cols = e.shape[1];
  const size_t in_row = size_t(cols) * dtype_size(e.dtype), out_row = size_t(cols) * dtype_size(p.value.dtype);
  std::vector<unsigned char> staging(p.value.nbytes());
  // The [PAD] row below is the mean of finite rows, so finite too.
  convert_checked(e.data, e.dtype, staging.data(), p.value.dtype, e.shape, file, e.name, kNonFiniteInFile);
  std::vector<double> sum(static_cast<size_t>(cols), 0.0), row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    convert_values(static_cast<const unsigned char*>(e.data) + size_t(r) * in_row, e.dtype, row.data(), DType::F64,
                   size_t(cols));
    for (int64_t c = 0; c < cols; ++c) sum[c] += row[c];
  }
  for (double& v : sum) v /= double(rows);
  convert_values(sum.data(), DType::F64, staging.data() + size_t(rows) * out_row, p.value.dtype, size_t(cols));
  backend.copy_from_host(p.value, staging.data());
}

void check_lora_merged(ParamStore& params, Backend& backend) {
  for (Param& p : params.all()) {
    if (p.role != ParamRole::LoraB) continue;
    for (double v : download_f64(backend, p.value))
      LL_CHECK(v == 0.0, "save_hf_folder: `", p.name,
               "` is non-zero, so the model's LoRA adapters are not merged and would be lost; merge them into the "
               "base weights first (merge_lora) or save them as an adapter (save_adapter)");
  }
}

void remove_if_present(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
  LL_CHECK(!ec, "cannot remove the stale file `", path, "`: ", ec.message());
}

// Weight files of an earlier save that the layout just written does not use.
void remove_stale_weights(const std::string& dir, const std::vector<std::string>& written) {
  const std::set<std::string> keep(written.begin(), written.end());
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    const bool shard =
        name.rfind("model-", 0) == 0 && ends_with(name, ".safetensors") && name.find("-of-") != std::string::npos;
    if ((shard || name == kSingleFile) && !keep.count(name)) remove_if_present(e.path().string());
  }
  if (written.size() == 1 && written[0] == kSingleFile) remove_if_present(dir + "/" + kIndexFile);
}

}  // namespace

std::string hf_shard_name(int index, int count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index, count);
  return buf;
}

HfLoadReport load_hf_weights(const std::string& dir, ParamStore& params, Backend& backend, const HfLoadOptions& options) {
  const HfWeightFiles src = open_hf_weight_files(dir);
  HfLoadReport report;
  for (const auto& f : src.files) report.files.push_back(f->path());

  std::vector<std::string> missing, unknown;
  std::set<std::string> needed;
  for (Param& p : params.all()) {
    if (p.is_lora()) continue;
    needed.insert(p.name);
    if (!src.where.count(p.name)) missing.push_back(p.name);
  }
  for (const auto& [name, file] : src.where) {
    if (needed.count(name)) continue;
    // The parts of a bitsandbytes 4-bit weight are read with it (io/bnb_weights.h).
    if (is_bnb_companion(name) && needed.count(name.substr(0, name.find(".weight.") + 7))) continue;
    if (ignorable(name, params)) {
      report.ignored.push_back(name);
    } else {
      unknown.push_back(name);
    }
  }
  const std::string source = src.files.size() == 1 ? src.files[0]->path() : dir + "/" + kIndexFile;
  if (!missing.empty())
    fail(source, ": missing ", missing.size(), " weight(s) the model needs: ", name_list(missing),
         " (is config.json's num_hidden_layers / tie_word_embeddings right for these weights?)");
  if (!unknown.empty())
    fail(source, ": has ", unknown.size(), " tensor(s) a ", params.config().model_type,
         " model of this config does not use: ", name_list(unknown));

  params.write_all([&](Param& p) {
    if (p.is_lora()) return;
    const SafetensorsFile& file = *src.where.at(p.name);
    const SafetensorsEntry& e = file.entry(p.name);
    const bool vocab_row = p.role == ParamRole::Embedding || p.role == ParamRole::OutputHead;
    const bool one_short = vocab_row && e.shape.size() == 2 && e.shape[0] + 1 == p.shape[0] && e.shape[1] == p.shape[1];
    const TensorLookup lookup = [&](const std::string& name) -> const SafetensorsEntry* {
      const auto it = src.where.find(name);
      return it == src.where.end() ? nullptr : &it->second->entry(name);
    };
    const DType stored = e.dtype == DType::U8 ? bnb_stored_format(lookup, p.name, file.path()) : DType::F32;
    if (is_quantized(stored)) {  // a bitsandbytes 4-bit weight: kept 4-bit, or dequantized for a dense model
      const DType format = is_quantized(p.value.dtype) ? p.value.dtype : stored;
      const std::vector<uint8_t> bytes = read_bnb_weight(lookup, p.name, format, p.shape, file.path());
      if (is_quantized(p.value.dtype)) {
        backend.copy_from_host(p.value, bytes.data());
      } else {
        std::vector<float> values(static_cast<size_t>(p.numel()));
        dequantize_4bit(format, bytes.data(), p.numel(), 0, p.numel(), values.data());
        std::vector<unsigned char> staging(p.value.nbytes());
        convert_values(values.data(), DType::F32, staging.data(), p.value.dtype, values.size());
        backend.copy_from_host(p.value, staging.data());
      }
    } else if (one_short && options.add_pad_token) {
      load_padded(backend, p, e, file.path());
      report.padded = true;
    } else {
      load_entry(backend, p, e, file.path(),
                 one_short ? " (the model has one more vocabulary row: load with add_pad_token to append LongLoRA's "
                             "[PAD] row as the mean of the others)"
                           : "");
    }
    ++report.tensors;
  });
  return report;
}

HfSaveReport save_hf_folder(const std::string& dir, ParamStore& params, Backend& backend, const ModelConfig& config,
                            const HfSaveOptions& options) {
  LL_CHECK(options.dtype == DType::BF16 || options.dtype == DType::F16 || options.dtype == DType::F32,
           "save_hf_folder: dtype must be bf16, f16 or f32, got ", dtype_name(options.dtype));
  check_lora_merged(params, backend);
  make_directories(dir);
  remove_if_present(dir + "/config.json");  // written last again: an interrupted save leaves no config.json

  // Plan shards the way transformers does: in parameter order, a new shard when the next tensor would overflow.
  std::vector<Param*> tensors;
  for (Param& p : params.all())
    if (!p.is_lora()) tensors.push_back(&p);
  const size_t out_elem = dtype_size(options.dtype);
  std::vector<std::vector<Param*>> shards(1);
  uint64_t shard_bytes = 0;
  HfSaveReport report;
  for (Param* p : tensors) {
    const bool four_bit = options.keep_4bit && is_quantized(p->value.dtype);
    const uint64_t bytes = four_bit ? uint64_t(p->value.nbytes()) : uint64_t(p->numel()) * out_elem;
    if (options.max_shard_bytes > 0 && !shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(p);
    shard_bytes += bytes;
    report.total_bytes += bytes;
  }
  const bool sharded = shards.size() > 1;  // like transformers: one file when everything fits under the cap

  Json weight_map = Json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = sharded ? hf_shard_name(int(s + 1), int(shards.size())) : kSingleFile;
    std::vector<Param*> dense;
    for (Param* p : shards[s])
      if (!(options.keep_4bit && is_quantized(p->value.dtype))) dense.push_back(p);
    HostTensors host = host_copies(dense, backend, options.dtype, dir + "/" + name);
    for (Param* p : shards[s]) {
      if (!(options.keep_4bit && is_quantized(p->value.dtype))) continue;
      std::vector<uint8_t> raw(p->value.nbytes());
      backend.copy_to_host(raw.data(), p->value);
      append_bnb_weight(p->name, p->value.dtype, p->shape, raw.data(), torch_dtype_name(options.dtype), host);
    }
    write_safetensors(dir + "/" + name, host.items);
    for (const SafetensorsWriteItem& item : host.items) weight_map[item.name] = name;
    report.weight_files.push_back(name);
  }
  if (sharded) {
    const Json index = {{"metadata", {{"total_size", report.total_bytes}}}, {"weight_map", weight_map}};
    write_file_atomic(dir + "/" + kIndexFile, index.dump(2) + "\n");
  }
  std::error_code same_ec;
  if (!options.copy_tokenizer_from.empty() && !fs::equivalent(options.copy_tokenizer_from, dir, same_ec)) {
    for (const char* name : kCopiedFiles) {
      const std::string from = options.copy_tokenizer_from + "/" + name;
      if (!path_exists(from)) continue;
      write_file_atomic(dir + "/" + name, read_text_file(from));
      report.copied.push_back(name);
    }
  }
  remove_stale_weights(dir, report.weight_files);
  Json config_json = hf_config_json(config, options.dtype, options.info);
  if (options.keep_4bit && config.load_in_4bit)
    config_json["quantization_config"] =
        bnb_quantization_config(config.base_weight_format, torch_dtype_name(options.dtype), {});
  write_file_atomic(dir + "/config.json", config_json.dump(2) + "\n");
  return report;
}

}  // namespace ll
