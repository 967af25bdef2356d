// A thin wrapper over libsentencepiece (Debian 0.1.97) for Llama-style tokenizers.
// BOS/EOS are inserted by id, never as the text "<s>"/"</s>": sentencepiece would spell such text out as
// characters, unlike HF's tokenizer (formats.md §A4). Encoding is const and safe to call from many threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace ll {

class Tokenizer {
 public:
  // Reads a sentencepiece `tokenizer.model`, given as the file or as the model folder holding it
  // (resolve_tokenizer_path); throws ll::Error naming the path when it is missing or not a sentencepiece model.
  // path() is the file read.
  static Tokenizer load(const std::string& file_or_folder);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Plain sentencepiece encoding of `text`, with BOS first / EOS last when asked (an error if the model has
  // no such piece). Special-token strings inside `text` are ordinary text.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool add_eos) const;
  // Appends the encoding of `text` (no BOS/EOS) to `out`; the job's hot path, avoiding a copy.
  void encode_append(std::string_view text, std::vector<int32_t>* out) const;
  // Long documents are encoded in parts: sentencepiece needs ~100 bytes of memory per input byte and slows
  // down on megabyte strings. Cutting just before a space that follows another character, and encoding the
  // later part without that space (the dummy prefix puts the "▁" back), gives exactly the ids of the whole
  // text when the model is BPE, rewrites no characters, keeps whitespace as is, adds the dummy prefix, and no
  // piece has "▁" right after another character (so no merge can cross the cut). Checked on load; Llama-2's
  // tokenizer qualifies. Other models are always encoded whole.
  bool can_split() const { return can_split_; }
  // Parts of `text`, each at least `min_bytes` long except the last, cut as above: encoding every part with
  // encode_append gives the ids of encoding `text`. A single part when the model cannot be split.
  std::vector<std::string_view> split_for_encoding(std::string_view text, size_t min_bytes) const;
  // Ids → text. Control ids (BOS/EOS) decode to nothing; an id outside [0, vocab_size) is an error.
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t bos_id() const;  // -1 when the model has none (as sentencepiece reports)
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;  // -1 for Llama-2 (no pad piece)
  int32_t vocab_size() const;
  std::string piece(int32_t id) const;  // throws for an id outside [0, vocab_size)

  const std::string& path() const { return path_; }
  // MD5 (lowercase hex) of the model file's bytes, exactly the bytes that were loaded.
  // Llama-2's tokenizer.model is eeec4125e9c7560836b4873b6f8e3025.
  const std::string& md5() const { return md5_; }

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_, md5_;
  bool can_split_ = false;
};

}  // namespace ll
