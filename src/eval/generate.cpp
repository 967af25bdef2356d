#include "eval/generate.h"

#include <algorithm>
#include <chrono>

#include "util/error.h"

namespace ll {

namespace {
constexpr uint64_t kFingerprintStart = 14695981039346656037ull;  // FNV-1a's offset basis

uint64_t fingerprint(uint64_t h, const int32_t* ids, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    uint32_t v = uint32_t(ids[i]);
    for (int b = 0; b < 4; ++b, v >>= 8) h = (h ^ (v & 0xffu)) * 1099511628211ull;
  }
  return h;
}
}  // namespace

InferenceSession::InferenceSession(Model& model, int64_t capacity)
    : model_(model), capacity_(capacity), fingerprint_(kFingerprintStart) {
  model_.enable_kv_cache(capacity);
}

InferenceSession::InferenceSession(Model& model, StreamingWindow window)
    : model_(model), capacity_(window.start_size + window.recent_size), window_(window),
      fingerprint_(kFingerprintStart) {
  LL_CHECK(window.start_size >= 0, "--start_size must be >= 0, got ", window.start_size);
  LL_CHECK(window.recent_size >= 1, "--recent_size must be >= 1, got ", window.recent_size);
  model_.enable_kv_cache(capacity_, /*evictable=*/true);
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
  tokens_.erase(tokens_.begin() + window_.start_size, tokens_.begin() + window_.start_size + over);
  evicted_ += over;
}

void InferenceSession::record(const int32_t* ids, int64_t count) {
  tokens_.insert(tokens_.end(), ids, ids + count);
  fed_ += count;
  fingerprint_ = fingerprint(fingerprint_, ids, count);
}

bool InferenceSession::extends_history(const std::vector<int32_t>& prompt) const {
  if (int64_t(prompt.size()) <= fed_ || fingerprint(kFingerprintStart, prompt.data(), fed_) != fingerprint_)
    return false;
  const size_t sinks = std::min(size_t(window_.start_size), tokens_.size());
  return std::equal(tokens_.begin(), tokens_.begin() + sinks, prompt.begin()) &&
         std::equal(tokens_.begin() + sinks, tokens_.end(), prompt.begin() + (fed_ - int64_t(tokens_.size() - sinks)));
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
  bool continues = false;
  if (evicted_ == 0) {  // tokens_ is everything fed: compare it directly
    if (reuse_prefix)
      while (keep < tokens_.size() && keep < prompt.size() && tokens_[keep] == prompt[keep]) ++keep;
  } else if (reuse_prefix && extends_history(prompt)) {
    continues = true;
    keep = size_t(fed_);
  }  // else evicted tokens cannot come back: start over
  keep = std::min(keep, prompt.size() - 1);  // the last prompt token must run to give its logits
  if (!continues) {
    model_.truncate_kv_cache(int64_t(keep));
    evicted_ = 0;
    tokens_.clear(), fed_ = 0, fingerprint_ = kFingerprintStart;
    record(prompt.data(), int64_t(keep));
  }
  reused_ = int64_t(keep);
  const int64_t fresh = int64_t(prompt.size() - keep);
  record(prompt.data() + keep, fresh);
  make_room(fresh + reserve);
  return feed(prompt.data() + keep, fresh);
}

std::vector<double> InferenceSession::extend(const std::vector<int32_t>& ids, int64_t reserve) {
  LL_CHECK(!ids.empty(), "generation: empty prompt");
  LL_CHECK(streaming() || fed_ + int64_t(ids.size()) <= capacity_, "generation: ", fed_, " tokens so far + ",
           ids.size(), " new ones exceed the KV cache of ", capacity_);
  reused_ = fed_;
  record(ids.data(), int64_t(ids.size()));
  make_room(int64_t(ids.size()) + reserve);
  return feed(ids.data(), int64_t(ids.size()));
}

std::vector<double> InferenceSession::append(int32_t token) {
  make_room(1);
  std::vector<double> logits = model_.append_tokens(&token, 1);
  record(&token, 1);
  return logits;
}

GenerateResult generate(InferenceSession& session, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const std::function<void(int32_t)>& on_token) {
  LL_CHECK(o.max_new_tokens >= 1, "generation: max_new_tokens must be >= 1, got ", o.max_new_tokens);
  const int64_t before = o.continue_session ? session.fed() : 0;
  LL_CHECK(session.streaming() || before + int64_t(prompt.size()) + o.max_new_tokens - 1 <= session.capacity(),
           "generation: ", before > 0 ? str_cat(before, " tokens so far + ") : std::string(), prompt.size(),
           " prompt tokens + ", o.max_new_tokens, " new tokens do not fit the KV cache of ", session.capacity());
  using clock = std::chrono::steady_clock;
  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  Sampler sampler(o.sampling);
  auto t0 = clock::now();
  std::vector<double> logits = o.continue_session ? session.extend(prompt, o.max_new_tokens)
                                                  : session.prefill(prompt, o.reuse_prefix, o.max_new_tokens);
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
