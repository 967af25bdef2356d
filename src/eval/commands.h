// The three subcommands of build/eval as library functions (src/bin/eval.cpp only parses flags into these
// structs, eval/command_flags.h, which also declares each numeric flag's range): each prints a human-readable report, returns its results as JSON and writes them to --json atomically.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "eval/eval_model.h"
#include "eval/generate.h"

namespace ll {

class Comm;

// Flags every subcommand has: the model's (shared with build/serve), the results file, the progress bar, and the
// multi-rank timeout.
struct EvalCommon : EvalModelFlags {
  std::string json;               // results file ("" = none)
  bool progress = true;           // progress bar on stderr
  double comm_timeout_sec = 600;  // perplexity, passkey under mpirun: a collective stuck this long ends every rank
};

// StreamingLLM (attention sinks) by LongLoRA's flag names: --enable_streaming --start_size 4 --recent_size 8192.
struct StreamingFlags {
  bool enable_streaming = false;
  int64_t start_size = 4, recent_size = 8192;
  StreamingWindow window() const { return {start_size, enable_streaming ? recent_size : 0}; }
};

struct PerplexityCommand {
  EvalCommon common;
  std::string data_path;
  // sliding_window: LongLoRA eval.py's name for the STRIDE between window starts (not a model's attention window,
  // which config.json's sliding_window sets); sliding_window_given: passed by the user (a note for such models).
  int64_t seq_len = 2048, batch_size = 1, sliding_window = 256, max_windows = 0;
  bool drop_last = true;
  bool sliding_window_given = false;
};

struct PasskeyCommand {
  EvalCommon common;
  std::string tokenizer;  // "" = the one in <base_model> (tokenizer.json, else tokenizer.model)
  int64_t max_tokens = 32000, interval = 1000, num_tests = 10, prefill_chunk = 1024;
  bool reuse_prefix = true;
};

struct GenerateCommand {
  EvalCommon common;
  std::string tokenizer;
  std::string prompt, material, question;
  // Chat template (data/chat_template.h): auto (from the model folder; LongLoRA's llama2 for Llama-2), llama2
  // ("[INST]{instruction}[/INST]", inference.py), llama3, chatml, mistral, none (text as is, after BOS).
  std::string template_name = "auto";
  bool parse_special_tokens = false;  // literal special-token strings in the prompt / material become their ids
  int64_t max_gen_len = 512, prefill_chunk = 1024, seed = 0;
  double temperature = 0.6, top_p = 0.9;
  StreamingFlags streaming;  // generate past the window: a fixed cache of start_size + recent_size tokens
};

// run_streaming_llama_longalpaca.py: the `instruction` of every record of --test_filepath answered in turn, greedy,
// in one conversation ("USER: {instruction}\n\nASSISTANT: ", BOS as the tokenizer adds it), printed as it streams.
struct StreamingCommand {
  EvalCommon common;
  std::string tokenizer, test_filepath;
  int64_t max_gen_len = 1000, prefill_chunk = 1024;
  StreamingFlags streaming;  // without --enable_streaming the cache grows to the model's context
};

// `out` receives the report (generate: the generated text, streamed), `log` model loading and warnings.
// `flags` (the resolved flag values) is recorded in the JSON.
// Perplexity and passkey run on every rank of `comm` (null: one rank) and split the work (eval_distributed.py's
// role): every rank returns the one-rank results with "world_size" added; rank 0 alone writes to out, log and
// --json. With --device cuda each rank takes its local rank's GPU (shared round-robin when there are fewer).
nlohmann::json run_perplexity_command(const PerplexityCommand& c, std::ostream& out, std::ostream& log,
                                      const nlohmann::json& flags = nullptr, Comm* comm = nullptr);
nlohmann::json run_passkey_command(const PasskeyCommand& c, std::ostream& out, std::ostream& log,
                                   const nlohmann::json& flags = nullptr, Comm* comm = nullptr);
nlohmann::json run_generate_command(const GenerateCommand& c, std::ostream& out, std::ostream& log,
                                    const nlohmann::json& flags = nullptr);
nlohmann::json run_streaming_command(const StreamingCommand& c, std::ostream& out, std::ostream& log,
                                     const nlohmann::json& flags = nullptr);

// inference.py's prompt: "[INST]" + material + "\n" + question + "[/INST]" (or "[INST]" + prompt + "[/INST]").
std::string longalpaca_prompt(const std::string& instruction);

}  // namespace ll
