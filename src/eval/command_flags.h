// build/eval's flags for each subcommand, bound to the command structs of eval/commands.h, every numeric one with
// the range of values it accepts. src/bin/eval.cpp parses them; run_*_command checks a struct filled in code
// against the same ranges (check_command_ranges), so a range is declared once, here.
#pragma once
#include "eval/commands.h"
#include "util/flags.h"

namespace ll {

// The model's flags (eval/eval_model.h's EvalModelFlags): every subcommand's and build/serve's; `context_help` says
// what --context_size means for the command.
void add_model_flags(Flags& flags, EvalModelFlags& m, const char* context_help);
void add_perplexity_flags(Flags& flags, PerplexityCommand& c);
void add_passkey_flags(Flags& flags, PasskeyCommand& c);
void add_generate_flags(Flags& flags, GenerateCommand& c);
void add_streaming_command_flags(Flags& flags, StreamingCommand& c);
// --enable_streaming (a bare flag means true), --start_size, --recent_size: also build/serve's.
void add_streaming_flags(Flags& flags, StreamingFlags& s);

// Throw ll::Error naming the first option outside its flag's range (or NaN/inf), the value and the range.
void check_command_ranges(const PerplexityCommand& c);
void check_command_ranges(const PasskeyCommand& c);
void check_command_ranges(const GenerateCommand& c);
void check_command_ranges(const StreamingCommand& c);

}  // namespace ll
