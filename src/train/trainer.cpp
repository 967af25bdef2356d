#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "core/backend.h"
#include "core/profiling_backend.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "core/dropout_mask.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/merge.h"
#include "io/peft.h"
#include "model/model.h"
#include "model/param_select.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/memory_check.h"
#include "model/registry.h"
#include "train/metrics_log.h"
#include "train/rank_agreement.h"
#include "train/run_dir.h"
#include "cuda/device_info.h"
#include "mpi/comm.h"
#include "mpi/zero.h"
#include "train/schedule.h"
#include "train/train_flags.h"
#include "util/files.h"

namespace ll {

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Installs SIGINT/SIGTERM handlers for the lifetime of a run, restoring the previous ones afterwards.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// What the model is built from.
struct ModelPlan {
  ModelConfig config;
  std::string hf_dir;  // non-empty: load weights from this HF folder
  HfConfigInfo info;
  bool add_pad = false;
};

std::string tokenizer_path(const TrainOptions& o) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  if (!o.model_name_or_path.empty() && path_exists(o.model_name_or_path + "/tokenizer.model"))
    return o.model_name_or_path + "/tokenizer.model";
  return "";
}

ModelPlan plan_model(const TrainOptions& o, const Tokenizer* tok) {
  ModelPlan plan;
  LL_CHECK(o.model_name_or_path.empty() != o.model_config.empty(),
           "give exactly one of --model_name_or_path (a Hugging Face folder) and --model_config (a preset: ",
           [] {
             std::string s;
             for (const auto& n : model_preset_names()) s += (s.empty() ? "" : ", ") + n;
             return s;
           }(),
           "; or a config.json for random initialisation)");
  if (!o.model_name_or_path.empty()) {
    const HfConfig hf = read_hf_config(o.model_name_or_path);
    plan.config = hf.model;
    plan.info = hf.info;
    plan.hf_dir = o.model_name_or_path;
    // LongLoRA adds [PAD] when the tokenizer has none: the vocabulary grows by one, mean-initialised.
    plan.add_pad = o.add_pad_token && tok && tok->pad_id() < 0 && plan.config.vocab_size == tok->vocab_size();
    if (plan.add_pad) plan.config.vocab_size += 1;
  } else if (!model_preset(o.model_config, &plan.config)) {
    LL_CHECK(path_exists(o.model_config), "--model_config: `", o.model_config,
             "` is neither a preset nor an existing config.json");
    plan.config = read_hf_config(o.model_config).model;
  }
  if (o.rope_scaling_factor > 0) {
    plan.config.rope_scaling_factor = o.rope_scaling_factor;
  } else {
    plan.config.rope_scaling_factor = derive_rope_factor(o.model_max_length, plan.config.max_position_embeddings,
                                                         plan.config.rope_scaling_factor);
  }
  return plan;
}

// LongLoRA's substring rule over the model's parameter names; an entry that matches none is an error.
TrainableConfig parse_trainable(const std::string& list, bool full, const ModelConfig& config) {
  const TrainableConfig t = TrainableConfig::parse(list, full);
  check_trainable(t, config, "--trainable_params");
  return t;
}

void check_options(const TrainOptions& o) {
  check_train_option_ranges(o);  // every numeric option within its flag's range (train/train_flags.cpp)
  LL_CHECK(o.device == "cpu" || o.device == "cuda", "--device: expected cpu or cuda, got `", o.device, "`");
  LL_CHECK(o.zero_stage == 0 || o.zero_stage == 2 || o.zero_stage == 3, "--zero_stage: expected 0, 2 or 3, got ",
           o.zero_stage);
  LL_CHECK(o.data_path.empty() != o.sft_data_path.empty(),
           "give exactly one of --data_path (pretraining token file) and --sft_data_path (LongAlpaca JSON)");
  LL_CHECK(o.max_steps > 0 || o.num_train_epochs > 0, "set --max_steps or a positive --num_train_epochs");
  LL_CHECK(o.s2_variant == "leakfree" || o.s2_variant == "roll", "--s2_variant: expected leakfree or roll, got `",
           o.s2_variant, "`");
  parse_gradient_checkpointing(o.gradient_checkpointing, -1);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                              (long long)(s % 60));
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

}  // namespace

