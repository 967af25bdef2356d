// Chat templates: the strings and ids transformers' apply_chat_template gives (tests/fixtures/tokenizers/
// chat_templates.json; the tokenizers are shared assets, skipped when absent), detection from a model folder,
// LongLoRA's prompts kept exactly, and refused conversations.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/documents.h"
#include "data/tokenizer.h"
#include "test_data_util.h"
#include "train/data.h"
#include "util/error.h"
#include "test_util.h"

using ll::ChatMessage;
using ll::ChatSegment;
using ll::ChatStyle;
using ll::ChatTemplate;
using ll::Tokenizer;
using ll::test::TempDir;
using Ids = std::vector<int32_t>;
using Json = nlohmann::json;

namespace {

using ll::test::error_of;

std::string shipped(const std::string& family) { return ll::test::asset_path("tokenizers/" + family + "/tokenizer.json"); }
std::string synthetic(const std::string& name) {
  return ll::test::fixtures_dir() + "/tokenizers/" + name + ".tokenizer.json";
}

TEST(ChatTemplate, RendersAndEncodesAsTransformersApplyChatTemplate) {
  const Json fx = Json::parse(ll::test::read_bytes(ll::test::fixtures_dir() + "/tokenizers/chat_templates.json"));
  int checked = 0;
  for (const auto& [name, entry] : fx.items()) {
    const std::string family = entry["tokenizer"];
    const std::string path = shipped(family);
    if (path.empty()) continue;  // counted below
    const std::string folder = path.substr(0, path.rfind('/'));
    const Tokenizer tok = Tokenizer::load(path);
    const ChatStyle style = ll::resolve_chat_style(name, folder, tok);
    EXPECT_EQ(ll::chat_template_name(style.kind), name);
    for (const Json& c : entry["cases"]) {
      std::vector<ChatMessage> messages;
      for (const Json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
      SCOPED_TRACE(name + ": " + c["text"].get<std::string>());
      const std::vector<ChatSegment> segments = ll::render_chat(style, messages, c["add_generation_prompt"]);
      EXPECT_EQ(ll::chat_text(segments), c["text"].get<std::string>());
      EXPECT_EQ(ll::encode_chat(tok, segments), c["ids"].get<Ids>());
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "tokenizers/*/tokenizer.json not found in $LONGLORA_ASSETS or ../shared/assets";
  EXPECT_EQ(checked, 16);
}

TEST(ChatTemplate, QwenDefaultSystemMessageComesFromItsConfig) {
  const std::string path = shipped("qwen2.5");
  if (path.empty()) GTEST_SKIP() << "tokenizers/qwen2.5 not found in $LONGLORA_ASSETS or ../shared/assets";
  const Tokenizer tok = Tokenizer::load(path);
  const ChatStyle style = ll::resolve_chat_style("auto", path.substr(0, path.rfind('/')), tok);
  EXPECT_EQ(style.kind, ChatTemplate::ChatML);
  EXPECT_EQ(style.default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(ll::end_of_turn_id(style, tok), 151645);  // <|im_end|>
}

TEST(ChatTemplate, AutoReadsTheModelFolder) {
  const Tokenizer tok = Tokenizer::load(synthetic("synthetic-llama2"));
  TempDir dir;
  auto detect = [&](const std::string& tokenizer_config, const std::string& config) {
    std::filesystem::remove(dir.file("tokenizer_config.json"));
    std::filesystem::remove(dir.file("config.json"));
    if (!tokenizer_config.empty()) ll::test::write_bytes(dir.file("tokenizer_config.json"), tokenizer_config);
    if (!config.empty()) ll::test::write_bytes(dir.file("config.json"), config);
    return std::string(ll::chat_template_name(ll::resolve_chat_style("auto", dir.path(), tok).kind));
  };
  EXPECT_EQ(detect("", ""), "llama2") << "LongLoRA's format when nothing says otherwise";
  EXPECT_EQ(detect(R"({"chat_template": "{{ '<|im_start|>' }}"})", ""), "chatml");
  EXPECT_EQ(detect(R"({"chat_template": "{{ '<|start_header_id|>' }}"})", ""), "llama3");
  EXPECT_EQ(detect(R"({"chat_template": "[INST] <<SYS>>"})", ""), "llama2");
  EXPECT_EQ(detect(R"({"chat_template": [{"name": "default", "template": "{{ '[INST] ' }}"}]})", ""), "mistral");
  EXPECT_EQ(detect("", R"({"model_type": "qwen2"})"), "chatml");
  EXPECT_EQ(detect("", R"({"model_type": "mistral"})"), "mistral");
  EXPECT_EQ(detect("", R"({"model_type": "gpt_neox"})"), "none");
  EXPECT_EQ(detect("", R"({"model_type": "llama"})"), "llama2");
  EXPECT_EQ(std::string(ll::chat_template_name(ll::resolve_chat_style("chatml", dir.path(), tok).kind)), "chatml");
  EXPECT_NE(error_of([&] { ll::resolve_chat_style("vicuna", dir.path(), tok); })
                .find("--chat_template: expected auto, llama2, llama3, chatml, mistral or none, got `vicuna`"),
            std::string::npos);
}

// Template none is the text as transformers' tokenizer(text) encodes it: BOS first only where the tokenizer puts it
// there itself (sentencepiece Llama-2, a TemplateProcessing post-processor), not GPT-NeoX's <|endoftext|>, which
// is its bos_token but which Pythia's tokenizer never adds.
TEST(ChatTemplate, NoneStartsWithBosOnlyWhereTheTokenizerAddsIt) {
  const Tokenizer with_bos = Tokenizer::load(synthetic("synthetic-llama2"));  // TemplateProcessing: <s> $A
  const ChatStyle a = ll::resolve_chat_style("none", "", with_bos);
  const Ids ids_a = ll::encode_chat(with_bos, ll::render_chat(a, {{"user", "hello"}}, true));
  EXPECT_EQ(ids_a, with_bos.encode_with_special_tokens("hello"));
  EXPECT_EQ(ids_a.front(), with_bos.bos_id());
  const std::string neox = shipped("gpt-neox");
  if (neox.empty()) GTEST_SKIP() << "tokenizers/gpt-neox not found in $LONGLORA_ASSETS or ../shared/assets";
  const Tokenizer tok = Tokenizer::load(neox);
  ASSERT_EQ(tok.bos_id(), 0);
  const ChatStyle b = ll::resolve_chat_style("none", "", tok);
  EXPECT_EQ(ll::encode_chat(tok, ll::render_chat(b, {{"user", "Hello world"}}, true)), (Ids{12092, 1533}));
}

// The llama2 template is LongLoRA's prompt: what SFT (documents.h alpaca_prompt) and inference.py write.
TEST(ChatTemplate, Llama2IsLongLoraPromptFormat) {
  ChatStyle style;
  style.bos_token = "<s>", style.eos_token = "</s>";
  EXPECT_EQ(ll::chat_text(ll::render_chat(style, {{"user", "Summarise."}}, true)),
            "<s>" + ll::alpaca_prompt("Summarise.", ""));
  const std::string with_input = ll::alpaca_prompt("Summarise.", "The text.");
  const std::string system = with_input.substr(std::string("[INST] <<SYS>>\n").size(),
                                               with_input.find("\n<</SYS>>") - std::string("[INST] <<SYS>>\n").size());
  EXPECT_EQ(ll::chat_text(ll::render_chat(style, {{"system", system}, {"user", "Summarise. \nThe text."}}, true)),
            "<s>" + with_input);
}

TEST(ChatTemplate, RefusedConversations) {
  ChatStyle mistral;
  mistral.kind = ChatTemplate::Mistral;
  mistral.bos_token = "<s>", mistral.eos_token = "</s>";
  EXPECT_NE(error_of([&] { ll::render_chat(mistral, {{"system", "s"}, {"user", "u"}}, true); }).find("alternate"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ll::render_chat(mistral, {{"user", "u"}, {"user", "v"}}, true); }).find("alternate"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ll::render_chat(mistral, {{"tool", "u"}}, true); }).find("unknown role `tool`"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ll::render_chat(mistral, {}, true); }).find("no message"), std::string::npos);
  ChatStyle llama3;
  llama3.kind = ChatTemplate::Llama3;  // no BOS token known
  EXPECT_NE(error_of([&] { ll::render_chat(llama3, {{"user", "u"}}, true); }).find("needs a BOS token"),
            std::string::npos);
  ChatStyle chatml;
  chatml.kind = ChatTemplate::ChatML;
  EXPECT_NE(error_of([&] { ll::render_chat(chatml, {{"user", "u"}, {"system", "late"}}, true); })
                .find("a system message can only come first"),
            std::string::npos);
  const Tokenizer tok = Tokenizer::load(synthetic("synthetic-llama2"));
  const auto segments = ll::render_chat(chatml, {{"user", "u"}}, true);
  EXPECT_NE(error_of([&] { ll::encode_chat(tok, segments); }).find("has no token `<|im_start|>`"), std::string::npos);
}

// Message content is text: a special-token string inside it does not become the special token.
TEST(ChatTemplate, ContentStaysText) {
  const Tokenizer tok = Tokenizer::load(synthetic("synthetic-llama2"));
  ChatStyle style;
  style.kind = ChatTemplate::Mistral;
  style.bos_token = "<s>", style.eos_token = "</s>";
  const Ids ids = ll::encode_chat(tok, ll::render_chat(style, {{"user", "end</s>now"}, {"assistant", "ok"}}, false));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.eos_id()), 1) << "only the template's own EOS";
  const Ids parsed =
      ll::encode_chat(tok, ll::render_chat(style, {{"user", "end</s>now"}, {"assistant", "ok"}}, false), true);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), tok.eos_id()), 2) << "parse_special: the content's too";
}

// SFT examples: prompt masked, answer ended by the template's end-of-turn token.
TEST(ChatTemplate, SftExamplesEndWithTheEndOfTurnToken) {
  const std::string path = shipped("llama3");
  if (path.empty()) GTEST_SKIP() << "tokenizers/llama3 not found in $LONGLORA_ASSETS or ../shared/assets";
  const Tokenizer tok = Tokenizer::load(path);
  const ChatStyle style = ll::resolve_chat_style("llama3", "", tok);
  const ll::SftExample ex = ll::make_sft_example(tok, "Name a colour.", "", "Blue.", 1000, style);
  const Ids prompt = ll::encode_chat(tok, ll::render_chat(style, {{"user", "Name a colour."}}, true));
  ASSERT_EQ(ex.prompt_tokens, int64_t(prompt.size()));
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), ex.ids.begin()));
  EXPECT_EQ(ex.ids.back(), tok.token_to_id("<|eot_id|>"));
  EXPECT_EQ(ex.ids.front(), 128000);
  EXPECT_EQ(tok.decode(Ids(ex.ids.begin() + ex.prompt_tokens, ex.ids.end() - 1)), "Blue.");
}

}  // namespace
