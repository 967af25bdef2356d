#include "train/demo.h"

#include <sentencepiece_trainer.h>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "eval/perplexity.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/peft.h"
#include "model/model.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

namespace {

void train_tokenizer(const std::string& corpus, const std::string& prefix) {
  const auto status = sentencepiece::SentencePieceTrainer::Train({
      {"input", corpus}, {"model_prefix", prefix}, {"vocab_size", "512"}, {"model_type", "bpe"},
      {"byte_fallback", "true"}, {"split_digits", "true"}, {"character_coverage", "1.0"},
      {"unk_id", "0"}, {"bos_id", "1"}, {"eos_id", "2"}, {"pad_id", "-1"}, {"num_threads", "2"},
      {"minloglevel", "2"}, {"input_sentence_size", "200000"}, {"shuffle_input_sentence", "false"}});
  LL_CHECK(status.ok(), "demo: training the sentencepiece tokenizer on `", corpus, "` failed: ", status.ToString());
}

// Writes the corpus lines [begin, end) as one token stream: BOS, every line's tokens, EOS.
int64_t write_split(const Tokenizer& tok, const std::vector<std::string>& lines, size_t begin, size_t end,
                    const std::string& path) {
  TokenFileWriter w(path, TokenFormat::Raw16);
  w.append({tok.bos_id()});
  for (size_t i = begin; i < end; ++i) w.append(tok.encode(lines[i], false, false));
  w.append({tok.eos_id()});
  w.finish();
  return w.count();
}

struct EvalRow {
  std::string model;
  int64_t context;
  double rope_factor;
  PerplexityResult result;
};

// Perplexity at `context` of the HF folder `model_dir` (+ optional adapter) with RoPE factor `factor`.
EvalRow evaluate(const std::string& device, const std::string& label, const std::string& model_dir,
                 const std::string& adapter_dir, double factor, int64_t context, const TokenFile& val,
                 int64_t windows) {
  std::unique_ptr<Backend> backend = create_backend(device);
  ModelOptions mo;
  mo.config = read_hf_config(model_dir).model;
  mo.config.rope_scaling_factor = factor;
  mo.batch = 4;
  mo.seq_len = context;
  if (!adapter_dir.empty()) mo.lora = read_adapter_config(adapter_dir, mo.config).lora;
  Model model(*backend, mo);
  load_hf_weights(model_dir, model.params(), *backend);
  if (!adapter_dir.empty()) load_adapter(adapter_dir, model.params(), *backend);
  PerplexityOptions po;
  po.sliding_window = context;
  po.max_windows = windows;
  return {label, context, factor, evaluate_perplexity(model, val, po)};
}

}  // namespace

