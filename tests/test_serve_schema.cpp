// The server's pieces without HTTP: OpenAI request parsing (defaults, every refusal naming its field), response
// shapes, and stop strings over streamed pieces.
#include <gtest/gtest.h>

#include "serve/api_error.h"
#include "serve/openai_schema.h"
#include "serve/stop_strings.h"

namespace ll::serve {
namespace {

using nlohmann::json;

std::string param_of(const json& body, bool chat) {
  try {
    parse_completion_request(body, chat);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.body()["error"]["param"].is_null() ? "" : e.body()["error"]["param"].get<std::string>();
  }
  return "(accepted)";
}

TEST(ServeSchema, DefaultsAndNullsAreOpenAis) {
  const CompletionRequest r = parse_completion_request(
      json{{"prompt", "hi"}, {"temperature", nullptr}, {"frequency_penalty", 0}, {"user", "u"}}, false);
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.temperature, 1.0);
  EXPECT_EQ(r.top_p, 1.0);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_FALSE(r.stream);
  EXPECT_TRUE(r.cache_prompt);
  const CompletionRequest c = parse_completion_request(
      json{{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "a"}}, {{"type", "text"}, {"text", "b"}}}}}}},
           {"max_completion_tokens", 7},
           {"stop", "x"},
           {"stream", true},
           {"stream_options", {{"include_usage", true}}}},
      true);
  ASSERT_EQ(c.messages.size(), 1u);
  EXPECT_EQ(c.messages[0].content, "ab");
  EXPECT_EQ(*c.max_tokens, 7);
  EXPECT_EQ(c.stop, std::vector<std::string>{"x"});
  EXPECT_TRUE(c.stream && c.include_usage);
  const CompletionRequest ids = parse_completion_request(json{{"prompt", {1, 2, 3}}}, false);
  EXPECT_TRUE(ids.prompt_is_ids);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
}

TEST(ServeSchema, RefusalsNameTheField) {
  EXPECT_EQ(param_of(json{{"prompt", "a"}, {"max_tokens", -5}}, false), "max_tokens");
  EXPECT_EQ(param_of(json{{"prompt", "a"}, {"max_tokens", 18446744073709551615ull}}, false), "max_tokens");
  EXPECT_EQ(param_of(json{{"prompt", "a"}, {"top_p", 1.5}}, false), "top_p");
  EXPECT_EQ(param_of(json{{"prompt", "a"}, {"logprobs", true}}, false), "logprobs");
  EXPECT_EQ(param_of(json{{"prompt", "a"}, {"stop", {""}}}, false), "stop");
  EXPECT_EQ(param_of(json{{"prompt", "a"}, {"stream_options", 1}}, false), "stream_options");
  EXPECT_EQ(param_of(json{{"prompt", ""}}, false), "prompt");
  EXPECT_EQ(param_of(json{{"prompt", {"a", "b"}}}, false), "prompt");
  EXPECT_EQ(param_of(json{{"model", 3}, {"prompt", "a"}}, false), "model");
  EXPECT_EQ(param_of(json{{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}, true),
            "messages[0].content");
  EXPECT_EQ(param_of(json{{"messages", {1}}}, true), "messages[0]");
  EXPECT_THROW(parse_json_object("{\"a\": }"), ApiError);
  EXPECT_THROW(parse_json_object("\"text\""), ApiError);
}

TEST(ServeSchema, ResponseShapes) {
  CompletionResult r;
  r.text = "hello", r.finish_reason = "length", r.prompt_tokens = 5, r.completion_tokens = 3, r.cached_tokens = 2;
  const json chat = completion_response({"chatcmpl-1", "m", 10, true}, r);
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "hello");
  EXPECT_EQ(chat["usage"]["total_tokens"], 8);
  EXPECT_EQ(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
  const json text = completion_response({"cmpl-1", "m", 10, false}, r);
  EXPECT_EQ(text["choices"][0]["text"], "hello");
  EXPECT_EQ(text["object"], "text_completion");
  const json first = stream_chunk({"chatcmpl-1", "m", 10, true}, "", "", true);
  EXPECT_EQ(first["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  const json last = stream_chunk({"chatcmpl-1", "m", 10, true}, "", "stop", false);
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(usage_chunk({"chatcmpl-1", "m", 10, true}, r)["choices"].empty());
}

TEST(StopScanner, HoldsBackAPartialStopAndCutsBeforeIt) {
  StopScanner s({"END", "xyz"});
  EXPECT_EQ(s.push("abc E"), "abc ");
  EXPECT_EQ(s.push("N"), "");
  EXPECT_EQ(s.push("Xt"), "ENXt") << "not a stop after all";
  EXPECT_EQ(s.push("more EN"), "more ");
  EXPECT_EQ(s.push("D and after"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("ignored"), "");
  EXPECT_EQ(s.flush(), "");

  StopScanner t({"xyz"});
  EXPECT_EQ(t.push("ab xy"), "ab ");
  EXPECT_EQ(t.flush(), "xy") << "a partial stop at the end is text";
  EXPECT_FALSE(t.stopped());

  StopScanner one({"\n"});
  EXPECT_EQ(one.push("line one\nline two"), "line one");
  EXPECT_TRUE(one.stopped());
  StopScanner none({});
  EXPECT_EQ(none.push("anything"), "anything");
}

}  // namespace
}  // namespace ll::serve
