// The BPE model of a tokenizer.json: vocabulary, merges (both the "a b" string form and the ["a", "b"] pair form),
// ignore_merges, byte_fallback, fuse_unk, unk_token, continuing_subword_prefix / end_of_word_suffix; for byte-level
// tokenizers it reads the raw bytes of a word and maps them to the byte-level alphabet itself.
//
// Encoding a word: its characters (or bytes) become symbols, then the merge of lowest rank anywhere in the word is
// applied, leftmost first among equal ranks, until no adjacent pair has a merge — what the `tokenizers` library's
// queue-based merge_all computes. Words of up to 48 symbols scan an array of pair ranks; longer ones use a heap.
// Results are cached per thread (a word cache of up to 32k words, cleared when full), so repeated words cost one
// hash lookup; the merges are a flat hash map over pairs of symbol ids.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/hf_json.h"

namespace ll::hf {

class BpeModel {
 public:
  // Reads j (the "model" object, type BPE). `byte_level`: the pre-tokenizer is ByteLevel, so words arrive as raw bytes.
  BpeModel(const JsonAt& j, bool byte_level);
  ~BpeModel();

  // Appends the ids of one word.
  void encode_word(std::string_view word, std::vector<int32_t>* out) const;

  int32_t token_to_id(std::string_view token) const;  // -1 when absent
  // The token of `id` ("" with false when the vocabulary has no such id).
  bool id_to_token(int32_t id, std::string* token) const;
  int32_t max_id() const { return int32_t(id_to_token_.size()) - 1; }
  int32_t unk_id() const { return unk_id_; }  // -1 without unk_token
  bool byte_level() const { return byte_level_; }
  // Tokens (strings of the vocabulary, byte-level form for byte-level models).
  const std::vector<std::string>& tokens() const { return id_to_token_; }

 private:
  struct MergeMap;
  void initial_symbols(std::string_view word, std::vector<int32_t>* symbols) const;
  void add_char(std::string_view s, bool first, bool last, std::vector<int32_t>* symbols, bool* has_unk) const;
  void merge(std::vector<int32_t>& symbols) const;
  void merge_long(std::vector<int32_t>& symbols) const;

  bool byte_level_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" for ids the vocabulary skips
  std::vector<bool> has_id_;
  std::unique_ptr<MergeMap> merges_;
  std::unordered_map<std::string, int32_t> raw_vocab_;  // byte-level + ignore_merges: the vocabulary by raw bytes
  int32_t byte_symbol_[256];                            // byte-level: id of each byte's alphabet character, or -1
  int32_t byte_fallback_id_[256];                       // byte_fallback: id of "<0xXX>", or -1
  std::unordered_map<char32_t, int32_t> char_id_;       // single-character tokens (no prefix/suffix in use)
  std::string prefix_, suffix_;                         // continuing_subword_prefix, end_of_word_suffix
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  uint64_t cache_owner_;  // identifies this model's entries in the per-thread word cache
};

// The byte-level alphabet: the character each byte stands for (GPT-2's table), and back.
char32_t byte_level_char(unsigned char b);
int byte_level_byte(char32_t c);  // -1 for a character outside the alphabet

}  // namespace ll::hf
