#include "io/merge.h"

#include <filesystem>
#include <memory>
#include <optional>

#include "io/config_checks.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/peft.h"
#include "core/tensor_host.h"
#include "util/error.h"
#include "util/files.h"
#include "core/dtype_names.h"

namespace ll {

int merge_lora(ParamStore& params, Backend& backend, const LoraConfig& lora) {
  int merged = 0;
  for (const Param& p : params.all()) {
    if (p.role != ParamRole::Linear) continue;
    const GroupSlots& group = params.slots(p.layer);
    Param* a = group.lora_a[size_t(p.slot)];
    Param* b = group.lora_b[size_t(p.slot)];
    if (a == nullptr) continue;
    LL_CHECK(!is_quantized(p.value.dtype), "merge_lora: `", p.name, "` is ", dtype_name(p.value.dtype),
             "; an adapter is merged into a dense copy of a 4-bit base (dense_merged_copy)");
    const int64_t out = p.shape[0], in = p.shape[1], r = a->shape[0];
    std::vector<double> w = download_f64(backend, p.value);
    const std::vector<double> av = download_f64(backend, a->value), bv = download_f64(backend, b->value);
    const double scale = lora.scale();
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out; ++o) {
      std::vector<double> delta(size_t(in), 0.0);  // (B·A)[o, :], summed over k in order
      for (int64_t k = 0; k < r; ++k) {
        const double bk = bv[size_t(o * r + k)];
        for (int64_t i = 0; i < in; ++i) delta[i] += bk * av[size_t(k * in + i)];
      }
      for (int64_t i = 0; i < in; ++i) w[size_t(o * in + i)] += scale * delta[i];
    }
    upload_f64(backend, p.value, w);
    backend.zero(b->value);
    ++merged;
  }
  return merged;
}

std::unique_ptr<ParamStore> dense_merged_copy(ParamStore& params, Backend& backend, const ModelConfig& config,
                                              const LoraConfig& lora, Backend& host) {
  ModelConfig dense = config;
  dense.load_in_4bit = false;
  auto out = std::make_unique<ParamStore>(host, dense, lora, TrainableConfig{});
  for (Param& p : out->all()) upload_f64(host, p.value, download_f64(backend, params.get(p.name).value));
  merge_lora(*out, host, lora);
  return out;
}

namespace {

DType output_dtype(const std::string& flag, const std::string& base_torch_dtype) {
  if (const std::optional<DType> t = float_dtype_named(flag == "auto" ? base_torch_dtype : flag)) return *t;
  LL_CHECK(flag == "auto", "--dtype: expected bf16, f16, f32 or auto, got \"", flag, "\"");
  return DType::BF16;  // the base names no (or an unusual) dtype
}

int64_t merged_vocab(const MergeOptions& o, int64_t base_vocab, int64_t adapter_rows, int64_t recorded) {
  const std::string& mode = o.add_pad_token;
  LL_CHECK(mode == "auto" || mode == "true" || mode == "false", "--add_pad_token: expected auto, true or false, got \"",
           mode, "\"");
  int64_t vocab = base_vocab;
  if (mode == "true") vocab = base_vocab + 1;
  if (mode == "auto") vocab = adapter_rows ? adapter_rows : recorded ? recorded : base_vocab;
  LL_CHECK(vocab == base_vocab || vocab == base_vocab + 1, o.peft_model, ": the adapter's vocabulary is ", vocab,
           " but the base model's is ", base_vocab, "; only equal or one more (LongLoRA's [PAD]) can be merged");
  LL_CHECK(adapter_rows == 0 || adapter_rows == vocab, o.peft_model, ": the adapter saves an embedding of ",
           adapter_rows, " rows but --add_pad_token ", mode, " gives a vocabulary of ", vocab);
  return vocab;
}

double merged_rope_factor(const MergeOptions& o, const ModelConfig& base, const std::optional<LongLoraRecord>& record,
                          std::ostream& log) {
  LL_CHECK(!(o.rope_scaling_factor > 0 && o.context_size > 0),
           "pass either --rope_scaling_factor or --context_size, not both");
  if (o.rope_scaling_factor > 0) return o.rope_scaling_factor;
  if (o.context_size > 0) {
    const double f = derive_rope_factor(o.context_size, base.max_position_embeddings, base.rope_scaling_factor);
    log << "rope: context " << o.context_size << " with max_position_embeddings " << base.max_position_embeddings
        << " and base factor " << base.rope_scaling_factor << " gives factor " << f << "\n";
    return f;
  }
  LL_CHECK(record.has_value(), o.peft_model,
           ": has no longlora.json recording the training RoPE factor; pass --context_size N (the training "
           "model_max_length, e.g. 32768 → factor 8 for Llama-2) or --rope_scaling_factor F (1 for no interpolation)");
  return record->rope_scaling_factor;
}

bool same_folder(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec);
}

}  // namespace

