#include "serve/engine.h"

#include <cmath>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "data/tokenizer.h"
#include "eval/eval_model.h"
#include "eval/generate.h"
#include "eval/model_tokenizer.h"
#include "io/model_folder.h"
#include "serve/api_error.h"
#include "serve/stop_strings.h"
#include "util/error.h"
#include "util/files.h"

namespace ll::serve {

namespace {

// ApiError 400 naming the request's `field` for an id that `vocab` tokens do not cover.
void check_in_vocabulary(const std::vector<int32_t>& ids, int64_t vocab, const std::string& field) {
  for (int32_t id : ids)
    if (id < 0 || id >= vocab)
      throw ApiError(400, "`" + field + "`: token id " + std::to_string(id) + " is outside the vocabulary (" +
                              std::to_string(vocab) + " tokens)", field);
}

}  // namespace

void log_line(const std::string& line) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::cerr << line << "\n" << std::flush;
}

bool Job::next(std::string* text) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return done_ || !pending_.empty(); });
  text->swap(pending_);
  pending_.clear();
  return !text->empty() || !done_;
}

bool Job::wait_done_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return done_; });
}

void Job::release(const std::string& text) {
  if (text.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  pending_ += text;
  result_.text += text;
  cv_.notify_all();
}

void Job::finish(const CompletionResult& r, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string text = result_.text;
  result_ = r;
  result_.text = text;
  error_ = error;
  done_ = true;
  cv_.notify_all();
}

Engine::Engine(EngineOptions options) : o_(std::move(options)) {
  name_ = o_.model_name;
  if (name_.empty()) {
    name_ = std::filesystem::path(o_.base_model).lexically_normal().filename().string();
    if (name_.empty()) name_ = std::filesystem::path(o_.base_model).lexically_normal().parent_path().filename().string();
    if (!o_.peft_model.empty())
      name_ += "+" + std::filesystem::path(o_.peft_model).lexically_normal().parent_path().filename().string();
  }
  std::ostringstream note;  // printed by load(), to its log
  o_.base_model = resolve_base_model(o_.base_model, &note);
  folder_note_ = note.str();
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_worker_ = true;
    for (auto& j : queue_) j->finish({}, "the server stopped");
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Engine::load(std::ostream& log) {
  if (o_.test_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o_.test_delay_ms));
  log << folder_note_;
  TokenizerOptions to;
  to.parse_special_tokens = o_.parse_special_tokens;
  tok_ = std::make_unique<Tokenizer>(load_model_tokenizer(o_.tokenizer, o_.base_model, "", to));
  style_ = resolve_chat_style(o_.chat_template, o_.base_model, *tok_);
  model_ = std::make_unique<EvalModel>(load_eval_model(eval_model_options(o_, 1, o_.prefill_chunk), log));
  check_tokenizer_fits(*tok_, *model_);
  // The positions the model knows, as build/eval generate bounds them; --context_size when given.
  context_ = o_.context_size > 0 ? o_.context_size : model_->context();
  const StreamingWindow window = o_.streaming.window();
  session_ = open_session(*model_->model, context_, window);
  log << "serving `" << name_ << "`: context " << context_ << " tokens, chat template " << chat_template_name(style_.kind)
      << ", tokenizer " << tok_->kind() << ", queue " << o_.max_queue
      << (window.enabled() ? str_cat(", StreamingLLM cache: start ", window.start_size, " + recent ", window.recent_size)
                           : std::string())
      << "\n"
      << std::flush;
  thread_ = std::thread([this] { worker(); });
  ready_ = true;
}

const char* Engine::chat_template() const { return chat_template_name(style_.kind); }
int64_t Engine::vocab_size() const { return model_->config.vocab_size; }
std::string Engine::base_weights() const {
  return model_->config.load_in_4bit ? dtype_name(model_->config.base_weight_format) : "dense";
}

int64_t Engine::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int64_t(queue_.size());
}

Engine::Submit Engine::submit(const std::shared_ptr<Job>& job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return Submit::Closed;
  // The running job holds the model; max_queue more may wait.
  if (int64_t(queue_.size()) >= o_.max_queue && (running_job_ || !queue_.empty())) return Submit::QueueFull;
  queue_.push_back(job);
  cv_.notify_all();
  return Submit::Accepted;
}

