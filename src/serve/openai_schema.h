// OpenAI's request and response shapes for /v1/completions and /v1/chat/completions: requests parsed and checked
// (a wrong type, a value out of range → ApiError 400 naming the field), responses and stream chunks built.
// Fields OpenAI defines that do not change what this server does (frequency_penalty, user, …) are accepted and
// ignored; `n` other than 1 and logprobs are refused.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/chat_template.h"

namespace ll::serve {

// The body as a JSON object; ApiError 400 for invalid JSON or another JSON type.
nlohmann::json parse_json_object(const std::string& body);

// A JSON list of token ids (`field` of the request): ApiError 400 naming it for anything but integers in
// [0, INT32_MAX]. Whether they are in the vocabulary is the Engine's check.
std::vector<int32_t> parse_token_ids(const nlohmann::json& list, const std::string& field);

struct CompletionRequest {
  bool chat = false;
  std::string prompt;                 // /v1/completions: the text
  std::vector<int32_t> prompt_ids;    // /v1/completions: token ids given instead (prompt_is_ids)
  bool prompt_is_ids = false;
  std::vector<ChatMessage> messages;  // /v1/chat/completions
  std::optional<int64_t> max_tokens;  // max_tokens or max_completion_tokens; ≥ 1
  double temperature = 1.0;           // [0, 2]; 0: greedy
  double top_p = 1.0;                 // (0, 1]
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;      // up to 4 non-empty strings
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage: a last chunk with the usage
  bool cache_prompt = true;           // (llama.cpp's field) reuse the KV cache of the prefix shared with the last request
};

// What a request that leaves temperature / top_p out gets: OpenAI's 1 and 1 unless build/serve was told otherwise
// (--temperature, --top_p: demo.py's flags).
struct SamplingDefaults {
  double temperature = 1.0, top_p = 1.0;
};
CompletionRequest parse_completion_request(const nlohmann::json& body, bool chat, const SamplingDefaults& defaults = {});

// What one generation produced, for the response.
struct CompletionResult {
  std::string text;
  std::string finish_reason;  // stop (EOS, end of turn, a stop string) | length (max_tokens)
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0, context_size = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// A response's identity: id ("cmpl-…" / "chatcmpl-…"), model name and creation time (Unix seconds).
struct ResponseId {
  std::string id, model;
  int64_t created = 0;
  bool chat = false;
};

nlohmann::json usage_json(const CompletionResult& r);  // usage, with prompt_tokens_details.cached_tokens and timings
nlohmann::json completion_response(const ResponseId& id, const CompletionResult& r);
// A stream chunk with `text` (chat: delta.content; the first chunk of a chat also carries the role) and, on the
// last one, the finish reason.
nlohmann::json stream_chunk(const ResponseId& id, const std::string& text, const std::string& finish_reason,
                            bool first);
// The chunk after the last one when include_usage: empty choices and the usage.
nlohmann::json usage_chunk(const ResponseId& id, const CompletionResult& r);

}  // namespace ll::serve
