// build/bench_cpu_train: CPU training throughput of the demo model (a benchmark, not a test). Runs a few optimizer
// steps per configuration on random tokens and prints tokens/s with the ratio to the first row (the baseline:
// full attention, no checkpointing) measured in the same run on the same machine; --json writes the table.
// --case peft runs the comparison with PyTorch + PEFT (scripts/bench_hf_baseline.py --device cpu --ours FILE):
// a 512-wide, 4-layer Llama with the demo's vocabulary and head counts, 1024 tokens, LoRA+ with S2-Attn, with and
// without checkpointing; its JSON also records the model's shape so the baseline can build the same one.
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "core/profiling_backend.h"
#include "model/model.h"
#include "model/param_select.h"
#include "model/registry.h"
#include "optim/adamw.h"
#include "util/error.h"
#include "util/files.h"
#include "util/flags.h"
#include "util/random.h"

namespace {

struct Case {
  const char* name;
  int64_t seq_len, batch;
  bool s2, checkpointing, lora;
};

// The model of --case peft: the demo's vocabulary, layers and head counts, 8× wider (head dim 128, as Llama-2's),
// the MLP 8× wider too.
ll::ModelConfig peft_case_config() {
  ll::ModelConfig c;
  ll::model_preset("demo", &c);
  c.hidden_size *= 8;
  c.intermediate_size *= 8;
  return c;
}

double tokens_per_sec(ll::Backend& backend, const ll::ModelConfig& config, const Case& c, int64_t steps) {
  ll::ModelOptions mo;
  mo.config = config;
  mo.config.rope_scaling_factor = double(c.seq_len) / double(mo.config.max_position_embeddings);
  mo.batch = c.batch;
  mo.seq_len = c.seq_len;
  mo.attention.use_s2 = c.s2;
  mo.checkpoint_layers = c.checkpointing ? mo.config.num_hidden_layers : 0;
  if (c.lora) {
    mo.lora.rank = 8;
    mo.lora.targets = ll::parse_lora_targets("q,k,v,o", mo.config);
    mo.trainable = ll::TrainableConfig::parse("embed,norm");
  } else {
    mo.trainable.all = true;
  }
  ll::Model model(backend, mo);
  model.init_random(1);
  ll::AdamW opt(backend, model.params(), {});
  ll::Rng rng(2);
  std::vector<int32_t> tokens(c.batch * c.seq_len), targets(tokens.size());
  auto step = [&] {
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(rng.below(uint64_t(mo.config.vocab_size)));
    for (size_t i = 0; i < tokens.size(); ++i) targets[i] = (i + 1) % size_t(c.seq_len) ? tokens[i + 1] : -100;
    model.params().zero_grads();
    model.forward_backward(tokens.data(), targets.data());
    opt.clip_grad_norm(1.0);
    opt.step(1e-3);
  };
  step();  // warm-up: first-touch page faults, BLAS thread start
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < steps; ++s) step();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(steps * c.batch * c.seq_len) / secs;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int64_t steps = 10;
    std::string json, device = "cpu", bench_case = "table";
    bool profile_ops = false;
    ll::Flags flags("bench_cpu_train", "Training throughput of the demo model on the CPU backend (prints a table).");
    flags.add("steps", &steps, "timed optimizer steps per configuration (after one warm-up step)").at_least(1);
    flags.add("device", &device, "backend");
    flags.add("json", &json, "also write the table to this JSON file");
    flags.add("case", &bench_case,
              "`table`: the demo model in six configurations; `peft`: the PyTorch + PEFT comparison (a 512-wide "
              "Llama, 1024 tokens, LoRA+ with S2-Attn, with and without checkpointing)");
    flags.add("profile_ops", &profile_ops,
              "time every backend op (synchronising after each) and print a per-op table after each configuration");
    if (!flags.parse(argc, argv)) return 0;
    LL_CHECK(bench_case == "table" || bench_case == "peft", "--case: expected `table` or `peft`, got `", bench_case,
             "`");
    const std::vector<Case> cases =
        bench_case == "peft"
            ? std::vector<Case>{{"S2-Attn + LoRA+, 1024 tokens", 1024, 1, true, false, true},
                                {"S2-Attn + LoRA+ + checkpointing, 1024 tokens", 1024, 1, true, true, true}}
            : std::vector<Case>{
                  {"full attention, full FT", 256, 4, false, false, false},
                  {"full attention + checkpointing", 256, 4, false, true, false},
                  {"S2-Attn, full FT", 256, 4, true, false, false},
                  {"S2-Attn + LoRA+ + checkpointing", 256, 4, true, true, true},
                  {"S2-Attn + LoRA+, 1024 tokens", 1024, 1, true, true, true},
                  {"full attention + LoRA+, 1024 tokens", 1024, 1, false, true, true},
              };
    ll::ModelConfig config;
    if (bench_case == "peft")
      config = peft_case_config();
    else
      ll::model_preset("demo", &config);
    std::unique_ptr<ll::Backend> inner = ll::create_backend(device);
    std::unique_ptr<ll::ProfilingBackend> profiler;
    if (profile_ops) profiler = std::make_unique<ll::ProfilingBackend>(*inner);
    ll::Backend* backend = profiler ? static_cast<ll::Backend*>(profiler.get()) : inner.get();
    std::printf("%lld layers, hidden %lld, MLP %lld, %lld/%lld heads, vocab %lld on backend `%s`, %lld timed steps each\n\n",
                (long long)config.num_hidden_layers, (long long)config.hidden_size,
                (long long)config.intermediate_size, (long long)config.num_attention_heads,
                (long long)config.num_key_value_heads, (long long)config.vocab_size, backend->name().c_str(),
                (long long)steps);
    std::printf("| configuration | tokens/step | tokens/s | vs first row |\n|---|---|---|---|\n");
    nlohmann::json rows = nlohmann::json::array();
    double baseline = 0;
    for (const Case& c : cases) {
      if (profiler) profiler->reset(), profiler->set_enabled(true);  // the warm-up step is in the table too
      const double tps = tokens_per_sec(*backend, config, c, steps);
      if (baseline == 0) baseline = tps;
      std::printf("| %s | %lld | %.0f | %.2f× |\n", c.name, (long long)(c.batch * c.seq_len), tps, tps / baseline);
      if (profiler) std::printf("\n%s\n", profiler->table().c_str()), profiler->set_enabled(false);
      std::fflush(stdout);
      rows.push_back({{"configuration", c.name}, {"seq_len", c.seq_len}, {"batch", c.batch}, {"s2", c.s2},
                      {"checkpointing", c.checkpointing}, {"lora", c.lora}, {"tokens_per_sec", tps},
                      {"ratio", tps / baseline}});
    }
    const nlohmann::json model = {{"layers", config.num_hidden_layers}, {"hidden_size", config.hidden_size},
                                  {"intermediate_size", config.intermediate_size},
                                  {"heads", config.num_attention_heads}, {"kv_heads", config.num_key_value_heads},
                                  {"vocab_size", config.vocab_size},
                                  {"max_position_embeddings", config.max_position_embeddings}};
    if (!json.empty())
      ll::write_file_atomic(json, nlohmann::json{{"device", device}, {"case", bench_case}, {"model", model},
                                                 {"steps", steps}, {"rows", rows}}.dump(2) + "\n");
    return 0;
  } catch (const std::exception& e) {
    std::string message = ll::exception_message(e);
    if (message.rfind("bench_cpu_train: ", 0) == 0) message.erase(0, 17);  // Flags' messages name the program
    std::fprintf(stderr, "bench_cpu_train: error: %s\n", message.c_str());
    return 1;
  }
}
