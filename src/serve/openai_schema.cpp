#include "serve/openai_schema.h"

#include <limits>

#include "serve/api_error.h"

namespace ll::serve {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

// The field, or nullptr when absent or null (OpenAI's clients send null for "not given").
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& body, const char* name, double fallback, double lo, double hi, bool lo_open) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) bad(name, std::string("`") + name + "` must be a number, got " + v->type_name());
  const double x = v->get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
    bad(name, std::string("`") + name + "` must be in " + (lo_open ? "(" : "[") + json(lo).dump() + ", " +
                  json(hi).dump() + "], got " + v->dump());
  return x;
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(name, std::string("`") + name + "` must be a boolean, got " + v->type_name());
  return v->get<bool>();
}

std::optional<int64_t> integer(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) bad(name, std::string("`") + name + "` must be an integer, got " + v->dump());
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    bad(name, std::string("`") + name + "` is too large: " + v->dump());
  return v->get<int64_t>();
}

std::string message_content(const json& content, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {  // content parts: only text ones
    std::string text;
    for (const json& part : content) {
      if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") || !part["text"].is_string())
        bad(param, "`" + param + "` parts must be {\"type\": \"text\", \"text\": string} (only text is supported)");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  bad(param, "`" + param + "` must be a string or a list of text parts, got " + content.type_name());
}

}  // namespace

json parse_json_object(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw ApiError(400, "the request body is not valid JSON");
  if (!j.is_object()) throw ApiError(400, std::string("the request body must be a JSON object, got ") + j.type_name());
  return j;
}

std::vector<int32_t> parse_token_ids(const json& list, const std::string& field) {
  if (!list.is_array()) bad(field, "`" + field + "` must be an array of token ids");
  std::vector<int32_t> ids;
  for (const json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      bad(field, "`" + field + "` as token ids must hold non-negative integers only, got " + id.dump());
    ids.push_back(id.get<int32_t>());
  }
  return ids;
}

CompletionRequest parse_completion_request(const json& body, bool chat, const SamplingDefaults& defaults) {
  CompletionRequest r;
  r.chat = chat;
  if (const json* m = field(body, "model"); m && !m->is_string()) bad("model", "`model` must be a string");
  if (chat) {
    const json* msgs = field(body, "messages");
    if (!msgs) bad("messages", "`messages` is required");
    if (!msgs->is_array() || msgs->empty()) bad("messages", "`messages` must be a non-empty array of messages");
    for (size_t i = 0; i < msgs->size(); ++i) {
      const json& m = (*msgs)[i];
      const std::string at = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) bad(at, "`" + at + "` must be an object with `role` and `content`");
      if (!m.contains("role") || !m["role"].is_string()) bad(at + ".role", "`" + at + ".role` must be a string");
      const std::string role = m["role"];
      if (role != "system" && role != "user" && role != "assistant")
        bad(at + ".role", "`" + at + ".role` must be system, user or assistant, got \"" + role + "\"");
      if (!m.contains("content") || m["content"].is_null()) bad(at + ".content", "`" + at + ".content` is required");
      r.messages.push_back({role, message_content(m["content"], i)});
    }
  } else {
    const json* p = field(body, "prompt");
    if (!p) bad("prompt", "`prompt` is required");
    if (p->is_string()) {
      r.prompt = p->get<std::string>();
    } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
      r.prompt = (*p)[0].get<std::string>();
    } else if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
      r.prompt_is_ids = true;
      r.prompt_ids = parse_token_ids(*p, "prompt");
    } else {
      bad("prompt", "`prompt` must be a string, a list of one string, or a list of token ids (one prompt per request)");
    }
    if (r.prompt_is_ids ? r.prompt_ids.empty() : r.prompt.empty()) bad("prompt", "`prompt` is empty");
  }
  r.max_tokens = integer(body, "max_tokens");
  if (!r.max_tokens) r.max_tokens = integer(body, "max_completion_tokens");
  if (r.max_tokens && *r.max_tokens < 1)
    bad("max_tokens", "`max_tokens` must be at least 1, got " + std::to_string(*r.max_tokens));
  r.temperature = number(body, "temperature", defaults.temperature, 0, 2, false);
  r.top_p = number(body, "top_p", defaults.top_p, 0, 1, true);
  if (const auto seed = integer(body, "seed")) r.seed = uint64_t(*seed);
  if (const auto n = integer(body, "n"); n && *n != 1) bad("n", "`n` must be 1 (one choice per request)");
  if (const json* lp = field(body, "logprobs"); lp && !(lp->is_boolean() && !lp->get<bool>()))
    bad("logprobs", "`logprobs` is not supported");
  if (const json* s = field(body, "stop")) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array() && s->size() <= 4) {
      for (const json& x : *s) {
        if (!x.is_string()) bad("stop", "`stop` must hold strings, got " + x.dump());
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "`stop` must be a string or a list of up to 4 strings");
    }
    for (const std::string& x : r.stop)
      if (x.empty()) bad("stop", "`stop` strings must not be empty");
  }
  r.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "`stream_options` must be an object");
    r.include_usage = boolean(*so, "include_usage", false);
  }
  r.cache_prompt = boolean(body, "cache_prompt", true);
  return r;
}

json usage_json(const CompletionResult& r) {
  const int64_t decoded = r.completion_tokens - 1;  // the first token comes from the prefill
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_tokens}}},
          // Not OpenAI's: what the page shows.
          {"timings",
           {{"prefill_tokens", r.prompt_tokens - r.cached_tokens},
            {"prefill_seconds", r.prefill_seconds},
            {"decode_seconds", r.decode_seconds},
            {"decode_tokens_per_second", decoded > 0 && r.decode_seconds > 0 ? decoded / r.decode_seconds : 0.0},
            {"context_size", r.context_size}}}};
}

json completion_response(const ResponseId& id, const CompletionResult& r) {
  json choice = {{"index", 0}, {"finish_reason", r.finish_reason}, {"logprobs", nullptr}};
  if (id.chat)
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  else
    choice["text"] = r.text;
  return {{"id", id.id},
          {"object", id.chat ? "chat.completion" : "text_completion"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array({choice})},
          {"usage", usage_json(r)}};
}

json stream_chunk(const ResponseId& id, const std::string& text, const std::string& finish_reason, bool first) {
  json choice = {{"index", 0},
                 {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)},
                 {"logprobs", nullptr}};
  if (id.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish_reason.empty())) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", id.id},
          {"object", id.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array({choice})}};
}

json usage_chunk(const ResponseId& id, const CompletionResult& r) {
  return {{"id", id.id},
          {"object", id.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", id.created},
          {"model", id.model},
          {"choices", json::array()},
          {"usage", usage_json(r)}};
}

}  // namespace ll::serve
