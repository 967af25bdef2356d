#include "io/config_checks.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>

#include "io/bnb_weights.h"
#include "io/param_io.h"
#include "model/param_select.h"
#include "model/registry.h"
#include "model/weight_format.h"
#include "util/error.h"
#include "util/host_memory.h"

namespace ll {

namespace {

// Parameter counts in long double: the sizes are untrusted, and their products may not fit 64 bits.
struct ParameterCount {
  long double embedding = 0, lm_head = 0, per_layer = 0, layers = 0, lora = 0;
  long double linear = 0;  // of `layers`: the Linear weights (4-bit under load_in_4bit)
  long double total() const { return embedding + lm_head + layers + lora; }
};

long double elements(const std::vector<int64_t>& shape) {
  long double n = 1;
  for (int64_t d : shape) n *= (long double)d;
  return n;
}

// From the table of one layer (its rows have the shapes every layer has), times num_hidden_layers.
ParameterCount count_parameters(const ModelConfig& c, const LoraConfig& lora) {
  const Architecture& arch = architecture_for(c.model_type);
  ModelConfig one_layer = c;
  one_layer.num_hidden_layers = 1;
  const std::vector<ParamSpec> table = arch.parameter_table(one_layer);
  const long double N = c.num_hidden_layers;
  ParameterCount n;
  long double outer_rest = 0;
  for (const ParamSpec& s : table) {
    if (!s.tied_to.empty()) continue;
    if (s.layer >= 0) n.per_layer += elements(s.shape);
    if (s.layer >= 0 && quantized_role(s.role)) n.linear += N * elements(s.shape);
    else if (s.role == ParamRole::Embedding) n.embedding += elements(s.shape);
    else if (s.role == ParamRole::OutputHead) n.lm_head += elements(s.shape);
    else outer_rest += elements(s.shape);
  }
  n.layers = N * n.per_layer + outer_rest;
  if (lora.enabled()) {
    const std::vector<std::string> targets = resolve_lora_targets(arch, table, lora.targets, "LoRA targets");
    for (const AdaptableModule& m : adaptable_modules(table)) {
      if (std::find(targets.begin(), targets.end(), m.name) == targets.end()) continue;
      for (const ParamSpec& s : table)
        if (s.layer == 0 && s.slot == m.slot)
          n.lora += N * (long double)lora.rank * ((long double)s.shape[0] + (long double)s.shape[1]);
    }
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
std::string dominant_part(const ModelConfig& c, const LoraConfig& lora, const ParameterCount& n) {
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

}  // namespace

void check_config_size(const ModelConfig& c, const std::string& where) {
  if (c.vocab_size > std::numeric_limits<int32_t>::max())
    fail(where, ": `vocab_size` is ", c.vocab_size, ", more than ", std::numeric_limits<int32_t>::max(),
         " (token ids are 32-bit); is the field wrong?");
  const ParameterCount n = count_parameters(c, LoraConfig{});
  if (n.total() > kMaxModelParameters)
    fail(where, ": these sizes describe a model of ", count_text(n.total()), " parameters (", dominant_part(c, {}, n),
         "), more than the ", count_text(kMaxModelParameters),
         " this engine accepts (5× the largest Llama); is a size field wrong?");
}

void check_config_matches_weights(const ModelConfig& c, const HfWeightFiles& w, const std::string& where) {
  std::map<std::string, FolderTensor> tensors;
  for (const auto& [name, file] : w.where) {
    if (is_bnb_companion(name)) continue;  // the parts of a 4-bit weight: it is compared by its logical shape
    tensors[name] = FolderTensor{bnb_logical_shape(w, name), file->path()};
  }
  architecture_for(c.model_type).check_folder_shapes(c, tensors, where);
}

void check_weights_fit_memory(const ModelConfig& c, const LoraConfig& lora, const Backend& backend,
                              const std::string& where) {
  DeviceMemoryState device;
  const bool on_device = backend.device_memory(&device);
  const size_t memory = on_device ? device.total_bytes : available_host_memory();
  if (memory == 0) return;
  const ParameterCount n = count_parameters(c, lora);
  const DType dtype = backend.dtypes().weight;
  long double bytes = n.total() * dtype_size(dtype);
  if (c.load_in_4bit) {  // a 4-bit base: its linears take the format's bytes (model/weight_format.h)
    constexpr int64_t kSample = int64_t(1) << 20;
    const long double per_element = (long double)storage_bytes(c.base_weight_format, kSample) / kSample;
    bytes -= n.linear * ((long double)dtype_size(dtype) - per_element);
  }
  if (bytes <= (long double)memory) return;
  fail(where, ": the model's weights alone need ", bytes_text(bytes), " as ", dtype_name(dtype), " (",
       count_text(n.total()), " parameters; ", dominant_part(c, lora, n), "), but the ", backend.name(),
       " backend has ",
       on_device ? str_cat(bytes_text(device.total_bytes), " of device memory on ", device.device)
                 : str_cat(bytes_text(memory), " of host memory available"),
       "; is a size field wrong, or is the model too large for this machine?");
}

}  // namespace ll
