#include "eval/command_flags.h"

namespace ll {

namespace {

// LongLoRA's eval.py, eval_distributed.py, passkey_retrivial.py and inference.py flags that have no effect here,
// accepted with one printed line saying why (Flags::add_ignored). The other flags of those scripts are ours, with
// their meaning.
struct IgnoredFlag {
  const char* name;
  const char* why;
};
// Why --flash_attn / --use_flash_attn change nothing (eval.py's, inference.py's, the streaming script's).
const char kFlashAttnIgnored[] = "attention is always this engine's own fused kernel (full causal attention)";
const IgnoredFlag kIgnoredEverywhere[] = {
    {"flash_attn", kFlashAttnIgnored},
    {"cache_dir", "models are read from local folders; nothing is downloaded or cached"},
};
const IgnoredFlag kIgnoredPerplexity[] = {
    {"progress_bar_fresh_rate", "eval_distributed.py's refresh rate; the --progress bar redraws itself"},
};

// Flags every command shares; `context_help` says what --context_size falls back to.
void add_common(Flags& f, EvalCommon& c, const char* context_help) {
  add_model_flags(f, c, context_help);
  f.add("json", &c.json, "write the results as JSON to this file (atomically)");
  f.add("progress", &c.progress, "progress bar with ETA on stderr");
}

template <typename Command>
void check_ranges(const Command& c, const char* program, void (*add)(Flags&, Command&)) {
  Command copy = c;  // the flags bind to it; nothing is parsed
  Flags flags(program, "");
  add(flags, copy);
  flags.check_values();
}

// Perplexity and passkey run under mpirun (several ranks split the work).
void add_rank_flags(Flags& f, EvalCommon& c) {
  f.add("comm_timeout_sec", &c.comm_timeout_sec,
        "with several ranks (mpirun): a collective stuck this long (a peer died or hangs) ends every rank")
      .above(0);
}

}  // namespace

void add_model_flags(Flags& f, EvalModelFlags& m, const char* context_help) {
  f.add("base_model", &m.base_model,
        "Hugging Face model folder (config.json + safetensors), or a full fine-tuning run's output folder");
  f.add("peft_model", &m.peft_model,
        "adapter folder written by build/train (adapter_config.json, adapter_model.safetensors, optional "
        "trainable_params.safetensors and longlora.json); applied without merging");
  f.add("context_size", &m.context_size, context_help);
  f.add("rope_scaling_factor", &m.rope_scaling_factor,
        "linear RoPE factor; 0 = the rules: adapter's longlora.json (without --context_size), else the base "
        "config's rope_scaling, else ceil(context / max_position_embeddings)")
      .at_least(0);
  f.add("add_pad_token", &m.add_pad_token,
        "auto | true | false: append LongLoRA's [PAD] row (mean of the others); auto = when the adapter's "
        "vocabulary is the base's + 1");
  f.add("device", &m.device, "backend: cpu (fp32), cpu-f64, or cuda (when built with the CUDA backend)");
  for (const IgnoredFlag& i : kIgnoredEverywhere) f.add_ignored(i.name, i.why);
  add_quant_flags(f, m.quant);
}

void add_perplexity_flags(Flags& f, PerplexityCommand& c) {
  add_common(f, c.common, "training context for the RoPE factor rule (<= 0: --seq_len, as eval.py defaults it)");
  add_rank_flags(f, c.common);
  f.add("data_path", &c.data_path, "token file: raw uint16 (LongLoRA's pg19/*.bin) or llm.c-headered");
  f.add("seq_len", &c.seq_len, "evaluation window length").at_least(2);
  f.add("batch_size", &c.batch_size, "windows per forward pass").at_least(1);
  f.add("sliding_window", &c.sliding_window,
        "the STRIDE between evaluation windows (window starts every N tokens; LongLoRA eval.py's name), not the "
        "model's attention window, which a Mistral model's config.json sets").at_least(1);
  f.add("max_windows", &c.max_windows, "evaluate only the first K windows (0: all); reported as partial").at_least(0);
  f.add("drop_last", &c.drop_last, "drop the last window start like eval.py (false: eval_distributed.py)");
  for (const IgnoredFlag& i : kIgnoredPerplexity) f.add_ignored(i.name, i.why);
}

void add_passkey_flags(Flags& f, PasskeyCommand& c) {
  add_common(f, c.common, "training context for the RoPE factor rule (<= 0: not given)");
  add_rank_flags(f, c.common);
  f.add("tokenizer", &c.tokenizer,
        "tokenizer.json (Hugging Face) or sentencepiece tokenizer.model, or a model folder holding one "
        "(tokenizer.json preferred; default: the one in <base_model>)");
  f.add("max_tokens", &c.max_tokens, "longest prompt to aim for, in tokens (sets the number of lengths)").at_least(1);
  f.add("interval", &c.interval, "token step between lengths").at_least(1);
  f.add("num_tests", &c.num_tests, "trials per length (seeds 0..num_tests-1)").at_least(1);
  f.add("prefill_chunk", &c.prefill_chunk, "prompt tokens per forward pass while prefilling (bounds memory)")
      .at_least(1);
  f.add("reuse_prefix", &c.reuse_prefix,
        "keep the KV cache of the filler shared with the previous prompt (same results up to rounding)");
}

void add_generate_flags(Flags& f, GenerateCommand& c) {
  add_common(f, c.common, "training context for the RoPE factor rule (<= 0: not given)");
  f.add("tokenizer", &c.tokenizer,
        "tokenizer.json (Hugging Face) or sentencepiece tokenizer.model, or a model folder holding one "
        "(tokenizer.json preferred; default: the one in <base_model>)");
  f.add("prompt", &c.prompt, "instruction text (instead of --material/--question)");
  f.add("material", &c.material, "text file with the material (a book, a paper)");
  f.add("question", &c.question, "question about the material");
  f.add("chat_template", &c.template_name,
        "auto (from the model folder's tokenizer_config.json / config.json; llama2 for Llama-2), llama2 "
        "(\"[INST]...[/INST]\", inference.py), llama3, chatml, mistral, or none (text as is)");
  f.add("template", &c.template_name, "the former name of --chat_template");
  f.add("parse_special_tokens", &c.parse_special_tokens,
        "literal special-token strings in --prompt / --material become their ids (default: they are text)");
  f.add("max_gen_len", &c.max_gen_len, "most tokens to generate").at_least(1);
  f.add("temperature", &c.temperature, "sampling temperature (0: greedy)").at_least(0);
  f.add("top_p", &c.top_p, "nucleus sampling mass").above(0).at_most(1);
  f.add("seed", &c.seed, "sampling seed (deterministic RNG)").at_least(0);
  f.add("prefill_chunk", &c.prefill_chunk, "prompt tokens per forward pass while prefilling (bounds memory)")
      .at_least(1);
  add_streaming_flags(f, c.streaming);
}

void add_streaming_flags(Flags& f, StreamingFlags& s) {
  f.add("enable_streaming", &s.enable_streaming,
        "StreamingLLM (attention sinks): a fixed KV cache of start_size + recent_size tokens; when full, the oldest "
        "tokens after the first start_size are evicted and the keys re-rotated to their place in the cache");
  f.add("start_size", &s.start_size, "with --enable_streaming: first tokens always kept (the attention sinks)")
      .at_least(0);
  f.add("recent_size", &s.recent_size, "with --enable_streaming: most recent tokens kept").at_least(1);
}

void add_streaming_command_flags(Flags& f, StreamingCommand& c) {
  add_common(f, c.common, "training context for the RoPE factor rule (<= 0: not given)");
  f.add("model_name_or_path", &c.common.base_model, "the same as --base_model (LongLoRA's name)");
  f.add("tokenizer", &c.tokenizer,
        "tokenizer.json (Hugging Face) or sentencepiece tokenizer.model, or a model folder holding one "
        "(tokenizer.json preferred; default: the one in <base_model>)");
  f.add("test_filepath", &c.test_filepath, "JSON list of records; their `instruction` fields are the turns");
  f.add_ignored("use_flash_attn", kFlashAttnIgnored);
  f.add("max_gen_len", &c.max_gen_len, "most tokens to generate per turn").at_least(1);
  f.add("prefill_chunk", &c.prefill_chunk, "prompt tokens per forward pass while prefilling (bounds memory)")
      .at_least(1);
  add_streaming_flags(f, c.streaming);
}

void check_command_ranges(const PerplexityCommand& c) { check_ranges(c, "eval perplexity", add_perplexity_flags); }
void check_command_ranges(const PasskeyCommand& c) { check_ranges(c, "eval passkey", add_passkey_flags); }
void check_command_ranges(const GenerateCommand& c) { check_ranges(c, "eval generate", add_generate_flags); }
void check_command_ranges(const StreamingCommand& c) {
  check_ranges(c, "eval streaming", add_streaming_command_flags);
}

}  // namespace ll
