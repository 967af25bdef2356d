#include "data/chat_template.h"

#include <nlohmann/json.hpp>

#include "data/documents.h"
#include "data/tokenizer.h"
#include "data/unicode.h"
#include "data/utf8.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

namespace {

using Json = nlohmann::json;

Json read_json_or_null(const std::string& path) {
  if (path.empty() || !path_exists(path)) return Json();
  try {
    return Json::parse(read_text_file(path));
  } catch (const Json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

// tokenizer_config.json's chat_template: a string, or a list of {name, template} (the "default" one).
std::string config_template(const Json& config) {
  if (!config.is_object() || !config.contains("chat_template")) return "";
  const Json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())
    for (const Json& item : t)
      if (item.is_object() && item.value("name", "") == "default" && item.contains("template") && item["template"].is_string())
        return item["template"].get<std::string>();
  return "";
}

// The default system message a ChatML template writes: the literal after '<|im_start|>system\n that runs to
// <|im_end|> (Qwen2.5: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."). Jinja escapes undone.
std::string chatml_default_system(const std::string& tmpl) {
  const std::string marker = "<|im_start|>system\\n";
  for (size_t pos = tmpl.find(marker); pos != std::string::npos; pos = tmpl.find(marker, pos + 1)) {
    const size_t begin = pos + marker.size();
    const size_t end = tmpl.find("<|im_end|>", begin);
    if (end == std::string::npos || begin >= tmpl.size() || tmpl[begin] == '\'' || tmpl[begin] == '"') continue;
    const std::string raw = tmpl.substr(begin, end - begin);
    if (raw.find_first_of("'\"{}+") != std::string::npos) continue;  // not one plain literal
    std::string out;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size()) {
        const char e = raw[++i];
        out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
      } else {
        out += raw[i];
      }
    }
    return out;
  }
  return "";
}

// Jinja's trim: Python's str.strip(), whose whitespace is Unicode White_Space plus the separators U+001C..U+001F.
std::string trim(const std::string& s) {
  auto space = [](char32_t c) { return is_unicode_whitespace(c) || (c >= 0x1C && c <= 0x1F); };
  size_t b = 0, e = s.size();
  char32_t cp;
  while (b < e) {
    const size_t n = utf8_decode(s, b, &cp);
    if (n == 0 || !space(cp)) break;
    b += n;
  }
  while (e > b) {
    size_t k = e - 1;
    while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
    if (utf8_decode(s, k, &cp) != e - k || !space(cp)) break;
    e = k;
  }
  return s.substr(b, e - b);
}

class Segments {
 public:
  void text(const std::string& t) {
    if (t.empty()) return;
    if (!out_.empty() && !out_.back().special) out_.back().text += t;
    else out_.push_back({t, false});
  }
  void special(const std::string& name, const char* what, ChatTemplate kind) {
    LL_CHECK(!name.empty(), "chat template ", chat_template_name(kind), " needs a ", what,
             " token, and the tokenizer has none");
    out_.push_back({name, true});
  }
  std::vector<ChatSegment> take() { return std::move(out_); }

 private:
  std::vector<ChatSegment> out_;
};

void check_roles(const std::vector<ChatMessage>& messages, ChatTemplate kind) {
  LL_CHECK(!messages.empty(), "chat template ", chat_template_name(kind), ": the conversation has no message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    LL_CHECK(r == "system" || r == "user" || r == "assistant", "chat message ", i, ": unknown role `", r,
             "` (expected system, user or assistant)");
    LL_CHECK(r != "system" || i == 0, "chat message ", i, ": a system message can only come first");
  }
}

}  // namespace

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::Llama2: return "llama2";
    case ChatTemplate::Llama3: return "llama3";
    case ChatTemplate::ChatML: return "chatml";
    case ChatTemplate::Mistral: return "mistral";
    case ChatTemplate::None: return "none";
  }
  return "?";
}

