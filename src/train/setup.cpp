// set_up_training: everything a run needs, in the order it must exist (see train/session.h).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cuda/device_info.h"
#include "data/chat_template.h"
#include "data/tokenizer_path.h"
#include "io/hf_checkpoint.h"
#include "model/describe.h"
#include "model/param_select.h"
#include "model/registry.h"
#include "mpi/stager.h"
#include "train/deepspeed_config.h"
#include "train/epoch_steps.h"
#include "train/memory_check.h"
#include "mpi/rank_agreement.h"
#include "train/session.h"
#include "train/train_flags.h"
#include "util/files.h"
#include "util/strings.h"

namespace ll {

namespace {


std::string tokenizer_path(const TrainOptions& o) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  if (!o.model_name_or_path.empty() && is_directory(o.model_name_or_path)) return find_tokenizer_in(o.model_name_or_path);
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
  check_comm_flag(o.comm, o.device, built_with_nccl());
  LL_CHECK(o.zero_stage == 0 || o.zero_stage == 2 || o.zero_stage == 3, "--zero_stage: expected 0, 2 or 3, got ",
           o.zero_stage);
  LL_CHECK(o.data_path.empty() != o.sft_data_path.empty(),
           "give exactly one of --data_path (pretraining token file) and --sft_data_path (LongAlpaca JSON)");
  LL_CHECK(o.max_steps > 0 || o.num_train_epochs > 0, "set --max_steps or a positive --num_train_epochs");
  LL_CHECK(o.s2_variant == "leakfree" || o.s2_variant == "roll", "--s2_variant: expected leakfree or roll, got `",
           o.s2_variant, "`");
  parse_gradient_checkpointing(o.gradient_checkpointing, -1);
  parse_save_strategy(o.save_strategy);
  parse_warmup_shape(o.lr_warmup_type);
}

// Ranks agree on the flags, the output folder is prepared (rank 0), and the backend (with the device communicator
// between GPU ranks) is created. Several ranks on GPUs: --comm picks NCCL or StagedComm and each rank's GPU
// (choose_device_comm; before the backend is created, which makes it the current device); device buffers travel
// over it, ordered against the backend's compute stream.
void open_run(TrainingSession& s, Comm* world) {
  const TrainOptions& o = s.options;
  if (!world) s.own_world = make_local_comm(), world = s.own_world.get();
  s.world = world;
  world->set_timeout(o.comm_timeout_sec);
  s.lead = world->rank() == 0;
  check_flags_agree(*world, s.flags);
  check_deepspeed_train_batch_size(o, world->size());  // DeepSpeed's batch rule needs the world size
  // The output folder (run_dir.h): checked, locked for the whole run, cleared or repaired by rank 0; a refusal
  // stops every rank with rank 0's message.
  agree_on_failure(*world, [&] {
    if (s.lead) s.output_lock = prepare_output_dir(o);
  });
  TokenizerOptions tok_options;
  tok_options.parse_special_tokens = o.parse_special_tokens;
  if (const std::string tp = tokenizer_path(o); !tp.empty())
    s.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(tp, tok_options));
  LL_CHECK(o.sft_data_path.empty() || s.tokenizer, "--sft_data_path needs a tokenizer: pass --tokenizer or a model "
                                                   "folder with tokenizer.json or tokenizer.model");
  if (o.chat_template != "auto") parse_chat_template(o.chat_template);  // a bad value fails before the model loads
  s.plan = plan_model(o, s.tokenizer.get());
  // One rank needs no communicator; an explicit --comm nccl|mpi still makes it (NCCL's and the staged path's
  // checks at world size 1, on one GPU).
  if (o.device == "cuda" && (world->size() > 1 || o.comm != "auto")) {
    // The rank's GPU first (every rank stops with the message when one sees none), then how many different GPUs
    // the node's ranks hold (compared by PCI address): they share some when fewer than the ranks. auto's choice
    // must be every rank's: one rank that cannot use NCCL sends every rank through MPI.
    const CudaProbe probe = probe_cuda();
    const int visible = int(probe.devices.size());
    int device = 0;
    agree_on_failure(*world, [&] { device = choose_local_device(world->local_rank(), world->local_size(), visible); });
    const int distinct = distinct_gpus_on_node(*world, probe.devices[size_t(device)].pci_id);  // collective
    DeviceCommChoice choice = choose_device_comm(o.comm, built_with_nccl(), world->local_rank(),
                                                 world->local_size(), visible, distinct);
    if (o.comm == "auto" && world->all_reduce_max(choice.nccl ? 0.0 : 1.0) > 0 && choice.nccl) {
      choice.nccl = false;
      choice.why = "MPI through host staging (--comm auto: ranks on another node cannot use NCCL)";
    }
    s.backend = create_backend("cuda", choice.device);
    s.device_comm = choice.nccl ? make_nccl_comm(*world, *s.backend, choice.device)
                                : make_staged_comm(*world, make_cuda_stager(*s.backend, choice.device),
                                                   o.comm_chunk_bytes);
    s.device_comm->set_timeout(o.comm_timeout_sec);
    s.comm_why = choice.why;
  } else {
    s.backend = create_backend(o.device);
    // Tests: LONGLORA_COMM_STAGE_HOST=1 sends CPU ranks' collectives through StagedComm with the host stager (the
    // staged path's chunking, pipelining and fault handling under build/train, without a GPU).
    const char* stage_host = std::getenv("LONGLORA_COMM_STAGE_HOST");
    if (world->size() > 1 && stage_host && std::string(stage_host) == "1") {
      s.device_comm = make_staged_comm(*world, make_host_stager(/*lazy=*/true), o.comm_chunk_bytes);
      s.comm_why = "MPI through host staging of host buffers (LONGLORA_COMM_STAGE_HOST=1)";
    } else if (world->size() > 1) {
      s.comm_why = "MPI on host buffers";
    }
  }
  s.comm = s.device_comm ? s.device_comm.get() : world;
  // --profile_ops: everything runs through a ProfilingBackend, enabled only for the training loop (it synchronises
  // around every op, so the loop runs slower; the table says where its time goes). NCCL keeps the CUDA backend.
  if (o.profile_ops) s.profiler = std::make_unique<ProfilingBackend>(*s.backend);
  s.be = s.profiler ? static_cast<Backend*>(s.profiler.get()) : s.backend.get();
}

