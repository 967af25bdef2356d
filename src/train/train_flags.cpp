#include "train/train_flags.h"

namespace ll {

void add_train_flags(Flags& flags, TrainOptions& o) {
  flags.add("model_name_or_path", &o.model_name_or_path, "Hugging Face Llama folder (config.json, *.safetensors)");
  flags.add("model_config", &o.model_config,
            "instead of a folder: preset (demo, llama2-7b, llama2-13b, llama2-70b) or config.json; random init");
  flags.add("tokenizer", &o.tokenizer,
            "tokenizer.json (Hugging Face) or sentencepiece tokenizer.model, or a model folder holding one "
            "(tokenizer.json preferred; default: the one in <model_name_or_path>)");
  flags.add("data_path", &o.data_path,
            "pretraining token file (.bin from scripts/tokenize_dataset); a .json/.jsonl path means supervised "
            "fine-tuning (read as --sft_data_path, as LongLoRA's supervised-fine-tune.py)");
  flags.add("sft_data_path", &o.sft_data_path, "LongAlpaca .json list or .jsonl (instruction, output[, input])");
  flags.add("chat_template", &o.chat_template,
            "SFT prompt format: auto (from the model folder's tokenizer_config.json / config.json; LongLoRA's "
            "llama2 otherwise), llama2 (LongLoRA's [INST]...[/INST]), llama3, chatml, mistral, none");
  flags.add("parse_special_tokens", &o.parse_special_tokens,
            "SFT text: literal special-token strings (\"</s>\", \"<|im_end|>\") become their ids; default false: "
            "they are text");
  flags.add("output_dir", &o.output_dir,
            "where training_args.json, metrics.jsonl, checkpoints and exports go (not inside the model folder; "
            "one run at a time)");
  flags.add("model_max_length", &o.model_max_length, "training context length L").at_least(2);
  flags.add("add_pad_token", &o.add_pad_token, "add LongLoRA's [PAD] row (vocab + 1, mean-initialised) to HF models");
  flags.add("use_s2attn", &o.use_s2attn, "shifted sparse attention while training (false: full causal)");
  flags.add("s2_group_ratio", &o.s2_group_ratio, "S2 group size as a fraction of L").above(0).at_most(1);
  flags.add("s2_variant", &o.s2_variant, "leakfree (LongLoRA's current code) or roll (paper-era, wraps around)");
  flags.add("rope_scaling_factor", &o.rope_scaling_factor,
            "linear RoPE factor; 0 = LongLoRA's rule ceil(L / (max_position_embeddings × existing factor))")
      .at_least(0);
  flags.add("low_rank_training", &o.low_rank_training, "LoRA (true) or full fine-tuning (false)");
  add_quant_flags(flags, o.quant);
  flags.add("lora_r", &o.lora_r, "LoRA rank").at_least(1);
  flags.add("lora_alpha", &o.lora_alpha, "LoRA alpha (scale = alpha / r)");
  flags.add("lora_dropout", &o.lora_dropout, "dropout on the LoRA adapter input").at_least(0).below(1);
  flags.add("lora_target", &o.lora_target,
            "modules with adapters, as PEFT's target_modules: a module name or its dotted suffix (Llama: "
            "q_proj,…,down_proj, or q,k,v,o,gate,up,down); empty: LongLoRA's choice for the model's family "
            "(Llama q_proj,k_proj,v_proj,o_proj; GPT-NeoX query_key_value,dense)");
  flags.add("trainable_params", &o.trainable_params,
            "base weights trained fully with LoRA, LongLoRA's rule: every parameter whose name contains an entry "
            "(Llama: embed,norm,lm_head)");
  flags.add("learning_rate", &o.learning_rate, "peak learning rate").at_least(0);
  flags.add("weight_decay", &o.weight_decay, "AdamW decoupled weight decay (never on norm weights or biases)").at_least(0);
  flags.add("adam_beta1", &o.adam_beta1, "AdamW beta1").at_least(0).below(1);
  flags.add("adam_beta2", &o.adam_beta2, "AdamW beta2 (LongLoRA's code: 0.999; its paper: 0.95)").at_least(0).below(1);
  flags.add("adam_epsilon", &o.adam_epsilon, "AdamW epsilon").above(0);
  flags.add("max_grad_norm", &o.max_grad_norm, "global gradient-norm clipping (0: off)").at_least(0);
  flags.add("warmup_steps", &o.warmup_steps, "linear warmup steps").at_least(0);
  flags.add("lr_scheduler_type", &o.lr_scheduler_type, "constant_with_warmup, cosine, linear or constant");
  flags.add("lr_warmup_type", &o.lr_warmup_type,
            "warmup shape: linear (Hugging Face), deepspeed_log or deepspeed_linear (DeepSpeed's WarmupLR / "
            "WarmupDecayLR over max(2, warmup_steps) steps; set by a --deepspeed config's scheduler)");
  flags.add("per_device_train_batch_size", &o.per_device_train_batch_size, "sequences per micro-batch").at_least(1);
  flags.add("gradient_accumulation_steps", &o.gradient_accumulation_steps, "micro-batches per optimizer step")
      .at_least(1);
  flags.add("max_steps", &o.max_steps, "optimizer steps (> 0 overrides num_train_epochs)");
  flags.add("num_train_epochs", &o.num_train_epochs, "passes over the data when max_steps <= 0").at_least(0);
  flags.add("save_steps", &o.save_steps, "checkpoint every N steps (and at the end)").at_least(0);
  flags.add("save_strategy", &o.save_strategy,
            "when checkpoints are saved: steps (every --save_steps and at the end), epoch (every epoch's end and at "
            "the end), no (never; SIGINT/SIGTERM still saves one); the export is written either way");
  flags.add("save_total_limit", &o.save_total_limit, "keep the last N checkpoints (0: all)").at_least(0);
  flags.add("logging_steps", &o.logging_steps, "write metrics every N steps").at_least(1);
  flags.add("seed", &o.seed, "seed for initialisation, data order and dropout");
  flags.add("gradient_checkpointing", &o.gradient_checkpointing,
            "decoder layers checkpointed (the first ones keep only their input and are recomputed in backward, "
            "all but the last of them): true (all), false (none), N (0..num_hidden_layers), or auto (GPU: the "
            "fewest whose plan fits the free device memory, 0 when the run fits without recomputation; CPU: all)");
  flags.add("offload_checkpoints", &o.offload_checkpoints,
            "true: keep the saved inputs of the checkpointed layers in (pinned) host memory, copied out in the "
            "forward and back in the backward while the GPU computes (all but the last two; needs checkpointed "
            "layers; the start-up check counts the host memory)");
  flags.add("mlp_tile_rows", &o.mlp_tile_rows,
            "N > 0: run every layer's MLP over tiles of at most N tokens (all layers share the tile buffers; backward "
            "recomputes the MLP's up-projections per tile): the MLP's activation memory is N × intermediate_size "
            "instead of tokens × intermediate_size per layer; 0: off")
      .at_least(0);
  flags.add("resume_from_checkpoint", &o.resume_from_checkpoint, "a checkpoint directory, or auto (latest in output_dir)");
  flags.add("overwrite_output_dir", &o.overwrite_output_dir,
            "a fresh run into an output_dir holding another run: delete that run's checkpoints, metrics and "
            "exports first (without it such a run is refused; other files are kept)");
  flags.add("device", &o.device, "cpu or cuda");
  flags.add("zero_stage", &o.zero_stage, "ZeRO stage under mpirun: 0 (replicated), 2 (sharded optimizer state), 3 (sharded parameters too)");
  flags.add("comm_timeout_sec", &o.comm_timeout_sec,
            "with several ranks: a collective stuck this long (a peer died or hangs) ends every rank").above(0);
  flags.add("comm", &o.comm,
            "with several --device cuda ranks, what moves device buffers: nccl (one GPU per rank), mpi (MPI through "
            "pinned host staging, chunked and pipelined; ranks may share a GPU: local rank % visible GPUs) or auto "
            "(nccl when built and every rank has its own GPU, else mpi; one rank: none, unless nccl or mpi is named). "
            "--device cpu: auto and mpi mean MPI");
  flags.add("comm_chunk_bytes", &o.comm_chunk_bytes,
            "--comm mpi on GPU ranks: bytes per staged chunk (device→host copy, MPI and host→device copy of "
            "consecutive chunks overlap)").at_least(1);
  flags.add("reduce_bucket_size", &o.reduce_bucket_size,
            "ZeRO-2: gradient elements per reduce-scatter bucket, started during the last micro-batch's backward "
            "(0: auto — one bucket on CPU ranks, 2^24 with NCCL)").at_least(0);
  flags.add("save_merged", &o.save_merged, "LoRA runs: also write the merged Hugging Face folder (W + α/r·B·A, rope_scaling recorded) to output_dir/merged");
  flags.add("profile_ops", &o.profile_ops,
            "time every backend op of the training loop (synchronised per op, so slower): a table on stderr and "
            "output_dir/op_profile.json");
}

void check_train_option_ranges(const TrainOptions& o) {
  TrainOptions copy = o;  // the flags bind to it; nothing is parsed
  Flags flags("train", "");
  add_train_flags(flags, copy);
  flags.check_values();
}

}  // namespace ll
