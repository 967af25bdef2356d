// Generation with the model's KV cache: prefill the prompt (in chunks of the model's planned length), then one
// decode step per token, choosing each with a Sampler; and TextStream, which turns the ids into printable text as
// they arrive.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "eval/sampling.h"
#include "model/model.h"

namespace ll {

// StreamingLLM's cache (attention sinks; --enable_streaming --start_size --recent_size): the cache holds
// start_size + recent_size tokens; when more must come in, the oldest tokens after the first start_size go
// (streaming-llm's StartRecentKVCache), and every cached key is rotated by its index in the cache
// (Model::evict_kv_cache), queries by theirs — an endless conversation in a fixed cache.
struct StreamingWindow {
  int64_t start_size = 4, recent_size = 0;  // recent_size 0: off
  bool enabled() const { return recent_size > 0; }
};

// A KV-cache conversation with one model. It remembers the tokens its cache holds (streaming: the start_size sinks
// and the recent ones; an endless chat stays bounded) and, for prefix reuse past evictions, how many tokens it was
// fed and a fingerprint of them all.
class InferenceSession {
 public:
  // Enables the model's KV cache for `capacity` tokens (batch 1, full causal attention).
  InferenceSession(Model& model, int64_t capacity);
  // A streaming session: the cache holds start_size + recent_size tokens and evicts as above.
  InferenceSession(Model& model, StreamingWindow window);
  // Makes the conversation `prompt` and returns the logits after its last token. With `reuse_prefix`, the longest
  // common prefix with the tokens already fed is kept and only the rest runs (the results then differ from a fresh
  // prefill at rounding level: chunk boundaries move). Otherwise the cache starts empty. Streaming: a prompt that
  // extends everything fed so far continues the conversation after evicting room for its new tokens plus
  // `reserve` (the tokens to be generated), as streaming-llm's evict_for_space; one that does not, once tokens were
  // evicted, starts over (fed in windows when it is longer than recent_size).
  std::vector<double> prefill(const std::vector<int32_t>& prompt, bool reuse_prefix = false, int64_t reserve = 0);
  // Continues the conversation with `ids` after everything fed so far (a chat turn), as prefill(everything fed +
  // ids, true, reserve) does without the caller holding the whole conversation.
  std::vector<double> extend(const std::vector<int32_t>& ids, int64_t reserve = 0);
  // Appends one token (a decode step) and returns the logits after it (streaming: evicting one first when full).
  std::vector<double> append(int32_t token);
  const std::vector<int32_t>& tokens() const { return tokens_; }  // what the cache holds, in cache order
  int64_t fed() const { return fed_; }  // tokens fed since the conversation (re)started, evicted ones included
  int64_t capacity() const { return capacity_; }
  bool streaming() const { return window_.enabled(); }
  int64_t evicted() const { return evicted_; }          // tokens fed but no longer cached
  int64_t last_reused() const { return reused_; }  // tokens the last prefill kept from the cache
  Model& model() { return model_; }

 private:
  void make_room(int64_t coming);  // streaming-llm's evict_for_space (at most recent_size tokens' room)
  std::vector<double> feed(const int32_t* ids, int64_t count);
  void record(const int32_t* ids, int64_t count);  // tokens_, fed_ and the fingerprint, before feeding them
  // After evictions: does `prompt` start with everything fed (the fingerprint and the cached tokens agree)?
  bool extends_history(const std::vector<int32_t>& prompt) const;

  Model& model_;
  int64_t capacity_;
  StreamingWindow window_;
  std::vector<int32_t> tokens_;  // the cached tokens (and, while a feed runs, the ones about to be)
  int64_t fed_ = 0;
  uint64_t fingerprint_;  // of the fed_ tokens (FNV-1a over their ids)
  int64_t reused_ = 0, evicted_ = 0;
};

// The session a command opens: a streaming one when `window` is enabled, else one of `capacity` tokens.
std::unique_ptr<InferenceSession> open_session(Model& model, int64_t capacity, StreamingWindow window);

struct GenerateOptions {
  int64_t max_new_tokens = 512;
  SamplingOptions sampling;
  int32_t eos_id = -1;  // stop after producing it (≥ 0); it is included in the result
  std::vector<int32_t> stop_ids;  // more ids that stop it the same way (a chat template's end of turn)
  bool reuse_prefix = false;
  // The prompt continues everything the session was fed (a chat turn): session.extend instead of prefill.
  bool continue_session = false;
  // Asked after each token has gone to on_token: true ends the generation there (a server's client went away, a
  // stop string appeared in the text).
  std::function<bool()> should_stop;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (EOS included when it stopped there)
  bool stopped_at_eos = false;
  int64_t prompt_tokens = 0, reused_prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Prefills `prompt`, then samples up to max_new_tokens tokens (stopping at EOS), calling on_token for each as it
// is chosen. The session's capacity must hold the prompt (with continue_session, plus what was fed) plus
// max_new_tokens − 1 (the last token is never fed), unless it is a streaming session.
GenerateResult generate(InferenceSession& session, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token = {});

// Incremental detokenisation for streaming: push() decodes all ids so far and returns the text not yet returned.
// A trailing run of U+FFFD (bytes of a multi-byte character whose remaining byte pieces have not arrived) is
// held back until the character completes; flush() returns whatever is left.
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tokenizer) : tok_(tokenizer) {}
  std::string push(int32_t id);
  std::string flush();

 private:
  std::string take(bool hold_incomplete);
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t emitted_ = 0;  // bytes of the decoded text already returned
};

}  // namespace ll
