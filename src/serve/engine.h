// The generation side of the server: loads the model (eval's loading path), then one worker thread runs the
// requests one at a time over a single KV cache (batch 1) taken from a bounded queue. Each request is a Job that
// the HTTP side waits on (whole answer) or reads piece by piece (streaming), and may cancel (its client went away).
// Prompt caching: consecutive requests share the KV cache of their common prefix (InferenceSession's
// reuse_prefix), so the next turn of a conversation prefills only its new tokens.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "data/chat_template.h"
#include "eval/commands.h"
#include "eval/eval_model.h"
#include "eval/sampling.h"
#include "model/quant_options.h"
#include "serve/openai_schema.h"

namespace ll {
class Tokenizer;
struct EvalModel;
class InferenceSession;
}  // namespace ll

namespace ll::serve {

// The model's flags are build/eval's (EvalModelFlags: folder, adapter, device, context, RoPE factor, [PAD] row, 4-bit
// base), and the model is loaded as build/eval loads it. A full fine-tuning run's output folder as base_model is its
// exported model (io/model_folder.h), as in build/eval.
struct EngineOptions : EvalModelFlags {
  std::string tokenizer, chat_template = "auto";
  // StreamingLLM: one endless conversation in a fixed cache of start_size + recent_size tokens. A request whose
  // prompt extends everything fed so far continues it (after evicting room); any other starts over.
  StreamingFlags streaming;
  bool parse_special_tokens = false;
  int64_t prefill_chunk = 1024;
  int64_t max_queue = 8;  // requests waiting behind the running one; more → 503
  std::string model_name;  // "" = the base folder's name
  // For tests: a pause before loading and after each token, to hold the server loading or a generation running.
  int64_t test_delay_ms = 0;
};

// One request's generation, shared by the HTTP thread that owns the connection and the worker.
class Job {
 public:
  std::vector<int32_t> prompt;
  int64_t max_tokens = 16;
  SamplingOptions sampling;
  std::vector<std::string> stop;
  bool chat = false, cache_prompt = true;

  // HTTP side. next() waits for released text or the end: returns false once finished and everything was taken.
  bool next(std::string* text);
  bool wait_done_for(std::chrono::milliseconds timeout);  // true once finished
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  // After the end: the result, or the error that ended it ("" when none).
  const CompletionResult& result() const { return result_; }
  const std::string& error() const { return error_; }

  // Worker side.
  void release(const std::string& text);
  void finish(const CompletionResult& r, const std::string& error);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
  CompletionResult result_;
  std::string error_;
};

class Engine {
 public:
  // Resolves a run's output folder as base_model (throws ll::Error for a LoRA run's folder).
  explicit Engine(EngineOptions options);
  ~Engine();
  // Loads the tokenizer and model (blocking; throws ll::Error), then starts the worker.
  void load(std::ostream& log);
  bool ready() const { return ready_; }

  enum class Submit { Accepted, QueueFull, Closed };
  Submit submit(const std::shared_ptr<Job>& job);
  // Refuses new jobs, then waits until the queue is empty and nothing runs; stops the worker.
  void drain();

  // The ids to prefill for a request (chat: through the chat template); ApiError 400 for messages the template
  // refuses.
  std::vector<int32_t> prompt_ids(const CompletionRequest& request) const;
  std::vector<int32_t> tokenize(const std::string& text, bool add_special) const;
  std::string detokenize(const std::vector<int32_t>& ids) const;  // ApiError 400 for an id outside the vocabulary
  int64_t context_size() const { return context_; }
  // The StreamingLLM window (enabled() false without --enable_streaming): prompts and completions are then not
  // bounded by the context.
  StreamingWindow streaming_window() const { return o_.streaming.window(); }
  int64_t vocab_size() const;
  const std::string& model_name() const { return name_; }
  const char* chat_template() const;
  // The linear weights' storage: "dense", or the 4-bit format (QLoRA's base, --load_in_4bit or a bitsandbytes folder).
  std::string base_weights() const;
  int64_t queued() const;
  int64_t cancelled_count() const { return cancelled_count_; }

 private:
  void worker();
  void run(Job& job);

  EngineOptions o_;
  std::string name_;
  std::string folder_note_;  // set when base_model was a run's output folder
  std::unique_ptr<Tokenizer> tok_;
  mutable std::mutex tok_mu_;  // the tokenizer is used from the HTTP threads and the worker
  ChatStyle style_;
  std::unique_ptr<EvalModel> model_;
  std::unique_ptr<InferenceSession> session_;
  int64_t context_ = 0;
  std::atomic<bool> ready_{false};
  std::atomic<int64_t> cancelled_count_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool running_job_ = false, closed_ = false, stop_worker_ = false;
  std::thread thread_;
};

// One line on stderr (whole, whatever thread writes it).
void log_line(const std::string& line);

}  // namespace ll::serve