ChatTemplate parse_chat_template(const std::string& name, const std::string& flag) {
  for (ChatTemplate t : {ChatTemplate::Llama2, ChatTemplate::Llama3, ChatTemplate::ChatML, ChatTemplate::Mistral,
                         ChatTemplate::None})
    if (name == chat_template_name(t)) return t;
  fail(flag, ": expected auto, llama2, llama3, chatml, mistral or none, got `", name, "`");
}

ChatStyle resolve_chat_style(const std::string& requested, const std::string& model_folder, const Tokenizer& tok) {
  ChatStyle style;
  const Json config = read_json_or_null(model_folder.empty() ? "" : model_folder + "/tokenizer_config.json");
  const std::string tmpl = config_template(config);
  if (requested != "auto") {
    style.kind = parse_chat_template(requested);
  } else if (tmpl.find("<|im_start|>") != std::string::npos) {
    style.kind = ChatTemplate::ChatML;
  } else if (tmpl.find("<|start_header_id|>") != std::string::npos) {
    style.kind = ChatTemplate::Llama3;
  } else if (tmpl.find("[INST]") != std::string::npos) {
    style.kind = tmpl.find("<<SYS>>") != std::string::npos ? ChatTemplate::Llama2 : ChatTemplate::Mistral;
  } else {
    const Json model = read_json_or_null(model_folder.empty() ? "" : model_folder + "/config.json");
    const std::string type = model.is_object() ? model.value("model_type", "") : "";
    const bool llama3_tokens = tok.token_to_id("<|start_header_id|>") >= 0;
    const bool chatml_tokens = tok.token_to_id("<|im_start|>") >= 0;
    if (type == "qwen2" || (type.empty() && chatml_tokens)) style.kind = ChatTemplate::ChatML;
    else if (type == "mistral") style.kind = ChatTemplate::Mistral;
    else if (type == "gpt_neox") style.kind = ChatTemplate::None;
    else if (llama3_tokens && (type == "llama" || type.empty())) style.kind = ChatTemplate::Llama3;
    else style.kind = ChatTemplate::Llama2;
  }
  if (tok.bos_id() >= 0) style.bos_token = tok.piece(tok.bos_id());
  // none is tokenizer(text): BOS only where the tokenizer itself puts it first (GPT-NeoX has a bos_token it never
  // adds).
  if (style.kind == ChatTemplate::None && !style.bos_token.empty()) {
    const std::vector<int32_t> empty = tok.encode_with_special_tokens("");
    if (empty.empty() || empty.front() != tok.bos_id()) style.bos_token.clear();
  }
  if (tok.eos_id() >= 0) style.eos_token = tok.piece(tok.eos_id());
  if (style.kind == ChatTemplate::ChatML) style.default_system = chatml_default_system(tmpl);
  return style;
}

