#include "eval/eval_model.h"

#include <cmath>

#include "io/config_checks.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

namespace {

// eval.py / passkey_retrivial.py: ceil(context / max_position_embeddings) when the context is longer, else 1.
double ceil_rule(int64_t context, int64_t max_pos) {
  return context > max_pos ? std::ceil(double(context) / double(max_pos)) : 1.0;
}

}  // namespace

RopeChoice choose_eval_rope_factor(double explicit_factor, int64_t context_flag, int64_t default_context,
                                   int64_t max_pos, double base_factor, const std::optional<LongLoraRecord>& record) {
  LL_CHECK(max_pos > 0, "rope factor: max_position_embeddings must be positive, got ", max_pos);
  LL_CHECK(explicit_factor == 0 || explicit_factor >= 1, "--rope_scaling_factor must be >= 1 (or 0 for the rules), got ",
           explicit_factor);
  RopeChoice c;
  const int64_t context = context_flag > 0 ? context_flag : default_context;
  if (explicit_factor > 0) {
    c.factor = explicit_factor;
    c.reason = "--rope_scaling_factor";
  } else if (context_flag <= 0 && record) {
    c.factor = record->rope_scaling_factor;
    c.reason = str_cat("the adapter's longlora.json (trained at ", record->model_max_length, " tokens)");
  } else if (base_factor != 1.0) {
    c.factor = base_factor;
    c.reason = "the base config.json's rope_scaling";
    if (context_flag > 0 && ceil_rule(context_flag, max_pos) != base_factor)
      c.warnings.push_back(str_cat("LongLoRA's eval.py would override the config's factor ", base_factor, " with ceil(",
                                   context_flag, " / ", max_pos, ") = ", ceil_rule(context_flag, max_pos),
                                   "; pass --rope_scaling_factor ", ceil_rule(context_flag, max_pos), " to do that"));
  } else if (context > 0) {
    c.factor = ceil_rule(context, max_pos);
    c.reason = str_cat(context_flag > 0 ? "--context_size " : "context (default: --seq_len) ", context,
                       " with max_position_embeddings ", max_pos);
  } else {
    c.factor = 1.0;
    c.reason = "no context given and no rope_scaling in config.json";
  }
  if (record && record->rope_scaling_factor != c.factor)
    c.warnings.push_back(str_cat("the adapter was trained with RoPE factor ", record->rope_scaling_factor,
                                 " (longlora.json) but factor ", c.factor, " is used"));
  return c;
}

int64_t choose_eval_vocab(const std::string& mode, int64_t base_vocab, int64_t adapter_rows, int64_t recorded,
                          const std::string& peft_dir) {
  LL_CHECK(mode == "auto" || mode == "true" || mode == "false", "--add_pad_token: expected auto, true or false, got `",
           mode, "`");
  int64_t vocab = base_vocab;
  if (mode == "true") vocab = base_vocab + 1;
  if (mode == "auto") vocab = adapter_rows > 0 ? adapter_rows : recorded > 0 ? recorded : base_vocab;
  const std::string where = peft_dir.empty() ? std::string("--add_pad_token") : "--peft_model `" + peft_dir + "`";
  LL_CHECK(vocab == base_vocab || vocab == base_vocab + 1, where, ": the adapter's vocabulary is ", vocab,
           " but the base model's is ", base_vocab,
           "; only equal or one more (LongLoRA's [PAD] row) fit this base — is it the base the adapter was trained on?");
  LL_CHECK(adapter_rows <= 0 || adapter_rows == vocab, where, ": the adapter saves an embedding of ", adapter_rows,
           " rows but --add_pad_token ", mode, " gives a vocabulary of ", vocab);
  return vocab;
}

nlohmann::json EvalModel::describe() const {
  return {{"vocab_size", config.vocab_size}, {"base_vocab_size", base_vocab}, {"pad_row_added", padded},
          {"rope_scaling_factor", rope.factor}, {"rope_reason", rope.reason}, {"rope_warnings", rope.warnings},
          {"layers", config.num_hidden_layers}, {"hidden_size", config.hidden_size},
          {"max_position_embeddings", config.max_position_embeddings}};
}

EvalModelOptions eval_model_options(const EvalModelFlags& flags, int64_t batch, int64_t seq_len,
                                    int64_t default_context) {
  EvalModelOptions o;
  static_cast<EvalModelFlags&>(o) = flags;
  o.batch = batch;
  o.seq_len = seq_len;
  o.default_context = default_context;
  return o;
}

EvalModel load_eval_model(const EvalModelOptions& o, std::ostream& log) {
  LL_CHECK(!o.base_model.empty(), "--base_model is required (a Hugging Face model folder)");
  LL_CHECK(is_directory(o.base_model), "--base_model `", o.base_model, "` is not a folder");
  LL_CHECK(o.peft_model.empty() || is_directory(o.peft_model), "--peft_model `", o.peft_model, "` is not a folder");
  const HfConfig hf = read_hf_config(o.base_model);
  EvalModel m;
  m.config = hf.model;
  m.base_vocab = hf.model.vocab_size;
  std::optional<LongLoraRecord> record;
  ModelOptions mo;
  if (!o.peft_model.empty()) {
    mo.lora = read_adapter_config(o.peft_model, hf.model).lora;
    record = read_longlora_record(o.peft_model);
  }
  const int64_t adapter_rows = o.peft_model.empty() ? 0 : adapter_embedding_rows(o.peft_model, hf.model);
  m.config.vocab_size = choose_eval_vocab(o.add_pad_token, hf.model.vocab_size, adapter_rows,
                                          record ? record->vocab_size : 0, o.peft_model);
  m.padded = m.config.vocab_size == hf.model.vocab_size + 1;
  m.rope = choose_eval_rope_factor(o.rope_scaling_factor, o.context_size, o.default_context,
                                   hf.model.max_position_embeddings, hf.model.rope_scaling_factor, record);
  m.config.rope_scaling_factor = m.rope.factor;
  apply_quant_options(o.quant, /*low_rank_training=*/true, m.config);  // evaluation trains nothing

  m.backend = create_backend(o.device, o.device_index);
  mo.config = m.config;
  mo.batch = o.batch;
  mo.seq_len = o.seq_len;
  mo.checkpoint_layers = mo.config.num_hidden_layers;  // forward only: one shared set of layer activations is enough
  check_weights_fit_memory(mo.config, mo.lora, *m.backend, o.base_model + "/config.json");
  m.model = std::make_unique<Model>(*m.backend, mo);
  const HfLoadReport loaded = load_hf_weights(o.base_model, m.model->params(), *m.backend, {m.padded});
  log << "model: " << o.base_model << " (" << m.config.num_hidden_layers << " layers, hidden " << m.config.hidden_size
      << ", heads " << m.config.num_attention_heads << "/" << m.config.num_key_value_heads << ", vocab "
      << m.config.vocab_size << (m.padded ? " with [PAD] row added" : "") << "), " << loaded.tensors
      << " tensors from " << loaded.files.size() << " file(s)\n";
  if (!o.peft_model.empty()) {
    const AdapterLoadReport a = load_adapter(o.peft_model, m.model->params(), *m.backend);
    log << "adapter: " << o.peft_model << " (LoRA r " << mo.lora.rank << ", alpha " << mo.lora.alpha << ", not merged; "
        << a.lora_tensors << " LoRA tensors, " << a.base.size() << " base weights replaced)\n";
  }
  log << "RoPE: linear factor " << m.rope.factor << " (" << m.rope.reason << ")\n";
  for (const std::string& w : m.rope.warnings) log << "warning: " << w << "\n";
  return m;
}

}  // namespace ll