void Engine::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  closed_ = true;
  cv_.wait(lock, [&] { return queue_.empty() && !running_job_; });
  stop_worker_ = true;
  cv_.notify_all();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
}

std::vector<int32_t> Engine::prompt_ids(const CompletionRequest& r) const {
  std::lock_guard<std::mutex> lock(tok_mu_);
  if (r.prompt_is_ids) {
    check_in_vocabulary(r.prompt_ids, model_->config.vocab_size, "prompt");
    return r.prompt_ids;
  }
  try {
    // A completion's prompt is the text as it is (BOS first when the tokenizer has one): the `none` template, which
    // is what `build/eval generate --chat_template none` encodes.
    ChatStyle style = style_;
    if (!r.chat) style.kind = ChatTemplate::None;
    const std::vector<ChatMessage> messages =
        r.chat ? r.messages : std::vector<ChatMessage>{{"user", r.prompt}};
    return encode_chat(*tok_, render_chat(style, messages, /*add_generation_prompt=*/true), o_.parse_special_tokens);
  } catch (const Error& e) {
    throw ApiError(400, std::string("messages: ") + e.what(), "messages");
  }
}

std::vector<int32_t> Engine::tokenize(const std::string& text, bool add_special) const {
  std::lock_guard<std::mutex> lock(tok_mu_);
  return tok_->encode(text, add_special && tok_->bos_id() >= 0, false);
}

std::string Engine::detokenize(const std::vector<int32_t>& ids) const {
  std::lock_guard<std::mutex> lock(tok_mu_);
  check_in_vocabulary(ids, tok_->vocab_size(), "tokens");
  return tok_->decode(ids);
}

void Engine::worker() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_worker_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = queue_.front();
      queue_.pop_front();
      running_job_ = true;
    }
    run(*job);
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_job_ = false;
    }
    cv_.notify_all();
  }
}

void Engine::run(Job& job) {
  CompletionResult r;
  r.prompt_tokens = int64_t(job.prompt.size());
  r.context_size = context_;
  if (job.cancelled()) {  // its client left while it waited
    ++cancelled_count_;
    job.finish(r, "cancelled");
    return;
  }
  try {
    GenerateOptions go;
    go.max_new_tokens = job.max_tokens;
    go.sampling = job.sampling;
    go.reuse_prefix = job.cache_prompt;
    go.eos_id = tok_->eos_id();
    if (job.chat)
      if (const int32_t end = end_of_turn_id(style_, *tok_); end >= 0 && end != go.eos_id) go.stop_ids.push_back(end);
    TextStream stream(*tok_);
    StopScanner stops(job.stop);
    go.should_stop = [&] { return job.cancelled() || stops.stopped(); };
    const GenerateResult g = generate(*session_, job.prompt, go, [&](int32_t id) {
      std::string piece;
      {
        std::lock_guard<std::mutex> lock(tok_mu_);
        piece = stream.push(id);
      }
      job.release(stops.push(piece));
      if (o_.test_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o_.test_delay_ms));
    });
    std::string rest;
    {
      std::lock_guard<std::mutex> lock(tok_mu_);
      rest = stream.flush();
    }
    rest = stops.push(rest);
    job.release(rest + stops.flush());
    r.completion_tokens = int64_t(g.tokens.size());
    r.cached_tokens = g.reused_prompt_tokens;
    r.prefill_seconds = g.prefill_seconds;
    r.decode_seconds = g.decode_seconds;
    r.finish_reason = g.stopped_at_eos || stops.stopped() ? "stop" : "length";
    if (job.cancelled()) {
      ++cancelled_count_;
      log_line("a client went away: its generation stopped after " + std::to_string(g.tokens.size()) + " of " +
               std::to_string(job.max_tokens) + " tokens");
    }
    job.finish(r, "");
  } catch (const std::exception& e) {
    log_line(std::string("error: generation failed: ") + exception_message(e));
    job.finish(r, exception_message(e));
  }
}

}  // namespace ll::serve
