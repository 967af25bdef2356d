#include "data/tokenizer.h"

#include "data/hf_tokenizer.h"
#include "data/spm_tokenizer.h"
#include "data/tokenizer_impl.h"
#include "data/tokenizer_path.h"
#include "util/error.h"
#include "util/files.h"
#include "util/md5.h"

namespace ll {

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& file_or_folder, const TokenizerOptions& options) {
  const std::string path = resolve_tokenizer_path(file_or_folder);
  // Load from the bytes we hash, so the checksum describes exactly the model in use.
  const std::string bytes = read_text_file(path);
  Tokenizer t;
  t.impl_ = is_tokenizer_json(path) ? load_hf_tokenizer(path, bytes) : load_spm_tokenizer(path, bytes);
  t.options_ = options;
  t.path_ = path;
  t.md5_ = md5_hex(bytes.data(), bytes.size());
  return t;
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>* out) const {
  impl_->encode(text, true, options_.parse_special_tokens, out);
}

void Tokenizer::encode_segment(std::string_view text, bool at_start, bool parse_special,
                               std::vector<int32_t>* out) const {
  impl_->encode(text, at_start, parse_special, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> out;
  if (add_bos) {
    LL_CHECK(bos_id() >= 0, "tokenizer `", path_, "` has no BOS token, so BOS cannot be added");
    out.push_back(bos_id());
  }
  encode_append(text, &out);
  if (add_eos) {
    LL_CHECK(eos_id() >= 0, "tokenizer `", path_, "` has no EOS token, so EOS cannot be added");
    out.push_back(eos_id());
  }
  return out;
}

std::vector<int32_t> Tokenizer::encode_with_special_tokens(std::string_view text) const {
  std::vector<int32_t> out = impl_->post_prefix();
  encode_append(text, &out);
  const std::vector<int32_t> suffix = impl_->post_suffix();
  out.insert(out.end(), suffix.begin(), suffix.end());
  return out;
}

bool Tokenizer::can_split() const { return impl_->can_split(options_.parse_special_tokens); }

std::vector<std::string_view> Tokenizer::split_for_encoding(std::string_view text, size_t min_bytes) const {
  return impl_->split_for_encoding(text, min_bytes, options_.parse_special_tokens);
}

void Tokenizer::encode_part(std::string_view part, bool first, std::vector<int32_t>* out) const {
  impl_->encode_part(part, first, options_.parse_special_tokens, out);
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool keep_special) const {
  const int32_t n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i)
    LL_CHECK(ids[i] >= 0 && ids[i] < n, "tokenizer `", path_, "`: cannot decode id ", ids[i], " at position ", i,
             " (vocabulary has ", n, " ids)");
  return impl_->decode(ids, !keep_special);
}

int32_t Tokenizer::bos_id() const { return impl_->special_ids().bos; }
int32_t Tokenizer::eos_id() const { return impl_->special_ids().eos; }
int32_t Tokenizer::unk_id() const { return impl_->special_ids().unk; }
int32_t Tokenizer::pad_id() const { return impl_->special_ids().pad; }
int32_t Tokenizer::vocab_size() const { return impl_->vocab_size(); }
int32_t Tokenizer::token_to_id(std::string_view token) const { return impl_->token_to_id(token); }
bool Tokenizer::is_special(int32_t id) const { return impl_->is_special(id); }
const char* Tokenizer::kind() const { return impl_->kind(); }

std::string Tokenizer::piece(int32_t id) const {
  std::string out;
  LL_CHECK(id >= 0 && id < vocab_size() && impl_->piece(id, &out), "tokenizer `", path_, "`: id ", id,
           " is not a token (ids are in [0, ", vocab_size(), "))");
  return out;
}

}  // namespace ll
