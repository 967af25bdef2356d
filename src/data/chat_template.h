// Chat templates, written per family in C++ (no template engine): what transformers' apply_chat_template renders
// from each family's official Jinja template (tests/fixtures/tokenizers/chat_templates.json, made by
// scripts/make_tokenizer_fixtures.py), as a list of segments — text, or one special token by name — so that message
// content is always encoded as text: a literal "<|im_end|>" inside a message stays text (transformers would turn it
// into the special token). Used by SFT data building, eval generate and the server.
//
//   llama2   LongLoRA's prompt (the project's Llama-2 format, as training and inference.py use it): BOS, then
//            "[INST]{user}[/INST]" per user turn — the first as "[INST] <<SYS>>\n{system}\n<</SYS>> \n\n {user} [/INST]"
//            when a system message leads — and "{assistant}" + EOS per assistant turn
//   llama3   Meta-Llama-3-Instruct: BOS, then "<|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>"
//            per message; generation prompt "<|start_header_id|>assistant<|end_header_id|>\n\n"
//   chatml   ChatML as Qwen2.5 writes it: "<|im_start|>{role}\n{content}<|im_end|>\n" per message, the default
//            system message first when the conversation has none (read from the model's tokenizer_config.json
//            template); generation prompt "<|im_start|>assistant\n"
//   mistral  Mistral-7B-Instruct-v0.1: BOS, "[INST] {user} [/INST]", "{assistant}" + EOS + " "; user and assistant
//            strictly alternating, no system message
//   none     the messages' content as it is, BOS first when the tokenizer itself adds it (tokenizer(text) in
//            transformers: Llama-2's sentencepiece, a TemplateProcessing post-processor; not GPT-NeoX's)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ll {

class Tokenizer;

enum class ChatTemplate { Llama2, Llama3, ChatML, Mistral, None };

const char* chat_template_name(ChatTemplate t);  // "llama2", "llama3", "chatml", "mistral", "none"
// Reads a --chat_template value (the names above); throws naming `flag` and the choices for anything else.
ChatTemplate parse_chat_template(const std::string& name, const std::string& flag = "--chat_template");

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// A rendered piece: text, or (special) the name of one token.
struct ChatSegment {
  std::string text;
  bool special = false;
};

// A template with what it needs from the model: the BOS/EOS token names (the Jinja templates' bos_token and
// eos_token) and, for ChatML, the default system message.
struct ChatStyle {
  ChatTemplate kind = ChatTemplate::Llama2;
  std::string bos_token, eos_token;  // "" when the tokenizer has none
  std::string default_system;        // chatml: written when the conversation starts without a system message
};

// The template of a model: `requested` unless it is "auto"; auto reads the folder's tokenizer_config.json
// chat_template (recognised by its markers: <|im_start|> → chatml, <|start_header_id|> → llama3, [INST] with <<SYS>>
// → llama2, [INST] alone → mistral), else config.json's model_type (qwen2 → chatml, mistral → mistral, llama →
// llama3 when the tokenizer has <|start_header_id|>, else llama2; gpt_neox → none), else llama2 (LongLoRA's).
// `model_folder` may be "" (then auto means llama2, or llama3 / chatml when the tokenizer has their tokens).
ChatStyle resolve_chat_style(const std::string& requested, const std::string& model_folder, const Tokenizer& tok);

// The conversation as segments; throws for a role the template does not take (mistral: anything but alternating
// user/assistant; all: roles other than system/user/assistant, a system message anywhere but first).
std::vector<ChatSegment> render_chat(const ChatStyle& style, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt);
// The rendered string (what apply_chat_template(..., tokenize=False) returns).
std::string chat_text(const std::vector<ChatSegment>& segments);
// The ids: special segments by token (an error naming the token when the tokenizer lacks it), text segments
// encoded each after the previous one, special-token strings in them staying text unless `parse_special`.
std::vector<int32_t> encode_chat(const Tokenizer& tok, const std::vector<ChatSegment>& segments,
                                 bool parse_special = false);
// The token that ends an assistant turn (EOS for llama2, mistral and none; <|eot_id|>; <|im_end|>): generation
// stops there, and SFT targets end with it. -1 when the tokenizer has none.
int32_t end_of_turn_id(const ChatStyle& style, const Tokenizer& tok);

// One SFT example in a chat template: the prompt (the user turn with the generation prompt) and the full example
// (prompt + answer + end of turn), as ids. For llama2 these are LongLoRA's exactly (documents.h alpaca_prompt,
// BOS + prompt + output + EOS, encoded as one text).
struct ChatExample {
  std::vector<int32_t> prompt, full;
};
ChatExample chat_sft_example(const ChatStyle& style, const Tokenizer& tok, const std::string& instruction,
                             const std::string& input, const std::string& output);

}  // namespace ll
