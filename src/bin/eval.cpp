// build/eval: LongLoRA's evaluation protocols (eval.py perplexity, passkey_retrivial.py) and LongAlpaca-style
// generation with a KV cache. Subcommand dispatch and flags only; the work is in src/eval/commands.h.
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <string>

#include "eval/command_flags.h"
#include "eval/commands.h"
#include "io/model_folder.h"
#include "mpi/comm.h"
#include "mpi/rank_agreement.h"
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
    "               temperature / top-p sampling (temperature 0: greedy); --enable_streaming: StreamingLLM\n"
    "  streaming    run_streaming_llama_longalpaca.py: a JSON list of instructions answered in turn, greedy,\n"
    "               in one conversation, with StreamingLLM's start + recent KV cache (--enable_streaming)\n\n"
    "mpirun -np N eval perplexity|passkey ... splits the windows / trials over N ranks (eval_distributed.py) and\n"
    "gives exactly the one-rank results; rank 0 prints and writes --json.\n";

// After parsing: the ignored flags' lines, and a run's output folder as --base_model resolved to its model (printed
// by rank 0 alone). Under mpirun the ranks must have been given the same flags; a stuck collective ends them all.
void prepare(const ll::Flags& f, ll::EvalCommon& c, ll::Comm& comm) {
  const bool lead = comm.rank() == 0;
  if (lead)
    for (const std::string& note : f.notes()) std::fprintf(stderr, "%s\n", note.c_str());
  c.base_model = ll::resolve_base_model(c.base_model, lead ? &std::cerr : nullptr);
  comm.set_timeout(c.comm_timeout_sec);
  ll::check_flags_agree(comm, f.values());
}

// generate and streaming are one conversation each: nothing to split. Refused rather than run on rank 0 alone, so
// that the other ranks do not sit on a GPU (and a launch meant for something else is noticed).
void require_one_rank(const ll::Comm& comm, const std::string& command) {
  LL_CHECK(comm.size() == 1, command, " runs on one rank (one conversation, nothing to split), but this launch "
           "started ", comm.size(), " ranks; run it without mpirun, or with -np 1 (only perplexity and passkey split "
           "their work over ranks)");
}

int run(int argc, char** argv, ll::Comm& comm) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  if (command == "perplexity") {
    ll::PerplexityCommand c;
    ll::Flags f("eval perplexity",
                "Perplexity by LongLoRA's eval.py: windows of seq_len tokens at range(0, N - seq_len, sliding_window)\n"
                "(last start dropped), all seq_len - 1 next tokens scored with full causal attention.");
    ll::add_perplexity_flags(f, c);
    if (!f.parse(argc, argv, 2)) return 0;
    c.sliding_window_given = f.was_set("sliding_window");
    prepare(f, c.common, comm);
    ll::run_perplexity_command(c, std::cout, std::cerr, f.values(), &comm);
  } else if (command == "passkey") {
    ll::PasskeyCommand c;
    ll::Flags f("eval passkey",
                "Passkey retrieval by LongLoRA's passkey_retrivial.py: for i < max_tokens // interval, prompts of\n"
                "n_garbage = int(3.75*(i+1)*interval // 1024 * 1024) filler characters, seeds 0..num_tests-1.");
    ll::add_passkey_flags(f, c);
    if (!f.parse(argc, argv, 2)) return 0;
    prepare(f, c.common, comm);
    ll::run_passkey_command(c, std::cout, std::cerr, f.values(), &comm);
  } else if (command == "generate") {
    ll::GenerateCommand c;
    ll::Flags f("eval generate",
                "Generation with a KV cache, streamed to stdout, by LongAlpaca's inference.py: the prompt is\n"
                "\"[INST]{material}\\n{question}[/INST]\" (or \"[INST]{prompt}[/INST]\"); stops at EOS.");
    ll::add_generate_flags(f, c);
    if (!f.parse(argc, argv, 2)) return 0;
    require_one_rank(comm, command);
    prepare(f, c.common, comm);
    ll::run_generate_command(c, std::cout, std::cerr, f.values());
  } else if (command == "streaming") {
    ll::StreamingCommand c;
    ll::Flags f("eval streaming",
                "LongLoRA's run_streaming_llama_longalpaca.py: the `instruction` of each record of --test_filepath\n"
                "answered in turn, greedy, in one conversation (\"USER: ...\\n\\nASSISTANT: \"); with --enable_streaming\n"
                "the KV cache keeps the first --start_size and the last --recent_size tokens (StreamingLLM).");
    ll::add_streaming_command_flags(f, c);
    if (!f.parse(argc, argv, 2)) return 0;
    require_one_rank(comm, command);
    prepare(f, c.common, comm);
    ll::run_streaming_command(c, std::cout, std::cerr, f.values());
  } else {
    std::string hint;
    for (const char* known : {"perplexity", "passkey", "generate", "streaming"})
      if (command.size() >= 3 && std::string(known).compare(0, 3, command, 0, 3) == 0) hint = known;
    ll::fail("unknown command `", command, "`", hint.empty() ? "" : "; did you mean `" + hint + "`?",
             " (commands: perplexity, passkey, generate, streaming; see eval --help)");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<ll::Comm> comm;
  try {
    comm = ll::make_world_comm();  // several ranks when started by mpirun / srun
    return run(argc, argv, *comm);
  } catch (const std::exception& e) {
    // Flags' messages start with "eval <command>: "; keep that prefix in front of "error:".
    std::string message = ll::exception_message(e), prefix = "eval";
    if (message.rfind("eval ", 0) == 0 && message.find(": ") != std::string::npos) {
      prefix = message.substr(0, message.find(": "));
      message.erase(0, prefix.size() + 2);
    }
    // With several ranks, one failure must end them all (peers would otherwise wait in a collective forever).
    if (comm && comm->size() > 1) comm->abort(1, prefix + ": error: " + message);
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), message.c_str());
    return 1;
  }
}
