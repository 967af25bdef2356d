// build/bench_cpu_train: CPU training throughput of the demo model (a benchmark, not a test). Runs a few optimizer
// steps per configuration on random tokens and prints tokens/s with the ratio to the first row (the baseline:
// full attention, no checkpointing) measured in the same run on the same machine; --json writes the table.
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/backend.h"
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

double tokens_per_sec(ll::Backend& backend, const Case& c, int64_t steps) {
  ll::ModelOptions mo;
  ll::model_preset("demo", &mo.config);
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
    std::string json, device = "cpu";
    ll::Flags flags("bench_cpu_train", "Training throughput of the demo model on the CPU backend (prints a table).");
    flags.add("steps", &steps, "timed optimizer steps per configuration (after one warm-up step)").at_least(1);
    flags.add("device", &device, "backend");
    flags.add("json", &json, "also write the table to this JSON file");
    if (!flags.parse(argc, argv)) return 0;
    const Case cases[] = {
        {"full attention, full FT", 256, 4, false, false, false},
        {"full attention + checkpointing", 256, 4, false, true, false},
        {"S2-Attn, full FT", 256, 4, true, false, false},
        {"S2-Attn + LoRA+ + checkpointing", 256, 4, true, true, true},
        {"S2-Attn + LoRA+, 1024 tokens", 1024, 1, true, true, true},
        {"full attention + LoRA+, 1024 tokens", 1024, 1, false, true, true},
    };
    std::unique_ptr<ll::Backend> backend = ll::create_backend(device);
    std::printf("demo model (4 layers, hidden 64, 4/2 heads, vocab 512) on backend `%s`, %lld timed steps each\n\n",
                backend->name().c_str(), (long long)steps);
    std::printf("| configuration | tokens/step | tokens/s | vs first row |\n|---|---|---|---|\n");
    nlohmann::json rows = nlohmann::json::array();
    double baseline = 0;
    for (const Case& c : cases) {
      const double tps = tokens_per_sec(*backend, c, steps);
      if (baseline == 0) baseline = tps;
      std::printf("| %s | %lld | %.0f | %.2f× |\n", c.name, (long long)(c.batch * c.seq_len), tps, tps / baseline);
      std::fflush(stdout);
      rows.push_back({{"configuration", c.name}, {"seq_len", c.seq_len}, {"batch", c.batch}, {"s2", c.s2},
                      {"checkpointing", c.checkpointing}, {"lora", c.lora}, {"tokens_per_sec", tps},
                      {"ratio", tps / baseline}});
    }
    if (!json.empty()) ll::write_file_atomic(json, nlohmann::json{{"device", device}, {"rows", rows}}.dump(2) + "\n");
    return 0;
  } catch (const std::exception& e) {
    std::string message = ll::exception_message(e);
    if (message.rfind("bench_cpu_train: ", 0) == 0) message.erase(0, 17);  // Flags' messages name the program
    std::fprintf(stderr, "bench_cpu_train: error: %s\n", message.c_str());
    return 1;
  }
}
