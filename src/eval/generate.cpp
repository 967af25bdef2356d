#include "eval/generate.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace ll {

InferenceSession::InferenceSession(Model& model, int64_t capacity) : model_(model), capacity_(capacity) {
  model_.enable_kv_cache(capacity);
}

InferenceSession::InferenceSession(Model& model, StreamingWindow window)
    : model_(model), capacity_(window.start_size + window.recent_size), window_(window) {
  LL_CHECK(window.start_size >= 0, "--start_size must be >= 0, got ", window.start_size);
  LL_CHECK(window.recent_size >= 1, "--recent_size must be >= 1, got ", window.recent_size);
  model_.enable_kv_cache(capacity_);
}

std::unique_ptr<InferenceSession> open_session(Model& model, int64_t capacity, StreamingWindow window) {
  return window.enabled() ? std::make_unique<InferenceSession>(model, window)
                          : std::make_unique<InferenceSession>(model, capacity);
}

void InferenceSession::make_room(int64_t coming) {
  if (!streaming()) return;
  const int64_t cached = model_.kv_cache_length(), over = cached + std::min(coming, window_.recent_size) - capacity_;
  if (over <= 0) return;
  model_.evict_kv_cache(window_.start_size, over);  // over <= cached − start_size as coming <= recent_size
  evicted_ += over;
}

std::vector<double> InferenceSession::feed(const int32_t* ids, int64_t count) {
  std::vector<double> logits;
  for (int64_t done = 0; done < count;) {
    if (streaming() && model_.kv_cache_length() == capacity_) make_room(count - done);
    const int64_t n = streaming() ? std::min(count - done, capacity_ - model_.kv_cache_length()) : count - done;
    logits = model_.append_tokens(ids + done, n);
    done += n;
  }
  return logits;
}

std::vector<double> InferenceSession::prefill(const std::vector<int32_t>& prompt, bool reuse_prefix, int64_t reserve) {
  LL_CHECK(!prompt.empty(), "generation: empty prompt");
  LL_CHECK(streaming() || int64_t(prompt.size()) <= capacity_, "generation: the prompt has ", prompt.size(),
           " tokens but the KV cache holds ", capacity_);
  size_t keep = 0;
  if (reuse_prefix)
    while (keep < tokens_.size() && keep < prompt.size() && tokens_[keep] == prompt[keep]) ++keep;
  const bool continues = keep == tokens_.size() && keep < prompt.size();
  if (evicted_ > 0 && !continues) keep = 0;  // evicted tokens cannot come back: start over
  keep = std::min(keep, prompt.size() - 1);  // the last prompt token must run to give its logits
  if (!(evicted_ > 0 && continues)) {
    model_.truncate_kv_cache(int64_t(keep));
    if (keep == 0) evicted_ = 0;
  }
  tokens_.assign(prompt.begin(), prompt.end());
  reused_ = int64_t(keep);
  const int64_t fresh = int64_t(prompt.size() - keep);
  make_room(fresh + reserve);
  return feed(prompt.data() + keep, fresh);
}

std::vector<double> InferenceSession::append(int32_t token) {
  make_room(1);
  std::vector<double> logits = model_.append_tokens(&token, 1);
  tokens_.push_back(token);
  return logits;
}

GenerateResult generate(InferenceSession& session, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const std::function<void(int32_t)>& on_token) {
  LL_CHECK(o.max_new_tokens >= 1, "generation: max_new_tokens must be >= 1, got ", o.max_new_tokens);
  LL_CHECK(session.streaming() || int64_t(prompt.size()) + o.max_new_tokens - 1 <= session.capacity(),
           "generation: ", prompt.size(),
           " prompt tokens + ", o.max_new_tokens, " new tokens do not fit the KV cache of ", session.capacity());
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(o.sampling);
  auto t0 = clock::now();
  std::vector<double> logits = session.prefill(prompt, o.reuse_prefix, o.max_new_tokens);
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
