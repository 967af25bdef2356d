// build/eval: LongLoRA's evaluation protocols (eval.py perplexity, passkey_retrivial.py) and LongAlpaca-style
// generation with a KV cache. Subcommand dispatch and flags only; the work is in src/eval/commands.h.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include "eval/commands.h"
#include "util/error.h"
#include "util/flags.h"

namespace {

const char kUsage[] =
    "usage: eval <command> [--flag value ...]   (eval <command> --help lists its flags)\n"
    "LongLoRA evaluation on a Hugging Face Llama folder, optionally with a LoRA/LongLoRA adapter (not merged).\n\n"
    "commands:\n"
    "  perplexity   eval.py's protocol: windows of --seq_len every --sliding_window tokens of a token file;\n"
    "               both LongLoRA perplexities, loss, accuracy, tokens/s\n"
    "  passkey      passkey_retrivial.py: LongLoRA's prompts (numpy seeds 0..num_tests-1), greedy decoding,\n"
    "               exact token match, accuracy per length (plot: scripts/plot_passkey.py)\n"
    "  generate     LongAlpaca's inference.py prompt \"[INST]{material}\\n{question}[/INST]\", streamed, with\n"
    "               temperature / top-p sampling (temperature 0: greedy)\n";

// Flags every command shares; `default_context` documents what --context_size falls back to.
void add_common(ll::Flags& f, ll::EvalCommon& c, bool* flash_attn, std::string* cache_dir, const char* context_help) {
  f.add("base_model", &c.base_model, "Hugging Face Llama folder (config.json + safetensors)");
  f.add("peft_model", &c.peft_model,
        "adapter folder written by build/train (adapter_config.json, adapter_model.safetensors, optional "
        "trainable_params.safetensors and longlora.json); applied without merging");
  f.add("context_size", &c.context_size, context_help);
  f.add("rope_scaling_factor", &c.rope_scaling_factor,
        "linear RoPE factor; 0 = the rules: adapter's longlora.json (without --context_size), else the base "
        "config's rope_scaling, else ceil(context / max_position_embeddings)");
  f.add("add_pad_token", &c.add_pad_token,
        "auto | true | false: append LongLoRA's [PAD] row (mean of the others); auto = when the adapter's "
        "vocabulary is the base's + 1");
  f.add("device", &c.device, "backend: cpu (fp32), cpu-f64, or cuda (when built with the CUDA backend)");
  f.add("json", &c.json, "write the results as JSON to this file (atomically)");
  f.add("progress", &c.progress, "progress bar with ETA on stderr");
  f.add("flash_attn", flash_attn, "accepted for LongLoRA command lines; ignored (always full causal attention)");
  f.add("cache_dir", cache_dir, "accepted for LongLoRA command lines; ignored (models are local folders)");
}

int run(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  bool flash_attn = true;
  std::string cache_dir;
  if (command == "perplexity") {
    ll::PerplexityCommand c;
    ll::Flags f("eval perplexity",
                "Perplexity by LongLoRA's eval.py: windows of seq_len tokens at range(0, N - seq_len, sliding_window)\n"
                "(last start dropped), all seq_len - 1 next tokens scored with full causal attention.");
    add_common(f, c.common, &flash_attn, &cache_dir,
               "training context for the RoPE factor rule (<= 0: --seq_len, as eval.py defaults it)");
    f.add("data_path", &c.data_path, "token file: raw uint16 (LongLoRA's pg19/*.bin) or llm.c-headered");
    f.add("seq_len", &c.seq_len, "evaluation window length");
    f.add("batch_size", &c.batch_size, "windows per forward pass");
    f.add("sliding_window", &c.sliding_window, "stride between window starts");
    f.add("max_windows", &c.max_windows, "evaluate only the first K windows (0: all); reported as partial");
    f.add("drop_last", &c.drop_last, "drop the last window start like eval.py (false: eval_distributed.py)");
    if (!f.parse(argc, argv, 2)) return 0;
    ll::run_perplexity_command(c, std::cout, std::cerr, f.values());
  } else if (command == "passkey") {
    ll::PasskeyCommand c;
    ll::Flags f("eval passkey",
                "Passkey retrieval by LongLoRA's passkey_retrivial.py: for i < max_tokens // interval, prompts of\n"
                "n_garbage = int(3.75*(i+1)*interval // 1024 * 1024) filler characters, seeds 0..num_tests-1.");
    add_common(f, c.common, &flash_attn, &cache_dir,
               "training context for the RoPE factor rule (<= 0: not given)");
    f.add("tokenizer", &c.tokenizer, "sentencepiece tokenizer.model, or a model folder holding one (default: <base_model>/tokenizer.model)");
    f.add("max_tokens", &c.max_tokens, "longest prompt to aim for, in tokens (sets the number of lengths)");
    f.add("interval", &c.interval, "token step between lengths");
    f.add("num_tests", &c.num_tests, "trials per length (seeds 0..num_tests-1)");
    f.add("prefill_chunk", &c.prefill_chunk, "prompt tokens per forward pass while prefilling (bounds memory)");
    f.add("reuse_prefix", &c.reuse_prefix,
          "keep the KV cache of the filler shared with the previous prompt (same results up to rounding)");
    if (!f.parse(argc, argv, 2)) return 0;
    ll::run_passkey_command(c, std::cout, std::cerr, f.values());
  } else if (command == "generate") {
    ll::GenerateCommand c;
    ll::Flags f("eval generate",
                "Generation with a KV cache, streamed to stdout, by LongAlpaca's inference.py: the prompt is\n"
                "\"[INST]{material}\\n{question}[/INST]\" (or \"[INST]{prompt}[/INST]\"); stops at EOS.");
    add_common(f, c.common, &flash_attn, &cache_dir,
               "training context for the RoPE factor rule (<= 0: not given)");
    f.add("tokenizer", &c.tokenizer, "sentencepiece tokenizer.model, or a model folder holding one (default: <base_model>/tokenizer.model)");
    f.add("prompt", &c.prompt, "instruction text (instead of --material/--question)");
    f.add("material", &c.material, "text file with the material (a book, a paper)");
    f.add("question", &c.question, "question about the material");
    f.add("template", &c.template_name, "llama2 (\"[INST]...[/INST]\", inference.py) or none (text as is)");
    f.add("max_gen_len", &c.max_gen_len, "most tokens to generate");
    f.add("temperature", &c.temperature, "sampling temperature (0: greedy)");
    f.add("top_p", &c.top_p, "nucleus sampling mass");
    f.add("seed", &c.seed, "sampling seed (deterministic RNG)");
    f.add("prefill_chunk", &c.prefill_chunk, "prompt tokens per forward pass while prefilling (bounds memory)");
    if (!f.parse(argc, argv, 2)) return 0;
    ll::run_generate_command(c, std::cout, std::cerr, f.values());
  } else {
    std::string hint;
    for (const char* known : {"perplexity", "passkey", "generate"})
      if (command.size() >= 3 && std::string(known).compare(0, 3, command, 0, 3) == 0) hint = known;
    ll::fail("unknown command `", command, "`", hint.empty() ? "" : "; did you mean `" + hint + "`?",
             " (commands: perplexity, passkey, generate; see eval --help)");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    // Flags' messages start with "eval <command>: "; keep that prefix in front of "error:".
    std::string message = ll::exception_message(e), prefix = "eval";
    if (message.rfind("eval ", 0) == 0 && message.find(": ") != std::string::npos) {
      prefix = message.substr(0, message.find(": "));
      message.erase(0, prefix.size() + 2);
    }
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), message.c_str());
    return 1;
  }
}