// The model's options from the flags, with --gradient_checkpointing decided (auto: from the memory plan), then the
// memory checks that stop a run which cannot fit before anything large is allocated.
void plan_model_options(TrainingSession& s) {
  const TrainOptions& o = s.options;
  Backend& be = *s.be;
  Comm& comm = *s.comm;
  ModelOptions& mo = s.model_options;
  mo.config = s.plan.config;
  apply_quant_options(o.quant, o.low_rank_training, mo.config);
  mo.batch = o.per_device_train_batch_size;
  mo.seq_len = o.model_max_length;
  const GradientCheckpointing ckpt =
      parse_gradient_checkpointing(o.gradient_checkpointing, mo.config.num_hidden_layers);
  mo.checkpoint_layers = ckpt.layers;
  mo.offload_checkpoints = o.offload_checkpoints;
  mo.mlp_tile_rows = o.mlp_tile_rows;
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
  if (mo.mlp_tile_rows > 0)
    ckpt_why += str_cat("; --mlp_tile_rows ", mo.mlp_tile_rows,
                        ": every layer's MLP runs over row tiles, its intermediates recomputed in backward");
  if (s.lead)
    std::fprintf(stderr, "gradient checkpointing: %lld of %lld layers checkpointed (%s)\n",
                 (long long)mo.checkpoint_layers, (long long)mo.config.num_hidden_layers, ckpt_why.c_str());
  // The offload's host staging must fit the host memory of every rank on this host.
  check_host_memory(host_staging, s.world->local_size(),
                    o.pretend_host_memory > 0 ? size_t(o.pretend_host_memory) : available_host_memory());
  // On CPU ranks: the whole plan against the host's memory; on a GPU: stop now, with what would fit, when the plan
  // exceeds the free device memory.
  check_host_backend_memory(be, mo, int(o.zero_stage), comm.size(), s.world->local_size(), available_host_memory());
  check_device_memory(be, mo, int(o.zero_stage), comm.size());
}