std::vector<ChatSegment> render_chat(const ChatStyle& style, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) {
  const ChatTemplate kind = style.kind;
  check_roles(messages, kind);
  Segments s;
  switch (kind) {
    case ChatTemplate::Llama2: {
      s.special(style.bos_token, "BOS", kind);
      size_t first = 0;
      std::string system;
      const bool has_system = messages[0].role == "system";
      if (has_system) system = messages[0].content, first = 1;
      for (size_t i = first; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "user") {
          if (i == first && has_system) s.text("[INST] <<SYS>>\n" + system + "\n<</SYS>> \n\n " + m.content + " [/INST]");
          else s.text("[INST]" + m.content + "[/INST]");
        } else {
          s.text(m.content);
          s.special(style.eos_token, "EOS", kind);
        }
      }
      break;
    }
    case ChatTemplate::Llama3:
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) s.special(style.bos_token, "BOS", kind);
        s.special("<|start_header_id|>", "header", kind);
        s.text(messages[i].role);
        s.special("<|end_header_id|>", "header", kind);
        s.text("\n\n" + trim(messages[i].content));
        s.special("<|eot_id|>", "end-of-turn", kind);
      }
      if (add_generation_prompt) {
        s.special("<|start_header_id|>", "header", kind);
        s.text("assistant");
        s.special("<|end_header_id|>", "header", kind);
        s.text("\n\n");
      }
      break;
    case ChatTemplate::ChatML: {
      auto turn = [&](const std::string& role, const std::string& content) {
        s.special("<|im_start|>", "turn", kind);
        s.text(role + "\n" + content);
        s.special("<|im_end|>", "turn", kind);
        s.text("\n");
      };
      if (messages[0].role != "system" && !style.default_system.empty()) turn("system", style.default_system);
      for (const ChatMessage& m : messages) turn(m.role, m.content);
      if (add_generation_prompt) {
        s.special("<|im_start|>", "turn", kind);
        s.text("assistant\n");
      }
      break;
    }
    case ChatTemplate::Mistral:
      s.special(style.bos_token, "BOS", kind);
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        LL_CHECK((m.role == "user") == (i % 2 == 0) && m.role != "system", "chat template mistral: message ", i,
                 " has role `", m.role, "`; the conversation must alternate user/assistant/user/..., starting with "
                 "user (no system message)");
        if (m.role == "user") {
          s.text("[INST] " + m.content + " [/INST]");
        } else {
          s.text(m.content);
          s.special(style.eos_token, "EOS", kind);
          s.text(" ");
        }
      }
      break;
    case ChatTemplate::None:
      if (!style.bos_token.empty()) s.special(style.bos_token, "BOS", kind);
      for (const ChatMessage& m : messages) s.text(m.content);
      break;
  }
  return s.take();
}

std::string chat_text(const std::vector<ChatSegment>& segments) {
  std::string out;
  for (const ChatSegment& s : segments) out += s.text;
  return out;
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::vector<ChatSegment>& segments, bool parse_special) {
  std::vector<int32_t> ids;
  bool at_start = true;
  for (const ChatSegment& s : segments) {
    if (s.special) {
      const int32_t id = tok.token_to_id(s.text);
      LL_CHECK(id >= 0, "chat template: the tokenizer `", tok.path(), "` has no token `", s.text, "`");
      ids.push_back(id);
    } else {
      tok.encode_segment(s.text, at_start, parse_special, &ids);
    }
    at_start = false;
  }
  return ids;
}

int32_t end_of_turn_id(const ChatStyle& style, const Tokenizer& tok) {
  switch (style.kind) {
    case ChatTemplate::Llama3: return tok.token_to_id("<|eot_id|>");
    case ChatTemplate::ChatML: return tok.token_to_id("<|im_end|>");
    default: return tok.eos_id();
  }
}

ChatExample chat_sft_example(const ChatStyle& style, const Tokenizer& tok, const std::string& instruction,
                             const std::string& input, const std::string& output) {
  ChatExample ex;
  if (style.kind == ChatTemplate::Llama2) {  // LongLoRA's supervised-fine-tune.py, exactly
    const std::string prompt = alpaca_prompt(instruction, input);
    ex.full = tok.encode(prompt + output, /*add_bos=*/true, /*add_eos=*/true);
    ex.prompt = tok.encode(prompt, true, false);
    return ex;
  }
  const std::string user = input.empty() ? instruction : instruction + "\n\n" + input;
  const bool parse = tok.options().parse_special_tokens;
  std::vector<ChatSegment> segments = render_chat(style, {{"user", user}}, /*add_generation_prompt=*/true);
  ex.prompt = encode_chat(tok, segments, parse);
  if (!output.empty()) {
    if (!segments.empty() && !segments.back().special) segments.back().text += output;
    else segments.push_back({output, false});
  }
  const int32_t end = end_of_turn_id(style, tok);
  LL_CHECK(end >= 0, "chat template ", chat_template_name(style.kind), ": tokenizer `", tok.path(),
           "` has no end-of-turn token to end the answer with");
  ex.full = encode_chat(tok, segments, parse);
  ex.full.push_back(end);
  return ex;
}

}  // namespace ll