void merge_adapter_folder(const MergeOptions& o, std::ostream& log) {
  LL_CHECK(!o.base_model.empty() && !o.peft_model.empty() && !o.save_path.empty(),
           "--base_model, --peft_model and --save_path are all required");
  LL_CHECK(!same_folder(o.save_path, o.base_model) && !same_folder(o.save_path, o.peft_model),
           "--save_path `", o.save_path, "` must be a new folder, not one of the inputs");
  const HfConfig base = read_hf_config(o.base_model);
  const AdapterConfig adapter = read_adapter_config(o.peft_model, base.model);
  const std::optional<LongLoraRecord> record = read_longlora_record(o.peft_model);
  log << "base: " << o.base_model << " (" << base.model.num_hidden_layers << " layers, hidden "
      << base.model.hidden_size << ", vocab " << base.model.vocab_size << ", rope factor "
      << base.model.rope_scaling_factor << ")\n";
  log << "adapter: " << o.peft_model << " (r " << adapter.lora.rank << ", alpha " << adapter.lora.alpha
      << ", scale " << adapter.lora.scale() << ")\n";

  ModelConfig config = base.model;
  config.vocab_size = merged_vocab(o, base.model.vocab_size, adapter_embedding_rows(o.peft_model, base.model),
                                   record ? record->vocab_size : 0);
  config.rope_scaling_factor = merged_rope_factor(o, base.model, record, log);
  // A 4-bit base (a bitsandbytes folder) merges into dense weights: its linears are dequantized on load, the adapter
  // added, and the folder written dense (as PEFT's merge_and_unload of a 4-bit model followed by dequantize()).
  config.load_in_4bit = false;
  const DType dtype = output_dtype(o.dtype, base.info.torch_dtype);

  std::unique_ptr<Backend> backend = create_backend(o.backend);
  check_weights_fit_memory(config, adapter.lora, *backend, o.base_model + "/config.json");
  ParamStore params(*backend, config, adapter.lora, TrainableConfig{});
  const bool pad = config.vocab_size == base.model.vocab_size + 1;
  const HfLoadReport loaded = load_hf_weights(o.base_model, params, *backend, {pad});
  log << "loaded " << loaded.tensors << " base tensors from " << loaded.files.size() << " file(s)"
      << (pad ? str_cat("; added [PAD] row ", base.model.vocab_size, " (mean of the others) to embed and lm_head") : "")
      << "\n";
  const AdapterLoadReport adapted = load_adapter(o.peft_model, params, *backend);
  log << "loaded " << adapted.lora_tensors << " LoRA tensors";
  if (!adapted.base.empty())
    log << " and replaced " << adapted.base.size() << " base weights (embeddings/norms/output head)";
  log << "\n";
  const int merged = merge_lora(params, *backend, adapter.lora);
  log << "merged W += " << adapter.lora.scale() << "·B·A into " << merged << " projections (fp64)\n";

  HfSaveOptions save;
  save.dtype = dtype;
  save.max_shard_bytes = o.max_shard_bytes;
  save.copy_tokenizer_from = o.base_model;
  save.info = base.info;
  const HfSaveReport saved = save_hf_folder(o.save_path, params, *backend, config, save);
  log << "wrote " << o.save_path << ": " << saved.weight_files.size() << " weight file(s), " << saved.total_bytes
      << " bytes of " << dtype_name(dtype) << ", config.json with rope_scaling "
      << hf_config_json(config, dtype).value("rope_scaling", nlohmann::json()).dump()
      << ", vocab " << config.vocab_size << "\n";
  log << "copied from the base: " << (saved.copied.empty() ? std::string("nothing") : "");
  bool tokenizer = false;
  for (size_t i = 0; i < saved.copied.size(); ++i) {
    log << (i ? ", " : "") << saved.copied[i];
    tokenizer = tokenizer || saved.copied[i].rfind("tokenizer", 0) == 0;
  }
  log << "\n";
  if (!tokenizer) log << "note: the base folder has no tokenizer files; copy them into " << o.save_path << " yourself\n";
}

}  // namespace ll