GradientCheckpointing parse_gradient_checkpointing(const std::string& value, int64_t num_hidden_layers) {
  std::string v = value;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  const int64_t n = num_hidden_layers;
  const std::string range = n >= 0 ? str_cat("0 to ", n) : std::string("0 to num_hidden_layers");
  GradientCheckpointing g;
  if (v == "auto") return g.automatic = true, g.layers = std::max<int64_t>(n, 0), g;
  if (v == "true" || v == "yes") return g.layers = std::max<int64_t>(n, 0), g;
  if (v == "false" || v == "no") return g;
  const bool digits = !v.empty() && v.size() <= 9 && std::all_of(v.begin(), v.end(), [](unsigned char ch) {
    return std::isdigit(ch) != 0;
  });
  if (!digits)
    fail("--gradient_checkpointing: expected true, false, auto or a number of layers to checkpoint (", range,
         "), got `", value, "`");
  g.layers = std::stoll(v);
  if (n >= 0 && g.layers > n)
    fail("--gradient_checkpointing: ", g.layers, " layers to checkpoint, but the model has ", n,
         " layers; expected true, false, auto or a number from ", range);
  return g;
}

TrainResult run_training(const TrainOptions& o, const nlohmann::json& flags, Comm* world) {
  check_options(o);
  std::unique_ptr<Comm> own_comm;
  if (!world) own_comm = make_local_comm(), world = own_comm.get();
  world->set_timeout(o.comm_timeout_sec);
  const bool lead = world->rank() == 0;  // rank 0 alone prints, writes metrics and exports
  check_flags_agree(*world, flags);
  // The output folder (run_dir.h): checked, locked for the whole run, cleared or repaired by rank 0; a refusal
  // stops every rank with rank 0's message.
  std::unique_ptr<OutputDirLock> output_lock;
  agree_on_failure(*world, [&] {
    if (lead) output_lock = prepare_output_dir(o);
  });

  std::unique_ptr<Tokenizer> tok;
  if (const std::string tp = tokenizer_path(o); !tp.empty()) tok = std::make_unique<Tokenizer>(Tokenizer::load(tp));
  LL_CHECK(o.sft_data_path.empty() || tok, "--sft_data_path needs a tokenizer: pass --tokenizer or a model folder "
                                           "with tokenizer.model");
  const ModelPlan plan = plan_model(o, tok.get());
  // Several ranks on GPUs: each rank takes the GPU of its local rank (before the backend is created, which makes
  // it the current device), and device buffers travel over NCCL, ordered against the backend's compute stream.
  // The NCCL communicator is declared after the backend and before everything that communicates, so it is
  // destroyed after them and before the backend's stream.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Comm> device_comm;
  if (o.device == "cuda" && world->size() > 1) {
    const int device = choose_local_device(world->local_rank(), world->local_size(), int(probe_cuda().devices.size()));
    backend = create_backend("cuda", device);
    device_comm = make_nccl_comm(*world, *backend, device);
    device_comm->set_timeout(o.comm_timeout_sec);
  } else {
    backend = create_backend(o.device);
  }
  Comm& comm = device_comm ? *device_comm : *world;
  // --profile_ops: everything runs through a ProfilingBackend, enabled only for the training loop (it synchronises
  // around every op, so the loop runs slower; the table says where its time goes). NCCL keeps the CUDA backend.
  std::unique_ptr<ProfilingBackend> profiler;
  if (o.profile_ops) profiler = std::make_unique<ProfilingBackend>(*backend);
  Backend& be = profiler ? static_cast<Backend&>(*profiler) : *backend;

  ModelOptions mo;
  mo.config = plan.config;
  mo.batch = o.per_device_train_batch_size;
  mo.seq_len = o.model_max_length;
  const GradientCheckpointing ckpt =
      parse_gradient_checkpointing(o.gradient_checkpointing, mo.config.num_hidden_layers);
  mo.checkpoint_layers = ckpt.layers;
  mo.offload_checkpoints = o.offload_checkpoints;
  LL_CHECK(!o.offload_checkpoints || ckpt.automatic || ckpt.layers > 0,
           "--offload_checkpoints true moves the saved inputs of checkpointed layers to host memory, but "
           "--gradient_checkpointing ", o.gradient_checkpointing,
           " checkpoints no layer; checkpoint some (true, auto or a number of layers) or set --offload_checkpoints "
           "false");
  mo.attention.use_s2 = o.use_s2attn;
  mo.attention.group_ratio = o.s2_group_ratio;
  mo.attention.variant = o.s2_variant == "roll" ? S2Variant::Roll : S2Variant::LeakFree;
  mo.attention.sft_rule = !o.sft_data_path.empty();
  mo.trainable = parse_trainable(o.trainable_params, !o.low_rank_training, mo.config);
  if (o.low_rank_training) {
    mo.lora.rank = o.lora_r;
    mo.lora.alpha = o.lora_alpha;
    mo.lora.dropout = o.lora_dropout;
    mo.lora.targets = parse_lora_targets(o.lora_target, mo.config, "--lora_target");
  }
  mo.external_param_storage = o.zero_stage == 3;
  std::string ckpt_why = "--gradient_checkpointing " + o.gradient_checkpointing;
  if (ckpt.automatic) {
    // Recomputation costs about a third of the step's matrix products: recompute only as many layers as the
    // memory needs. Every rank takes the same decision (the most constrained one's: the most layers).
    std::string why;
    const int64_t needed = checkpoint_layers_needed(be, mo, int(o.zero_stage), comm.size(), &why);
    mo.checkpoint_layers = int64_t(comm.all_reduce_max(double(needed)));
    ckpt_why = "auto: " + why;
    if (mo.checkpoint_layers != needed) ckpt_why += str_cat("; another rank needs ", mo.checkpoint_layers);
  }
  const size_t host_staging = Model::plan_memory(be, mo).host_staging;
  if (o.offload_checkpoints) {
    const int64_t offloaded = Model::offloaded_input_count(mo);
    ckpt_why += mo.checkpoint_layers > 0
                    ? str_cat("; offloaded to host memory: the inputs of ", offloaded, " layers, ",
                              format_gib(host_staging), "; the last ", mo.checkpoint_layers - offloaded,
                              " stay in device slots")
                    : std::string("; --offload_checkpoints: nothing checkpointed, nothing offloaded");
  }
  if (lead)
    std::fprintf(stderr, "gradient checkpointing: %lld of %lld layers checkpointed (%s)\n",
                 (long long)mo.checkpoint_layers, (long long)mo.config.num_hidden_layers, ckpt_why.c_str());
  // The offload's host staging must fit the host memory of every rank on this host.
  check_host_memory(host_staging, world->local_size(),
                    o.pretend_host_memory > 0 ? size_t(o.pretend_host_memory) : available_host_memory());
  // On a GPU: stop now, with what would fit, when the plan exceeds the free device memory.
  check_host_backend_memory(be, mo, int(o.zero_stage), comm.size(), world->local_size(), available_host_memory());
  check_device_memory(be, mo, int(o.zero_stage), comm.size());
  Model model(be, mo);
  // ZeRO-3: every parameter lives sharded over the ranks; the storage gathers a group when the model uses it.
  std::unique_ptr<Zero3Storage> zero3;
  if (o.zero_stage == 3) zero3 = std::make_unique<Zero3Storage>(be, model.params(), comm);
  model.init_random(uint64_t(o.seed));
  if (!plan.hf_dir.empty()) {
    HfLoadOptions lo;
    lo.add_pad_token = plan.add_pad;
    load_hf_weights(plan.hf_dir, model.params(), be, lo);
  }
  DistributedOptimizer optimizer(be, model.params(), comm,
                                 {o.adam_beta1, o.adam_beta2, o.adam_epsilon, o.weight_decay}, int(o.zero_stage),
                                 zero3.get(), o.reduce_bucket_size);

  std::unique_ptr<BatchSource> source;
  std::shared_ptr<const TokenFile> token_file;
  if (!o.data_path.empty()) {
    token_file = std::make_shared<TokenFile>(o.data_path, plan.config.vocab_size);
    source = std::make_unique<PretrainSource>(token_file, o.model_max_length, o.per_device_train_batch_size,
                                              uint64_t(o.seed));
  } else {
    source = std::make_unique<SftSource>(o.sft_data_path, *tok, o.model_max_length, o.per_device_train_batch_size,
                                         uint64_t(o.seed), lead ? stderr : nullptr);
  }
  source->set_data_parallel(comm.rank(), comm.size());
  const int64_t rows_per_step = o.per_device_train_batch_size * o.gradient_accumulation_steps * comm.size();
  const int64_t total_steps =
      o.max_steps > 0 ? o.max_steps
                      : std::max<int64_t>(1, int64_t(std::ceil(o.num_train_epochs * double(source->rows_per_epoch()) /
                                                               double(rows_per_step))));
  const ScheduleConfig schedule{parse_lr_schedule(o.lr_scheduler_type), o.learning_rate, o.warmup_steps, total_steps};

  TrainerState state;
  state.flags = flags;
  if (!o.resume_from_checkpoint.empty()) {
    std::string dir = o.resume_from_checkpoint;
    if (dir == "auto") {
      const std::vector<std::string> found = list_checkpoints(o.output_dir);
      dir = found.empty() ? "" : found.back();
    }
    if (!dir.empty()) {
      load_checkpoint(dir, model.params(), optimizer, be, &state);
      source->seek(state.data);
      if (lead) std::fprintf(stderr, "resumed from %s at step %lld\n", dir.c_str(), (long long)state.global_step);
    } else if (lead) {
      std::fprintf(stderr, "--resume_from_checkpoint auto: no checkpoint in %s, starting fresh\n", o.output_dir.c_str());
    }
  }

  const MemoryPlan mem = model.memory_plan();
  if (lead) {
  std::fprintf(stderr,
               "model: %lld layers, hidden %lld, heads %lld/%lld, vocab %lld | RoPE factor %g | attention %s | "
               "%lld trainable of %lld parameters\n",
               (long long)plan.config.num_hidden_layers, (long long)plan.config.hidden_size,
               (long long)plan.config.num_attention_heads, (long long)plan.config.num_key_value_heads,
               (long long)plan.config.vocab_size, plan.config.rope_scaling_factor,
               o.use_s2attn ? (o.s2_variant == "roll" ? "S2 (roll)" : "S2 (leak-free)") : "full causal",
               (long long)model.params().count(true), (long long)model.params().count(false));
  std::fprintf(stderr, "memory plan per rank (MiB): frozen %.1f, trainable %.1f, gradients %.1f, optimizer %.1f, "
               "activations %.1f%s%s\n",
               mem.frozen_weights / 1048576.0, mem.trainable_weights / 1048576.0, mem.gradients / 1048576.0,
               optimizer.state_bytes() / 1048576.0, mem.activations / 1048576.0,
               zero3 ? str_cat(", ZeRO-3 parameter shards ", zero3->shard_bytes() / 1048576.0, ", gather slots ",
                               zero3->staging_bytes() / 1048576.0).c_str()
                     : "",
               mem.host_staging ? str_cat("; host memory: offloaded layer inputs ",
                                          mem.host_staging / 1048576.0).c_str()
                                : "");
  std::fprintf(stderr, "training %lld steps of %lld rows × %lld tokens (%lld rows per epoch) on %d rank%s (%s, ZeRO "
               "stage %lld%s)\n", (long long)total_steps, (long long)rows_per_step, (long long)o.model_max_length,
               (long long)source->rows_per_epoch(), comm.size(), comm.size() == 1 ? "" : "s", comm.name().c_str(),
               (long long)o.zero_stage,
               o.zero_stage == 2 ? str_cat(", ", optimizer.num_buckets(), " gradient bucket",
                                           optimizer.num_buckets() == 1 ? "" : "s").c_str()
                                 : "");
  }

  StopSignals signals;
  // metrics.jsonl continues the resumed step's trajectory (later records of a killed run are dropped); the flags
  // are recorded once the run is set up.
  MetricsLog metrics;
  agree_on_failure(*world, [&] {  // the host communicator: NCCL's carries device buffers
    if (!lead) return;
    metrics.open(o.output_dir + "/metrics.jsonl", state.global_step);
    write_training_args(o.output_dir, flags);
  });
  const bool tty = lead && ::isatty(::fileno(stderr));
  // Fault-injection hooks for the multi-rank failure tests: at step LONGLORA_FAIL_STEP, rank LONGLORA_FAIL_RANK
  // throws (an ordinary error) and rank LONGLORA_HANG_RANK stops responding.
  const char* fail_rank = std::getenv("LONGLORA_FAIL_RANK");
  const char* hang_rank = std::getenv("LONGLORA_HANG_RANK");
  const char* fail_step = std::getenv("LONGLORA_FAIL_STEP");
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = state.global_step;
  int64_t tokens_seen = 0, last_saved = state.global_step;
  TrainResult result;
  result.output_dir = o.output_dir;
  std::vector<HostBatch> micro_batches(size_t(o.gradient_accumulation_steps));  // one step's, read before its forward

  auto save = [&] {
    state.data = source->position();
    save_checkpoint(o.output_dir, model.params(), optimizer, be, comm, state);
    if (lead) rotate_checkpoints(o.output_dir, o.save_total_limit);
    comm.barrier();
    last_saved = state.global_step;
  };

  // Rank 0 prints the op table (percentages of the loop's wall time) and writes output_dir/op_profile.json.
  auto report_profile = [&] {
    if (!profiler) return;
    profiler->set_enabled(false);
    if (!lead) return;
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "%sop profile of %lld steps (%.3f s; each op synchronised):\n%s", tty ? "\n" : "",
                 (long long)(state.global_step - first_step), wall, profiler->table(wall).c_str());
    const nlohmann::json j = {{"backend", be.name()}, {"steps", state.global_step - first_step},
                              {"wall_seconds", wall}, {"ops", profiler->to_json()}};
    write_file_atomic(o.output_dir + "/op_profile.json", j.dump(2) + "\n");
  };
  if (profiler) profiler->set_enabled(true);
  while (state.global_step < total_steps) {
    if (fail_rank && fail_step && std::atoi(fail_rank) == comm.rank() && std::atoll(fail_step) == state.global_step)
      fail("injected failure at step ", state.global_step, " (LONGLORA_FAIL_RANK/LONGLORA_FAIL_STEP)");
    if (hang_rank && fail_step && std::atoi(hang_rank) == comm.rank() && std::atoll(fail_step) == state.global_step)
      for (;;) ::pause();
    const double lr = lr_at(schedule, state.global_step);
    model.params().zero_grads();
    // The step's loss is the mean of its micro-batches' mean losses (Hugging Face's Trainer) over the micro-batches
    // of every rank that score a target: one without targets must count nothing, not a loss of 0. (None lack them
    // today: SftSource drops examples without targets, pretraining rows all score.) So the step's micro-batches are
    // read first, and `per_rank` — the micro-batches with targets per rank, over the ranks; the accumulation steps
    // when all have targets — divides each micro-batch's mean loss and gradient.
    int64_t with_targets = 0;
    for (HostBatch& b : micro_batches) {
      source->next(b);
      with_targets += b.scored() > 0;
    }
    const double per_rank = comm.all_reduce_sum(double(with_targets)) / double(comm.size());
    LL_CHECK(per_rank > 0, "step ", state.global_step + 1, ": no micro-batch of any rank has a target token");
    double loss = 0;
    for (int64_t micro = 0; micro < o.gradient_accumulation_steps; ++micro) {
      const HostBatch& batch = micro_batches[size_t(micro)];
      model.set_seq_len(batch.seq_len);
      model.set_lora_dropout(true, mix64(uint64_t(o.seed) ^ mix64(uint64_t(state.global_step) * 1000003ull +
                                                                  uint64_t(micro))));
      const int64_t scored = batch.scored();
      const double scale = scored ? 1.0 / (double(scored) * per_rank) : 0.0;
      // Every rank runs every micro-batch, targets or not: ZeRO's collectives run inside forward and backward.
      optimizer.begin_micro_batch(micro + 1 == o.gradient_accumulation_steps);  // ZeRO-2 reduces during its backward
      const LossResult r = model.forward_backward(batch.tokens.data(), batch.targets.data(), scale);
      loss += r.mean() / per_rank;  // 0 without targets
      tokens_seen += batch.batch * batch.seq_len * comm.size();
    }
    loss = comm.all_reduce_sum(loss) / double(comm.size());  // gradients are averaged the same way
    const double grad_norm = optimizer.reduce_and_clip(o.max_grad_norm);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      ++state.nonfinite_streak;
      if (lead)
        std::fprintf(stderr, "%swarning: step %lld has a non-finite %s; update skipped (%lld in a row)\n",
                     tty ? "\n" : "", (long long)state.global_step + 1, std::isfinite(loss) ? "gradient" : "loss",
                     (long long)state.nonfinite_streak);
      LL_CHECK(state.nonfinite_streak < o.max_nonfinite_steps, "stopping: ", state.nonfinite_streak,
               " consecutive steps had a non-finite loss or gradient (lower --learning_rate or check the data)");
    } else {
      state.nonfinite_streak = 0;
      optimizer.step(lr);
      // A finite gradient can still overflow a weight (a huge learning rate, a tiny epsilon): such an update is
      // never kept — the run stops here, before any checkpoint or export can hold it.
      const std::string broken = optimizer.first_nonfinite_weight();
      if (!broken.empty())
        fail("step ", state.global_step + 1, " made `", broken, "` non-finite (NaN or inf) at learning rate ", lr,
             " (gradient norm ", grad_norm, "); stopped without saving it (checkpoints already in ", o.output_dir,
             " are unchanged): lower --learning_rate (or set --max_grad_norm, raise --adam_epsilon)");
    }
    ++state.global_step;
    result.last_loss = loss;

    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tok_per_s = double(tokens_seen) / std::max(elapsed, 1e-9);
    const int64_t done = state.global_step - first_step;
    const double eta = elapsed / double(done) * double(total_steps - state.global_step);
    if (lead && (state.global_step % o.logging_steps == 0 || state.global_step == total_steps)) {
      metrics.append({{"step", state.global_step}, {"loss", loss},          {"lr", lr},
                      {"grad_norm", grad_norm},    {"tokens_per_sec", tok_per_s},
                      {"elapsed_sec", elapsed},    {"epoch", source->position().epoch}});
      if (!tty)
        std::fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.3g | grad norm %.3f | %.0f tok/s | ETA %s\n",
                     (long long)state.global_step, (long long)total_steps, loss, lr, grad_norm, tok_per_s,
                     format_duration(eta).c_str());
    }
    if (tty)
      std::fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.3g | %.0f tok/s | ETA %s   ", (long long)state.global_step,
                   (long long)total_steps, loss, lr, tok_per_s, format_duration(eta).c_str());
    if (o.save_steps > 0 && state.global_step % o.save_steps == 0) save();
    // Ranks may receive the signal at different steps; they agree on stopping at the same one.
    if (state.global_step == o.interrupt_at_step) std::raise(o.interrupt_signal);
    const int stop = int(comm.all_reduce_max(g_stop_signal.load()));
    if (stop) {
      if (lead)
        std::fprintf(stderr, "%ssignal %d: saving a checkpoint at step %lld and stopping\n", tty ? "\n" : "", stop,
                     (long long)state.global_step);
      if (last_saved != state.global_step) save();
      report_profile();
      result.interrupted = true;
      result.stop_signal = stop;
      result.steps = state.global_step;
      return result;
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  if (last_saved != state.global_step) save();
  report_profile();

  // Exports by rank 0 (every rank helps gather under ZeRO-3): the adapter folder (LoRA) in output_dir, or the full
  // model as an HF folder.
  model.params().with_readable(/*trainable_only=*/o.low_rank_training, [&] {
    if (!lead) return;
    if (o.low_rank_training) {
      AdapterSaveOptions so;
      so.base_model_name_or_path = o.model_name_or_path.empty() ? o.model_config : o.model_name_or_path;
      so.record = LongLoraRecord{plan.config.rope_scaling_factor, o.model_max_length, plan.config.vocab_size};
      save_adapter(o.output_dir, model.params(), be, mo.lora, so);
    } else {
      HfSaveOptions so;
      so.dtype = DType::F32;
      so.copy_tokenizer_from = plan.hf_dir;
      so.info = plan.info;
      save_hf_folder(o.output_dir + "/model", model.params(), be, plan.config, so);
    }
  });
  // --save_merged: W + (α/r)·B·A folded in (after the adapter export, which needs the unmerged adapters), with
  // rope_scaling recorded in config.json, in the base's dtype.
  if (o.save_merged && o.low_rank_training) {
    model.params().with_readable(/*trainable_only=*/false, [&] {
      if (!lead) return;
      merge_lora(model.params(), be, mo.lora);
      HfSaveOptions so;
      so.dtype = plan.info.torch_dtype == "bfloat16" ? DType::BF16
                 : plan.info.torch_dtype == "float16" ? DType::F16
                                                      : DType::F32;
      so.copy_tokenizer_from = plan.hf_dir;
      so.info = plan.info;
      save_hf_folder(o.output_dir + "/merged", model.params(), be, plan.config, so);
    });
  }
  comm.barrier();
  result.steps = state.global_step;
  return result;
}

}  // namespace ll
