#include "io/config_checks.h"

#include <cstdio>
#include <limits>
#include <set>

#include "io/param_io.h"
#include "util/error.h"
#include "util/host_memory.h"

namespace ll {

namespace {

// Parameter counts in long double: the sizes are untrusted, and their products may not fit 64 bits.
struct ParameterCount {
  long double embedding = 0, lm_head = 0, per_layer = 0, layers = 0, lora = 0;
  long double total() const { return embedding + lm_head + layers + lora; }
};

ParameterCount count_parameters(const LlamaConfig& c, const LoraConfig& lora) {
  const long double H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, N = c.num_hidden_layers;
  const long double q = c.num_attention_heads * (H / c.num_attention_heads);
  const long double kv = c.num_key_value_heads * (H / c.num_attention_heads);
  ParameterCount n;
  n.embedding = V * H;
  n.lm_head = c.tie_word_embeddings ? 0 : V * H;
  n.per_layer = H * q + 2 * H * kv + q * H + 3 * H * I + 2 * H;
  n.layers = N * n.per_layer + H;
  if (lora.enabled()) {
    // (in, out) of q, k, v, o, gate, up, down
    const long double dims[kNumLinearSlots][2] = {{H, q}, {H, kv}, {H, kv}, {q, H}, {H, I}, {H, I}, {I, H}};
    for (int s = 0; s < kNumLinearSlots; ++s)
      if (lora.on(LinearSlot(s))) n.lora += N * lora.rank * (dims[s][0] + dims[s][1]);
  }
  return n;
}

std::string count_text(long double n) {
  char buf[64];
  if (n < 1e6L) {
    std::snprintf(buf, sizeof buf, "%.0Lf", n);
  } else {
    std::snprintf(buf, sizeof buf, "%.3Lg", n);
  }
  return buf;
}

std::string bytes_text(long double bytes) {
  static const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  int u = 0;
  while (bytes >= 1024 && u < 8) bytes /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0Lf %s" : "%.1Lf %s", bytes, units[u]);
  return buf;
}

// The part of the count that makes it large, with the fields that make it so.
std::string dominant_part(const LlamaConfig& c, const LoraConfig& lora, const ParameterCount& n) {
  if (n.lora >= n.layers && n.lora >= n.embedding)
    return str_cat("LoRA r ", lora.rank, " over ", c.num_hidden_layers, " layers = ", count_text(n.lora),
                   " adapter parameters");
  if (n.embedding >= n.layers)
    return str_cat("vocab_size ", c.vocab_size, " × hidden_size ", c.hidden_size, " = ", count_text(n.embedding),
                   " in the embedding", c.tie_word_embeddings ? "" : " (and as many in lm_head)");
  return str_cat("num_hidden_layers ", c.num_hidden_layers, " × ", count_text(n.per_layer),
                 " per layer (hidden_size ", c.hidden_size, ", intermediate_size ", c.intermediate_size, ") = ",
                 count_text(n.layers));
}

const SafetensorsEntry* find_entry(const HfWeightFiles& w, const std::string& name, std::string* file) {
  const auto it = w.where.find(name);
  if (it == w.where.end()) return nullptr;
  *file = it->second->path();
  const SafetensorsEntry& e = it->second->entry(name);
  return e.shape.size() == 2 ? &e : nullptr;  // other ranks: the loader's shape check names them
}

// `field` (value `value`) must equal dimension `dim` of tensor `name` when the folder has it.
void expect_dim(const HfWeightFiles& w, const std::string& where, const std::string& name, int dim, int64_t expected,
                const std::string& field_text, const std::string& layout) {
  std::string file;
  const SafetensorsEntry* e = find_entry(w, name, &file);
  if (e == nullptr || e->shape[size_t(dim)] == expected) return;
  fail(where, ": ", field_text, " does not match the weights: `", name, "` is ", shape_text(e->shape), " (", layout,
       ") in ", file, "; is config.json from another model?");
}

// Layer indices present: the N of every "model.layers.N." name.
std::set<int64_t> layer_indices(const HfWeightFiles& w) {
  const std::string prefix = "model.layers.";
  std::set<int64_t> found;
  for (auto it = w.where.lower_bound(prefix); it != w.where.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it) {
    int64_t index = 0;
    size_t i = prefix.size();
    for (; i < it->first.size() && it->first[i] >= '0' && it->first[i] <= '9' && index < (int64_t(1) << 40); ++i)
      index = index * 10 + (it->first[i] - '0');
    if (i > prefix.size() && i < it->first.size() && it->first[i] == '.') found.insert(index);
  }
  return found;
}

}  // namespace

void check_config_size(const LlamaConfig& c, const std::string& where) {
  if (c.vocab_size > std::numeric_limits<int32_t>::max())
    fail(where, ": `vocab_size` is ", c.vocab_size, ", more than ", std::numeric_limits<int32_t>::max(),
         " (token ids are 32-bit); is the field wrong?");
  const ParameterCount n = count_parameters(c, LoraConfig{});
  if (n.total() > kMaxModelParameters)
    fail(where, ": these sizes describe a model of ", count_text(n.total()), " parameters (", dominant_part(c, {}, n),
         "), more than the ", count_text(kMaxModelParameters),
         " this engine accepts (5× the largest Llama); is a size field wrong?");
}

void check_config_matches_weights(const LlamaConfig& c, const HfWeightFiles& w, const std::string& where) {
  const auto field = [](const char* name, int64_t value) { return str_cat("`", name, "` ", value); };
  expect_dim(w, where, "model.embed_tokens.weight", 0, c.vocab_size, field("vocab_size", c.vocab_size),
             "vocab_size × hidden_size");
  expect_dim(w, where, "model.embed_tokens.weight", 1, c.hidden_size, field("hidden_size", c.hidden_size),
             "vocab_size × hidden_size");
  if (!c.tie_word_embeddings) {
    expect_dim(w, where, "lm_head.weight", 0, c.vocab_size, field("vocab_size", c.vocab_size),
               "vocab_size × hidden_size");
  }
  const std::set<int64_t> layers = layer_indices(w);
  if (!layers.empty() && (*layers.rbegin() + 1 != c.num_hidden_layers || int64_t(layers.size()) != c.num_hidden_layers))
    fail(where, ": ", field("num_hidden_layers", c.num_hidden_layers), " does not match the weights, which hold ",
         layers.size(), " layer(s) numbered ", *layers.begin(), " to ", *layers.rbegin(),
         " (model.layers.N.*); is config.json from another model?");
  const std::string layer0 = "model.layers." + std::to_string(layers.empty() ? 0 : *layers.begin()) + ".";
  expect_dim(w, where, layer0 + "self_attn.q_proj.weight", 1, c.hidden_size, field("hidden_size", c.hidden_size),
             "num_attention_heads × head_dim by hidden_size");
  expect_dim(w, where, layer0 + "self_attn.k_proj.weight", 0, c.kv_dim(),
             str_cat(field("num_key_value_heads", c.num_key_value_heads), " × head_dim ", c.head_dim(), " = ",
                     c.kv_dim()),
             "num_key_value_heads × head_dim by hidden_size");
  expect_dim(w, where, layer0 + "mlp.gate_proj.weight", 0, c.intermediate_size,
             field("intermediate_size", c.intermediate_size), "intermediate_size × hidden_size");
}

void check_weights_fit_memory(const LlamaConfig& c, const LoraConfig& lora, const Backend& backend,
                              const std::string& where) {
  DeviceMemoryState device;
  const bool on_device = backend.device_memory(&device);
  const size_t memory = on_device ? device.total_bytes : available_host_memory();
  if (memory == 0) return;
  const ParameterCount n = count_parameters(c, lora);
  const DType dtype = backend.dtypes().weight;
  const long double bytes = n.total() * dtype_size(dtype);
  if (bytes <= (long double)memory) return;
  fail(where, ": the model's weights alone need ", bytes_text(bytes), " as ", dtype_name(dtype), " (",
       count_text(n.total()), " parameters; ", dominant_part(c, lora, n), "), but the ", backend.name(),
       " backend has ",
       on_device ? str_cat(bytes_text(device.total_bytes), " of device memory on ", device.device)
                 : str_cat(bytes_text(memory), " of host memory available"),
       "; is a size field wrong, or is the model too large for this machine?");
}

}  // namespace ll
