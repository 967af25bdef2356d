// The training run: LongLoRA's fine-tune.py / supervised-fine-tune.py as one loop.
//   batch → forward → loss → backward (accumulated over micro-batches) → clip → AdamW → log / checkpoint
// Flag names follow LongLoRA's scripts (Hugging Face TrainingArguments); src/bin/train.cpp registers them.
#pragma once
#include <csignal>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/quant_options.h"
#include "mpi/comm.h"

namespace ll {

struct TrainOptions {
  // model and data
  std::string model_name_or_path;  // HF folder, or
  std::string model_config;        // preset name (demo, llama2-7b, llama2-13b, llama2-70b) or config.json, random init
  std::string tokenizer;           // tokenizer.json or .model (default: the one in model_name_or_path)
  std::string data_path;           // pretraining token file (.bin), or
  std::string sft_data_path;       // LongAlpaca .json / .jsonl
  std::string chat_template = "auto";  // SFT prompt format (data/chat_template.h); auto: from the model (or tokenizer) folder
  bool parse_special_tokens = false;   // SFT text: literal special-token strings become their ids
  std::string output_dir = "output";
  int64_t model_max_length = 8192;
  bool add_pad_token = true;  // LongLoRA adds [PAD] = id V (mean-initialised) to HF models; ignored for random init
  // attention and positions
  bool use_s2attn = true;
  double s2_group_ratio = 0.25;
  std::string s2_variant = "leakfree";
  double rope_scaling_factor = 0;  // 0: LongLoRA's ceil rule from model_max_length
  // what trains
  bool low_rank_training = true;
  QuantOptions quant;  // --load_in_4bit and the bnb_4bit_* flags (QLoRA)
  int64_t lora_r = 8;
  double lora_alpha = 16, lora_dropout = 0;
  std::string lora_target;  // empty: the architecture's LongLoRA default (Llama q,k,v,o_proj; GPT-NeoX query_key_value,dense)
  std::string trainable_params = "embed,norm";
  // optimisation
  double learning_rate = 2e-5, weight_decay = 0, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  int64_t warmup_steps = 0;
  std::string lr_scheduler_type = "constant_with_warmup";
  std::string lr_warmup_type = "linear";  // linear (Hugging Face), deepspeed_log or deepspeed_linear (schedule.h)
  int64_t per_device_train_batch_size = 1, gradient_accumulation_steps = 1;
  int64_t max_steps = -1;  // > 0 overrides num_train_epochs
  double num_train_epochs = 1;
  // bookkeeping
  int64_t save_steps = 500, save_total_limit = 2, logging_steps = 1, seed = 42;
  // Hugging Face's save_strategy: steps (every save_steps, and at the end), epoch (at the end of every epoch and
  // of the run), no (no checkpoint; a SIGINT/SIGTERM still saves one to resume from). The export is always written.
  std::string save_strategy = "steps";
  // true | false | auto | N: how many decoder layers (the first ones) are checkpointed — keep only their input and
  // are recomputed in backward (ModelOptions::checkpoint_layers) — true: all, false: none, N: N of them
  // (0..num_hidden_layers). auto: on a GPU, the fewest whose plan
  // fits the free device memory (0 when the run fits without recomputation: fastest); on host backends, all.
  std::string gradient_checkpointing = "auto";
  // Keep the saved inputs of the checkpointed layers in (pinned) host memory instead of on the device, copied out
  // during the forward and back during the backward while compute runs (ModelOptions::offload_checkpoints). Needs
  // checkpointed layers (an error with --gradient_checkpointing false or 0); with auto, the decision plans the
  // offloaded layout (auto never turns the offload on by itself).
  bool offload_checkpoints = false;
  // Run every layer's MLP over row tiles of at most this many tokens, recomputing its intermediates in backward
  // (ModelOptions::mlp_tile_rows; 0: off). Bounds the MLP's activation memory for the longest contexts.
  int64_t mlp_tile_rows = 0;
  std::string resume_from_checkpoint;  // "", a checkpoint directory, or "auto"
  // A fresh run (no resume) into an output_dir that holds another run is refused; true removes that run's files
  // first (checkpoints, metrics, training_args.json, exports; never other files). src/train/run_dir.h.
  bool overwrite_output_dir = false;
  std::string device = "cpu";
  int64_t zero_stage = 0;
  double comm_timeout_sec = 600;  // a collective stuck this long (a peer died or hangs) ends every rank
  // GPU ranks: auto | nccl | mpi (NCCL, or device buffers over MPI through host staging; mpi/comm.h
  // choose_device_comm). CPU ranks: auto and mpi mean MPI on host buffers.
  std::string comm = "auto";
  int64_t comm_chunk_bytes = kDefaultCommChunkBytes;  // the staged comm's chunk
  int64_t reduce_bucket_size = 0;  // ZeRO-2 gradient elements per reduce-scatter bucket; 0: auto (one bucket on
                                   // CPU ranks, 2^24 with NCCL)
  bool save_merged = false;
  bool profile_ops = false;  // time every backend op in the training loop: stderr table + output_dir/op_profile.json
  int64_t max_nonfinite_steps = 3;  // consecutive non-finite steps that stop the run
  // Set by --deepspeed (train/deepspeed_config.h): the config's path and its train_batch_size (0: absent or "auto"),
  // checked against micro batch × accumulation × world size once the world size is known.
  std::string deepspeed_config;
  int64_t deepspeed_train_batch_size = 0;
  int64_t interrupt_at_step = -1;   // tests: raise interrupt_signal after this step (no flag)
  int interrupt_signal = SIGINT;    // tests: the signal interrupt_at_step raises
  int64_t pretend_host_memory = 0;  // tests: available host memory in bytes for the offload check (no flag; 0: real)
};

struct TrainResult {
  int64_t steps = 0;          // optimizer steps completed (including resumed ones)
  double last_loss = 0;       // loss of the last step
  bool interrupted = false;   // stopped by SIGINT/SIGTERM after saving a checkpoint
  int stop_signal = 0;        // the signal that stopped it (build/train exits 128 + stop_signal)
  std::string output_dir;
};

// --gradient_checkpointing parsed (case-insensitive; LongLoRA's True/False parse): true/yes → every layer,
// false/no → none, auto, or a number of layers 0..num_hidden_layers. Throws ll::Error naming the flag and what is
// expected otherwise; num_hidden_layers < 0 checks the spelling only (the model is not known yet).
struct GradientCheckpointing {
  bool automatic = false;  // auto: decided from the memory plan (layers then holds num_hidden_layers)
  int64_t layers = 0;      // checkpointed layers (ModelOptions::checkpoint_layers)
};
GradientCheckpointing parse_gradient_checkpointing(const std::string& value, int64_t num_hidden_layers);

// --save_strategy parsed (TrainOptions::save_strategy); throws ll::Error naming the flag for anything else.
enum class SaveStrategy { Steps, Epoch, No };
SaveStrategy parse_save_strategy(const std::string& value);

class Comm;

// Runs the whole job; throws ll::Error with context on bad input. `flags` (the resolved flags, the same on every
// rank) is recorded in output_dir/training_args.json; output_dir is prepared as src/train/run_dir.h describes.
// With several ranks (`comm`, default: a single process) every rank calls it: each reads its slice of every
// global batch, gradients are reduced (ZeRO stage 0 or 2), and rank 0 alone prints, writes metrics and exports.
TrainResult run_training(const TrainOptions& options, const nlohmann::json& flags, Comm* comm = nullptr);

}  // namespace ll