int run_demo(const DemoOptions& d) {
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::string device = d.device;
  if (device.empty()) {
    const char* env = std::getenv("LONGLORA_DEMO_DEVICE");
    device = env && *env ? env : default_device();
  }
  LL_CHECK(device == "cpu" || device == "cuda", "demo: LONGLORA_DEMO_DEVICE must be cpu or cuda, got `", device, "`");
  LL_CHECK(path_exists(d.corpus), "demo: corpus `", d.corpus,
           "` not found; run build/train from the repository root (it ships data/)");
  make_directories(d.output_dir);
  std::printf("LongLoRA demo on %s: tiny Llama, context %lld → %lld (outputs in %s/)\n\n",
              device == "cuda" ? "the GPU" : "CPU", (long long)d.short_context, (long long)d.long_context,
              d.output_dir.c_str());

  // 1. Tokenizer and token files (90% train, 10% validation, split by line).
  const std::string tok_prefix = d.output_dir + "/tokenizer";
  train_tokenizer(d.corpus, tok_prefix);
  const Tokenizer tok = Tokenizer::load(tok_prefix + ".model");
  std::vector<std::string> lines;
  {
    std::ifstream in(d.corpus);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) lines.push_back(line);
  }
  const size_t split = lines.size() * 9 / 10;
  const std::string train_bin = d.output_dir + "/train.bin", val_bin = d.output_dir + "/val.bin";
  const int64_t n_train = write_split(tok, lines, 0, split, train_bin);
  const int64_t n_val = write_split(tok, lines, split, lines.size(), val_bin);
  std::printf("[1/4] tokenizer: %d pieces; %lld training tokens, %lld validation tokens (%.0f s)\n", tok.vocab_size(),
              (long long)n_train, (long long)n_val, elapsed());

  // 2. Pretraining at the short context, full fine-tuning from random initialisation.
  TrainOptions pre;
  pre.model_config = "demo";
  pre.tokenizer = tok_prefix + ".model";
  pre.data_path = train_bin;
  pre.output_dir = d.output_dir + "/pretrain";
  pre.overwrite_output_dir = true;  // the demo's folders hold the previous demo's runs: replaced
  pre.model_max_length = d.short_context;
  pre.use_s2attn = false;
  pre.low_rank_training = false;
  pre.learning_rate = 3e-3;
  pre.warmup_steps = 30;
  pre.lr_scheduler_type = "cosine";
  pre.per_device_train_batch_size = 16;
  pre.max_steps = d.pretrain_steps;
  pre.save_steps = 0;
  pre.logging_steps = 50;
  pre.gradient_checkpointing = "false";
  pre.seed = int64_t(d.seed);
  pre.device = device;
  std::printf("[2/4] pretraining at context %lld for %lld steps...\n", (long long)d.short_context,
              (long long)d.pretrain_steps);
  std::fflush(stdout);
  const TrainResult pr = run_training(pre, nlohmann::json{{"demo", "pretrain"}});
  std::printf("      done: loss %.3f (%.0f s)\n", pr.last_loss, elapsed());
  const std::string base_dir = pre.output_dir + "/model";

  // 3. Long-context perplexity of the short-context model: extrapolation vs position interpolation.
  const TokenFile val(val_bin, tok.vocab_size());
  const double factor = double((d.long_context + d.short_context - 1) / d.short_context);
  std::vector<EvalRow> rows;
  rows.push_back(evaluate(device, "pretrained", base_dir, "", 1.0, d.short_context, val, d.eval_windows));
  rows.push_back(evaluate(device, "pretrained, no interpolation", base_dir, "", 1.0, d.long_context, val, d.eval_windows));
  rows.push_back(evaluate(device, "pretrained + PI (no fine-tuning)", base_dir, "", factor, d.long_context, val,
                          d.eval_windows));
  std::printf("[3/4] evaluated the pretrained model at %lld tokens (%.0f s)\n", (long long)d.long_context, elapsed());

  // 4. LongLoRA: PI + S2-Attn + LoRA+ at the long context.
  TrainOptions ext;
  ext.model_name_or_path = base_dir;
  ext.tokenizer = tok_prefix + ".model";
  ext.add_pad_token = false;
  ext.data_path = train_bin;
  ext.output_dir = d.output_dir + "/longlora";
  ext.overwrite_output_dir = true;
  ext.model_max_length = d.long_context;  // factor = ceil(long / short) by LongLoRA's rule
  ext.use_s2attn = true;
  ext.low_rank_training = true;
  ext.lora_target = "q_proj,k_proj,v_proj,o_proj";
  ext.trainable_params = "embed,norm";
  ext.learning_rate = 2e-3;
  ext.warmup_steps = 10;
  ext.per_device_train_batch_size = 4;
  ext.max_steps = d.extend_steps;
  ext.save_steps = 0;
  ext.logging_steps = 25;
  ext.gradient_checkpointing = "true";
  ext.seed = int64_t(d.seed) + 1;
  ext.device = device;
  std::printf("[4/4] LongLoRA fine-tuning at context %lld (PI factor %g, S2-Attn, LoRA r=8 + embed/norm) for %lld "
              "steps...\n",
              (long long)d.long_context, factor, (long long)d.extend_steps);
  std::fflush(stdout);
  const TrainResult er = run_training(ext, nlohmann::json{{"demo", "longlora"}});
  std::printf("      done: loss %.3f (%.0f s)\n", er.last_loss, elapsed());
  rows.push_back(evaluate(device, "LongLoRA (PI + S2 + LoRA+)", base_dir, ext.output_dir, factor, d.long_context, val,
                          d.eval_windows));

  std::printf("\nvalidation perplexity (%lld windows each, full causal attention):\n", (long long)d.eval_windows);
  std::printf("  %-36s %8s %8s %11s\n", "model", "context", "RoPE", "perplexity");
  nlohmann::json out = nlohmann::json::array();
  for (const EvalRow& r : rows) {
    std::printf("  %-36s %8lld %8g %11.3f\n", r.model.c_str(), (long long)r.context, r.rope_factor,
                r.result.perplexity);
    out.push_back({{"model", r.model}, {"context", r.context}, {"rope_scaling_factor", r.rope_factor},
                   {"perplexity", r.result.perplexity}, {"perplexity_token_weighted", r.result.perplexity_token_weighted},
                   {"loss", r.result.loss}, {"num_windows", r.result.num_windows}});
  }
  write_file_atomic(d.output_dir + "/results.json",
                    nlohmann::json{{"rows", out}, {"device", device}, {"elapsed_sec", elapsed()}}.dump(2) + "\n");
  std::printf("\ntotal %.0f s; results in %s/results.json\n", elapsed(), d.output_dir.c_str());
  return 0;
}

}  // namespace ll
