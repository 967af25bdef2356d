// The project's tokenizer: a sentencepiece `tokenizer.model` (Llama-2's, through Debian's libsentencepiece) or a
// Hugging Face `tokenizer.json` (GPT-NeoX/Pythia, Llama-3, Qwen2, Mistral: ids identical to the `tokenizers`
// library), picked by the file (data/tokenizer_path.h resolves a model folder). Encoding is const and safe to call
// from many threads.
//
// BOS/EOS are inserted by id, never as text. Literal special-token strings inside a text ("<|endoftext|>", "</s>")
// are text by default — what sentencepiece and tiktoken do, and what training data needs (a document quoting a
// special token must not end itself); TokenizerOptions::parse_special_tokens turns them into their ids instead
// (the `tokenizers` library's default). Invalid UTF-8 in a text: each invalid byte is read as U+FFFD (what
// sentencepiece does), for both kinds.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ll {

class TokenizerImpl;

struct TokenizerOptions {
  bool parse_special_tokens = false;  // literal special-token strings in texts become their ids
};

class Tokenizer {
 public:
  // Reads a sentencepiece model or a tokenizer.json, given as the file or as a model folder (tokenizer.json when it
  // has one, as transformers prefers it, else tokenizer.model: resolve_tokenizer_path). A file whose name ends in
  // .json is read as tokenizer.json, any other as sentencepiece. Throws ll::Error naming the path when it is
  // missing or malformed. path() is the file read.
  static Tokenizer load(const std::string& file_or_folder, const TokenizerOptions& options = {});

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // The ids of `text`, with BOS first / EOS last when asked (an error if the tokenizer has no such token).
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const;
  // Appends the ids of `text` (no BOS/EOS) to `out`; the job's hot path, avoiding a copy.
  void encode_append(std::string_view text, std::vector<int32_t>* out) const;
  // Appends the ids of one stretch of an input assembled from pieces (chat templates): `at_start` when it begins
  // the input, else it follows other text or a special token (tokenizer.json files whose Metaspace adds its space
  // only at the very start, Mistral's, encode those differently); `parse_special` in place of the option.
  void encode_segment(std::string_view text, bool at_start, bool parse_special, std::vector<int32_t>* out) const;
  // What `tokenizer(text)` gives in transformers: the file's post-processor around the ids (tokenizer.json; e.g.
  // BOS for Llama-3 and Mistral, nothing for GPT-NeoX and Qwen2), or BOS + ids (sentencepiece, as LlamaTokenizer).
  std::vector<int32_t> encode_with_special_tokens(std::string_view text) const;

  // Long documents are encoded in parts, in parallel, when cutting provably changes no id:
  //  * sentencepiece (Llama-2's qualifies): cut just before a space that follows another character and encode
  //    the later part without that space (the dummy prefix puts the "▁" back); needs a BPE model without
  //    normalization rules, with the dummy prefix, and no piece with "▁" right after another character;
  //  * tokenizer.json with GPT-2's, Llama-3's or Qwen2's splitting pattern: cut before " A" or after "x\n" (x a
  //    printable ASCII character, A an ASCII letter), where no match of those patterns can span the cut;
  //  * tokenizer.json with Metaspace (Mistral's): cut before a space that follows another character, under the
  //    same vocabulary condition as sentencepiece;
  // and never through an added token, nor when the normalizer is not a Unicode normal form. Other tokenizers (and
  // sentencepiece with parse_special_tokens) are always encoded whole.
  bool can_split() const;
  // Parts of `text`, each at least `min_bytes` long except the last; encode_part on each, in order (first = true
  // for the first part), gives the ids of encoding `text`. A single part when the tokenizer cannot be split.
  std::vector<std::string_view> split_for_encoding(std::string_view text, size_t min_bytes) const;
  void encode_part(std::string_view part, bool first, std::vector<int32_t>* out) const;

  // Ids → text, special tokens (BOS/EOS, control pieces, special added tokens) dropped unless `keep_special`. An
  // id outside [0, vocab_size) is an error; a tokenizer.json id with no token decodes to nothing (as tokenizers).
  std::string decode(const std::vector<int32_t>& ids, bool keep_special = false) const;

  int32_t bos_id() const;  // -1 when the tokenizer has none
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;  // -1 for Llama-2 (no pad piece)
  // Every id is below it: 1 + the largest id of the vocabulary and the added tokens (tokenizers' vocabulary size
  // with added tokens, when the ids have no gaps).
  int32_t vocab_size() const;
  std::string piece(int32_t id) const;  // throws for an id outside [0, vocab_size) or one with no token
  int32_t token_to_id(std::string_view token) const;  // -1 when the vocabulary has no such token
  bool is_special(int32_t id) const;  // a control piece / special added token (what decode drops)
  const char* kind() const;           // "sentencepiece" or "tokenizer.json"
  const TokenizerOptions& options() const { return options_; }

  const std::string& path() const { return path_; }
  // MD5 (lowercase hex) of the tokenizer file's bytes, exactly the bytes that were loaded.
  // Llama-2's tokenizer.model is eeec4125e9c7560836b4873b6f8e3025.
  const std::string& md5() const { return md5_; }

 private:
  Tokenizer();
  std::unique_ptr<TokenizerImpl> impl_;
  TokenizerOptions options_;
  std::string path_, md5_;
};

}  // namespace ll