// The model (with its ZeRO-3 storage), its weights (random, then the HF folder's) and the optimizer.
void build_model(TrainingSession& s) {
  const TrainOptions& o = s.options;
  s.model = std::make_unique<Model>(*s.be, s.model_options);
  // ZeRO-3: every parameter lives sharded over the ranks; the storage gathers a group when the model uses it.
  if (o.zero_stage == 3) s.zero3 = std::make_unique<Zero3Storage>(*s.be, s.model->params(), *s.comm);
  s.model->init_random(uint64_t(o.seed));
  if (!s.plan.hf_dir.empty()) {
    HfLoadOptions lo;
    lo.add_pad_token = s.plan.add_pad;
    load_hf_weights(s.plan.hf_dir, s.model->params(), *s.be, lo);
  }
  s.optimizer = std::make_unique<DistributedOptimizer>(
      *s.be, s.model->params(), *s.comm, AdamWConfig{o.adam_beta1, o.adam_beta2, o.adam_epsilon, o.weight_decay},
      int(o.zero_stage), s.zero3.get(), o.reduce_bucket_size);
}

// The batches (pretraining token file or SFT examples, this rank's slice), the step count and the schedule.
void open_data(TrainingSession& s) {
  const TrainOptions& o = s.options;
  Comm& comm = *s.comm;
  if (!o.data_path.empty()) {
    s.token_file = std::make_shared<TokenFile>(o.data_path, s.plan.config.vocab_size);
    s.source = std::make_unique<PretrainSource>(s.token_file, o.model_max_length, o.per_device_train_batch_size,
                                                uint64_t(o.seed));
  } else {
    // auto: the model folder's tokenizer_config.json / config.json, else the tokenizer_config.json beside the
    // tokenizer (a --model_config run with --tokenizer pointing at a model's tokenizer).
    const std::string chat_folder = !o.model_name_or_path.empty()
                                        ? o.model_name_or_path
                                        : std::filesystem::path(s.tokenizer->path()).parent_path().string();
    const ChatStyle style = resolve_chat_style(o.chat_template, chat_folder, *s.tokenizer);
    if (s.lead)
      std::fprintf(stderr, "SFT prompts: chat template %s, tokenizer %s (%s)\n", chat_template_name(style.kind),
                   s.tokenizer->path().c_str(), s.tokenizer->kind());
    s.source = std::make_unique<SftSource>(o.sft_data_path, *s.tokenizer, o.model_max_length,
                                           o.per_device_train_batch_size, uint64_t(o.seed),
                                           s.lead ? stderr : nullptr, &style);
  }
  s.source->set_data_parallel(comm.rank(), comm.size());
  s.rows_per_step = o.per_device_train_batch_size * o.gradient_accumulation_steps * comm.size();
  s.total_steps = o.max_steps > 0 ? o.max_steps
                                  : steps_for_epochs(o.num_train_epochs, s.source->rows_per_epoch(), s.rows_per_step);
  if (o.max_steps <= 0 && s.lead) {  // full steps where the Trainer ends each epoch short (train/epoch_steps.h)
    const int64_t hf = hf_trainer_steps_for_epochs(o.num_train_epochs, s.source->rows_per_epoch(),
                                                   o.per_device_train_batch_size, o.gradient_accumulation_steps,
                                                   comm.size());
    if (hf != s.total_steps)
      std::fprintf(stderr, "--num_train_epochs %g: %lld steps of %lld full rows (an epoch's last batch wraps into the "
                   "next); the Hugging Face Trainer would run %lld (%lld per epoch, the last one short)\n",
                   o.num_train_epochs, (long long)s.total_steps, (long long)s.rows_per_step, (long long)hf,
                   (long long)hf_trainer_steps_for_epochs(1, s.source->rows_per_epoch(),
                                                          o.per_device_train_batch_size,
                                                          o.gradient_accumulation_steps, comm.size()));
  }
  s.schedule = ScheduleConfig{parse_lr_schedule(o.lr_scheduler_type), o.learning_rate, o.warmup_steps, s.total_steps,
                              parse_warmup_shape(o.lr_warmup_type)};
  // save_strategy epoch: Hugging Face's optimizer steps per epoch, the batches of an epoch over the accumulation.
  const SaveStrategy save = parse_save_strategy(o.save_strategy);
  if (save == SaveStrategy::Epoch)
    s.options.save_steps = std::max<int64_t>(1, s.source->rows_per_epoch() / s.rows_per_step);
  if (save == SaveStrategy::No) s.options.save_steps = 0;
}

