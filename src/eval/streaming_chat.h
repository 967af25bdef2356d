// LongLoRA's run_streaming_llama_longalpaca.py as a library: one conversation over a streaming KV cache (attention
// sinks, eval/generate.h StreamingWindow), each instruction answered in turn, greedy, with the tokens of every
// earlier turn still in front of it (as far as the window keeps them).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/generate.h"

namespace ll {

// run_streaming_llama's prompt for one turn: "USER: " + instruction + "\n\nASSISTANT: ".
std::string streaming_turn_prompt(const std::string& instruction);

// The `instruction` fields of a JSON list of records (LongLoRA's --test_filepath); errors name the file and record.
std::vector<std::string> read_streaming_instructions(const std::string& path);

// One turn: `ids` appended to everything the session was fed (streaming: after evicting room for them and
// max_gen_len more, streaming-llm's evict_for_space), then greedy decoding of up to max_gen_len tokens, stopping
// at eos_id. As in streaming-llm, the last token of an answer is not fed to the model.
GenerateResult answer_turn(InferenceSession& session, const std::vector<int32_t>& ids, int64_t max_gen_len,
                           int32_t eos_id, const std::function<void(int32_t)>& on_token = {});

}  // namespace ll
