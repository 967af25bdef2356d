#include "eval/generate.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace ll {

InferenceSession::InferenceSession(Model& model, int64_t capacity) : model_(model), capacity_(capacity) {
  model_.enable_kv_cache(capacity);
}

std::vector<double> InferenceSession::prefill(const std::vector<int32_t>& prompt, bool reuse_prefix) {
  LL_CHECK(!prompt.empty(), "generation: empty prompt");
  LL_CHECK(int64_t(prompt.size()) <= capacity_, "generation: the prompt has ", prompt.size(),
           " tokens but the KV cache holds ", capacity_);
  size_t keep = 0;
  if (reuse_prefix)
    while (keep < tokens_.size() && keep < prompt.size() && tokens_[keep] == prompt[keep]) ++keep;
  keep = std::min(keep, prompt.size() - 1);  // the last prompt token must run to give its logits
  model_.truncate_kv_cache(int64_t(keep));
  tokens_.assign(prompt.begin(), prompt.end());
  reused_ = int64_t(keep);
  return model_.append_tokens(prompt.data() + keep, int64_t(prompt.size() - keep));
}

std::vector<double> InferenceSession::append(int32_t token) {
  std::vector<double> logits = model_.append_tokens(&token, 1);
  tokens_.push_back(token);
  return logits;
}

GenerateResult generate(InferenceSession& session, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const std::function<void(int32_t)>& on_token) {
  LL_CHECK(o.max_new_tokens >= 1, "generation: max_new_tokens must be >= 1, got ", o.max_new_tokens);
  LL_CHECK(int64_t(prompt.size()) + o.max_new_tokens - 1 <= session.capacity(), "generation: ", prompt.size(),
           " prompt tokens + ", o.max_new_tokens, " new tokens do not fit the KV cache of ", session.capacity());
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(o.sampling);
  auto t0 = clock::now();
  std::vector<double> logits = session.prefill(prompt, o.reuse_prefix);
  r.reused_prompt_tokens = session.last_reused();
  auto t1 = clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    const int32_t next = sampler.next(logits);
    r.tokens.push_back(next);
    if (on_token) on_token(next);
    if ((o.eos_id >= 0 && next == o.eos_id) || std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) {
      r.stopped_at_eos = true;
      break;
    }
    if (o.should_stop && o.should_stop()) break;
    if (i + 1 < o.max_new_tokens) logits = session.append(next);
  }
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return r;
}

std::string TextStream::push(int32_t id) {
  ids_.push_back(id);
  return take(true);
}

std::string TextStream::flush() { return take(false); }

std::string TextStream::take(bool hold_incomplete) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  const std::string text = tok_.decode(ids_);
  size_t end = text.size();
  if (hold_incomplete)
    while (end >= emitted_ + kReplacement.size() && text.compare(end - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
      end -= kReplacement.size();
  // Decoding more ids only ever extends the text, except that held-back U+FFFD become the character.
  std::string out = end > emitted_ ? text.substr(emitted_, end - emitted_) : std::string();
  emitted_ = std::max(emitted_, end);
  return out;
}

}  // namespace ll