// --resume_from_checkpoint: weights, moments, step and data position from a checkpoint (auto: the latest one).
void resume(TrainingSession& s) {
  const TrainOptions& o = s.options;
  s.state.flags = s.flags;
  if (o.resume_from_checkpoint.empty()) return;
  std::string dir = o.resume_from_checkpoint;
  if (dir == "auto") {
    const std::vector<std::string> found = list_checkpoints(o.output_dir);
    dir = found.empty() ? "" : found.back();
  }
  if (!dir.empty()) {
    load_checkpoint(dir, s.model->params(), *s.optimizer, *s.be, &s.state);
    s.source->seek(s.state.data);
    if (s.lead) std::fprintf(stderr, "resumed from %s at step %lld\n", dir.c_str(), (long long)s.state.global_step);
  } else if (s.lead) {
    std::fprintf(stderr, "--resume_from_checkpoint auto: no checkpoint in %s, starting fresh\n", o.output_dir.c_str());
  }
}

// Rank 0: the model, the memory plan and the run's shape.
void print_start_up(const TrainingSession& s) {
  if (!s.lead) return;
  const TrainOptions& o = s.options;
  const ModelConfig& c = s.plan.config;
  const Comm& comm = *s.comm;
  const MemoryPlan mem = s.model->memory_plan();
  std::string attention = o.use_s2attn ? (o.s2_variant == "roll" ? "S2 (roll)" : "S2 (leak-free)") : "full causal";
  if (c.sliding_window > 0) attention += str_cat(" + sliding window ", c.sliding_window);
  std::fprintf(stderr,
               "model: %s, %lld layers, hidden %lld, heads %lld/%lld, vocab %lld | RoPE %s | attention %s | "
               "%lld trainable of %lld parameters\n",
               c.model_type.c_str(), (long long)c.num_hidden_layers, (long long)c.hidden_size,
               (long long)c.num_attention_heads, (long long)c.num_key_value_heads, (long long)c.vocab_size,
               describe_rope(c).c_str(), attention.c_str(),
               (long long)s.model->params().count(true), (long long)s.model->params().count(false));
  std::fprintf(stderr, "memory plan per rank (MiB): frozen %.1f, trainable %.1f, gradients %.1f, optimizer %.1f, "
               "activations %.1f%s%s\n",
               mem.frozen_weights / 1048576.0, mem.trainable_weights / 1048576.0, mem.gradients / 1048576.0,
               s.optimizer->state_bytes() / 1048576.0, mem.activations / 1048576.0,
               s.zero3 ? str_cat(", ZeRO-3 parameter shards ", s.zero3->shard_bytes() / 1048576.0, ", gather slots ",
                                 s.zero3->staging_bytes() / 1048576.0).c_str()
                       : "",
               mem.host_staging ? str_cat("; host memory: offloaded layer inputs ",
                                          mem.host_staging / 1048576.0).c_str()
                                : "");
  std::fprintf(stderr, "training %lld steps of %lld rows × %lld tokens (%lld rows per epoch) on %d rank%s (%s, ZeRO "
               "stage %lld%s)\n", (long long)s.total_steps, (long long)s.rows_per_step, (long long)o.model_max_length,
               (long long)s.source->rows_per_epoch(), comm.size(), comm.size() == 1 ? "" : "s", comm.name().c_str(),
               (long long)o.zero_stage,
               o.zero_stage == 2 ? str_cat(", ", s.optimizer->num_buckets(), " gradient bucket",
                                           s.optimizer->num_buckets() == 1 ? "" : "s").c_str()
                                 : "");
  if (!s.comm_why.empty()) std::fprintf(stderr, "communicator: %s (%s)\n", comm.name().c_str(), s.comm_why.c_str());
}

}  // namespace

SaveStrategy parse_save_strategy(const std::string& value) {
  if (value == "steps") return SaveStrategy::Steps;
  if (value == "epoch") return SaveStrategy::Epoch;
  if (value == "no") return SaveStrategy::No;
  fail("--save_strategy: expected steps, epoch or no, got `", value, "`");
}

GradientCheckpointing parse_gradient_checkpointing(const std::string& value, int64_t num_hidden_layers) {
  const std::string v = to_lower(value);
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

std::unique_ptr<TrainingSession> set_up_training(const TrainOptions& options, const nlohmann::json& flags,
                                                 Comm* world) {
  check_options(options);
  auto s = std::make_unique<TrainingSession>();
  s->options = options;
  s->flags = flags;
  open_run(*s, world);
  plan_model_options(*s);
  build_model(*s);
  open_data(*s);
  resume(*s);
  print_start_up(*s);
  return s;
}

}  // namespace ll
