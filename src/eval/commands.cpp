#include "eval/commands.h"

#include <chrono>
#include <cstdio>
#include <iomanip>
#include <memory>

#include "cuda/device_info.h"
#include "data/token_file.h"
#include "data/chat_template.h"
#include "data/pdf_text.h"
#include "data/tokenizer.h"
#include "eval/command_flags.h"
#include "eval/eval_model.h"
#include "eval/generate.h"
#include "eval/model_tokenizer.h"
#include "eval/passkey.h"
#include "eval/perplexity.h"
#include "eval/streaming_chat.h"
#include "eval/progress.h"
#include "mpi/comm.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

namespace {

// A generation's text, printed as its tokens arrive (generate, streaming) and kept for the JSON result.
class EchoedText {
 public:
  EchoedText(const Tokenizer& tok, std::ostream& out) : stream_(tok), out_(out) {}
  void push(int32_t id) { print(stream_.push(id)); }
  // The text held back for an incomplete character, a newline; returns the whole text.
  std::string finish() {
    print(stream_.flush());
    out_ << "\n" << std::flush;
    return text_;
  }

 private:
  void print(const std::string& piece) {
    text_ += piece;
    out_ << piece << std::flush;
  }
  TextStream stream_;
  std::ostream& out_;
  std::string text_;
};

// The model's options for this rank: eval_model_options, and with several ranks on --device cuda the rank's GPU
// (choose_local_device: with more ranks on a node than GPUs they share them round-robin, memory permitting —
// evaluation keeps no gradients or optimizer state, and one-GPU machines are common). Otherwise the backend's
// default device.
EvalModelOptions model_options(const EvalCommon& c, int64_t batch, int64_t seq_len, int64_t default_context,
                               const Comm* comm = nullptr) {
  EvalModelOptions m = eval_model_options(c, batch, seq_len, default_context);
  if (c.device == "cuda" && comm && comm->size() > 1)
    m.device_index = choose_local_device(comm->local_rank(), comm->local_size(), int(probe_cuda().devices.size()));
  return m;
}

// `lead`: this rank writes the file (rank 0 of several; the results are the same on every rank).
void finish_json(nlohmann::json& j, const EvalCommon& c, const EvalModel& m, const nlohmann::json& flags,
                 bool lead = true) {
  j["base_model"] = c.base_model;
  j["peft_model"] = c.peft_model;
  j["device"] = c.device;
  j["model"] = m.describe();
  if (!flags.is_null()) j["flags"] = flags;
  if (lead && !c.json.empty()) write_file_atomic(c.json, j.dump(2) + "\n");
}

bool is_lead(const Comm* comm) { return !comm || comm->rank() == 0; }
int world_size(const Comm* comm) { return comm ? comm->size() : 1; }

// Where ranks other than 0 send their report and log: nowhere (a stream without a buffer discards what it gets).
std::ostream& discarded() {
  static std::ostream stream(nullptr);
  return stream;
}

// StreamingLLM's window beyond the positions the model was trained on works, but is worth a word.
void warn_if_window_exceeds(const StreamingWindow& w, int64_t context, std::ostream& log) {
  if (w.start_size + w.recent_size > context)
    log << "warning: --start_size " << w.start_size << " + --recent_size " << w.recent_size
        << " exceed the model's context of " << context << " tokens; cache positions past it were never trained\n";
}

// --material: a text file, or a PDF (through pdftotext).
std::string read_material(const std::string& path) {
  return is_pdf_file(path) ? pdf_to_text(path) : read_text_file(path);
}

}  // namespace

std::string longalpaca_prompt(const std::string& instruction) { return "[INST]" + instruction + "[/INST]"; }

nlohmann::json run_perplexity_command(const PerplexityCommand& c, std::ostream& report, std::ostream& log_to,
                                      const nlohmann::json& flags, Comm* comm) {
  std::ostream& out = is_lead(comm) ? report : discarded();
  std::ostream& log = is_lead(comm) ? log_to : discarded();
  check_command_ranges(c);
  LL_CHECK(!c.data_path.empty(), "--data_path is required (a token file: raw uint16 like LongLoRA's pg19/*.bin, or "
                                 "llm.c-headered)");
  LL_CHECK(path_exists(c.data_path), "--data_path `", c.data_path, "` does not exist");
  // eval.py: context_size defaults to seq_len.
  EvalModel m = load_eval_model(model_options(c.common, c.batch_size, c.seq_len, c.seq_len, comm), log);
  const TokenFile data(c.data_path, m.config.vocab_size);
  log << "data: " << c.data_path << " (" << token_format_name(data.format()) << ", " << data.size() << " tokens)\n";
  if (c.sliding_window_given && m.config.sliding_window > 0)
    log << "--sliding_window " << c.sliding_window << " is the stride between evaluation windows (LongLoRA eval.py's "
        << "flag); this " << m.config.model_type << " model's attention window (sliding_window "
        << m.config.sliding_window << ") comes from its config.json\n";

  PerplexityOptions po;
  po.sliding_window = c.sliding_window;
  po.max_windows = c.max_windows;
  po.drop_last = c.drop_last;
  // Several ranks: rank 0's bar counts its own windows (the ranks do not talk until the end).
  std::unique_ptr<ProgressBar> bar;
  if (c.common.progress && is_lead(comm))
    bar = std::make_unique<ProgressBar>(world_size(comm) > 1 ? "perplexity (rank 0)" : "perplexity", "windows");
  const PerplexityResult r = evaluate_perplexity(*m.model, data, po, [&](int64_t done, int64_t total) {
    if (bar) bar->update(done, total);
  }, comm);
  if (bar) bar->finish();

  const bool cut = r.num_windows < r.total_windows;
  out << std::fixed;
  out << "perplexity                 " << std::setprecision(4) << r.perplexity
      << "   (eval.py: 2.71828 ** mean of per-batch mean losses)\n";
  out << "perplexity_token_weighted  " << r.perplexity_token_weighted
      << "   (eval_distributed.py: exp(token losses / tokens))\n";
  out << "loss " << r.loss << " | accuracy " << r.accuracy;
  if (c.batch_size > 1) out << " (eval.py's val_acc: " << r.accuracy_eval_py << ")";
  out << " | windows " << r.num_windows;
  if (cut) out << " of " << r.total_windows << " (--max_windows)";
  out << " × " << c.seq_len << " tokens, stride " << c.sliding_window << " | " << r.tokens_scored << " tokens scored | "
      << std::setprecision(1) << r.tokens_per_sec << " tokens/s | " << r.seconds << " s";
  if (world_size(comm) > 1) out << " | " << world_size(comm) << " ranks";
  out << "\n";
  out << std::defaultfloat;

  nlohmann::json j = {{"command", "perplexity"},
                      {"data_path", c.data_path},
                      {"data_tokens", data.size()},
                      {"seq_len", c.seq_len},
                      {"context_size", c.common.context_size > 0 ? c.common.context_size : c.seq_len},
                      {"batch_size", c.batch_size},
                      {"sliding_window", c.sliding_window},
                      {"drop_last", c.drop_last},
                      {"max_windows", c.max_windows},
                      {"perplexity", r.perplexity},
                      {"perplexity_token_weighted", r.perplexity_token_weighted},
                      {"loss", r.loss},
                      {"accuracy", r.accuracy},
                      {"accuracy_eval_py", r.accuracy_eval_py},
                      {"num_windows", r.num_windows},
                      {"total_windows", r.total_windows},
                      {"partial", cut},
                      {"tokens_scored", r.tokens_scored},
                      {"seconds", r.seconds},
                      {"tokens_per_sec", r.tokens_per_sec},
                      {"world_size", world_size(comm)}};
  j["window_stride"] = c.sliding_window;  // what --sliding_window is, in plain words
  if (m.config.sliding_window > 0) j["attention_sliding_window"] = m.config.sliding_window;
  finish_json(j, c.common, m, flags, is_lead(comm));
  return j;
}

nlohmann::json run_passkey_command(const PasskeyCommand& c, std::ostream& report, std::ostream& log_to,
                                   const nlohmann::json& flags, Comm* comm) {
  std::ostream& out = is_lead(comm) ? report : discarded();
  std::ostream& log = is_lead(comm) ? log_to : discarded();
  check_command_ranges(c);
  const Tokenizer tok = load_model_tokenizer(c.tokenizer, c.common.base_model, "passkey");
  passkey_garbage_lengths(c.max_tokens, c.interval);  // flag errors before the model loads
  EvalModel m = load_eval_model(model_options(c.common, 1, c.prefill_chunk, 0, comm), log);
  check_tokenizer_fits(tok, m);

  PasskeyOptions po;
  po.max_tokens = c.max_tokens;
  po.interval = c.interval;
  po.num_tests = c.num_tests;
  po.reuse_prefix = c.reuse_prefix;
  std::unique_ptr<ProgressBar> bar;
  if (c.common.progress && is_lead(comm))
    bar = std::make_unique<ProgressBar>(world_size(comm) > 1 ? "passkey (rank 0)" : "passkey", "filler chars");
  char line[160];
  std::snprintf(line, sizeof line, "%10s %14s %9s %8s  %s\n", "n_garbage", "prompt_tokens", "accuracy", "seconds",
                "per seed (+ correct, - wrong)");
  std::string header = line;
  bool printed_header = false;
  auto on_point = [&](const PasskeyPoint& p) {
    if (bar) bar->finish();
    if (!printed_header) out << header, printed_header = true;
    std::string marks;
    for (const PasskeyTrial& t : p.trials) marks += t.correct ? '+' : '-';
    std::snprintf(line, sizeof line, "%10lld %14.1f %9.2f %8.1f  %s\n", (long long)p.n_garbage, p.mean_prompt_tokens,
                  p.accuracy, p.seconds, marks.c_str());
    out << line << std::flush;
  };
  const auto started = std::chrono::steady_clock::now();
  const std::vector<PasskeyPoint> points = run_passkey(*m.model, tok, po, on_point, [&](int64_t done, int64_t total) {
    if (bar) bar->update(done, total);
  }, comm);
  if (bar) bar->finish();

  nlohmann::json jp = nlohmann::json::array(), by_tokens = nlohmann::json::object();
  double seconds = 0;
  int64_t prompt_tokens = 0;
  for (const PasskeyPoint& p : points) {
    nlohmann::json trials = nlohmann::json::array();
    for (const PasskeyTrial& t : p.trials) {
      trials.push_back({{"seed", t.seed}, {"key", t.pass_key}, {"depth", t.depth}, {"n_prefix", t.n_prefix},
                        {"prompt_tokens", t.prompt_tokens}, {"correct", t.correct}, {"answer_ids", t.answer_ids},
                        {"generated_ids", t.generated}});
      prompt_tokens += t.prompt_tokens;
    }
    jp.push_back({{"n_garbage_chars", p.n_garbage}, {"mean_prompt_tokens", p.mean_prompt_tokens},
                  {"reference_tokens", p.reference_tokens}, {"accuracy", p.accuracy}, {"seconds", p.seconds},
                  {"trials", trials}});
    by_tokens[std::to_string(p.reference_tokens)] = p.accuracy;
    seconds += p.seconds;
  }
  out << "prompt tokens per second (prefill + decode): " << std::fixed << std::setprecision(1)
      << double(prompt_tokens) / std::max(seconds, 1e-9);
  if (world_size(comm) > 1) {  // `seconds` adds up the ranks' times
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    out << " per rank; " << double(prompt_tokens) / std::max(wall, 1e-9) << " on " << world_size(comm)
        << " ranks in " << wall << " s";
  }
  out << std::defaultfloat << "\n";
  nlohmann::json j = {{"command", "passkey"},
                      {"tokenizer", tok.path()},
                      {"max_tokens", c.max_tokens},
                      {"interval", c.interval},
                      {"num_tests", c.num_tests},
                      {"reuse_prefix", c.reuse_prefix},
                      {"points", jp},
                      {"accuracy_by_tokens", by_tokens},
                      {"seconds", seconds},
                      {"world_size", world_size(comm)}};
  finish_json(j, c.common, m, flags, is_lead(comm));
  return j;
}

nlohmann::json run_generate_command(const GenerateCommand& c, std::ostream& out, std::ostream& log,
                                    const nlohmann::json& flags) {
  check_command_ranges(c);
  LL_CHECK(c.prompt.empty() != (c.material.empty() && c.question.empty()),
           "give either --prompt TEXT or --material FILE with --question TEXT");
  LL_CHECK(c.prompt.empty() || (c.material.empty() && c.question.empty()),
           "--prompt cannot be combined with --material/--question");
  if (c.template_name != "auto") parse_chat_template(c.template_name);
  std::string instruction = c.prompt;
  if (c.prompt.empty()) {
    LL_CHECK(!c.material.empty() && !c.question.empty(), "--material and --question go together");
    LL_CHECK(path_exists(c.material), "--material `", c.material, "` does not exist");
    // inference.py: material + "\n%s" % question; a PDF is read through pdftotext.
    instruction = read_material(c.material) + "\n" + c.question;
  }
  TokenizerOptions tok_options;
  tok_options.parse_special_tokens = c.parse_special_tokens;
  const Tokenizer tok = load_model_tokenizer(c.tokenizer, c.common.base_model, "generate", tok_options);
  const ChatStyle style = resolve_chat_style(c.template_name, c.common.base_model, tok);
  const std::vector<ChatSegment> segments = render_chat(style, {{"user", instruction}}, /*add_generation_prompt=*/true);
  // The prompt as text, BOS (added by id) left out as before chat templates: "[INST]...[/INST]" for Llama-2.
  const bool leading_bos = !segments.empty() && segments[0].special && segments[0].text == style.bos_token;
  const std::string text = chat_text(std::vector<ChatSegment>(segments.begin() + (leading_bos ? 1 : 0), segments.end()));
  EvalModel m = load_eval_model(model_options(c.common, 1, c.prefill_chunk, 0), log);
  check_tokenizer_fits(tok, m);
  const std::vector<int32_t> ids = encode_chat(tok, segments, c.parse_special_tokens);
  // The KV cache holds the prompt and every generated token: bound the request by the positions the model knows.
  const int64_t context = m.context();
  const StreamingWindow window = c.streaming.window();
  if (window.enabled()) {
    warn_if_window_exceeds(window, context, log);
  } else if (c.max_gen_len > context)
    fail("--max_gen_len ", c.max_gen_len, " is more than the model's context of ", context,
         " tokens (max_position_embeddings ", m.config.max_position_embeddings, " × RoPE factor ", m.rope.factor,
         "); generate at most ", context, " tokens, or extend the context (--context_size, --rope_scaling_factor)");
  if (!window.enabled() && int64_t(ids.size()) + c.max_gen_len > context)
    log << "warning: the prompt (" << ids.size() << " tokens) and --max_gen_len " << c.max_gen_len
        << " together exceed the model's context of " << context << " tokens; positions past it were never trained\n";
  log << "prompt: " << ids.size() << " tokens (chat template " << chat_template_name(style.kind) << ", tokenizer "
      << tok.kind() << "); generating up to " << c.max_gen_len << " ("
      << (c.temperature == 0 ? std::string("greedy") : str_cat("temperature ", c.temperature, ", top_p ", c.top_p,
                                                               ", seed ", c.seed))
      << ")\n"
      << std::flush;

  GenerateOptions go;
  go.max_new_tokens = c.max_gen_len;
  go.sampling = {c.temperature, c.top_p, uint64_t(c.seed)};
  go.eos_id = tok.eos_id();
  // Instruct models end their turn with the template's end-of-turn token (<|eot_id|>, <|im_end|>), not EOS.
  if (const int32_t end = end_of_turn_id(style, tok); end >= 0 && end != go.eos_id) go.stop_ids.push_back(end);
  const std::unique_ptr<InferenceSession> session_owner =
      open_session(*m.model, int64_t(ids.size()) + c.max_gen_len, window);
  InferenceSession& session = *session_owner;
  EchoedText echo(tok, out);
  const GenerateResult r = generate(session, ids, go, [&](int32_t id) { echo.push(id); });
  const std::string generated = echo.finish();
  const int64_t decoded = int64_t(r.tokens.size()) - 1;  // decode steps (the first token comes from the prefill)
  log << std::fixed << std::setprecision(1) << r.tokens.size() << " tokens" << (r.stopped_at_eos ? " (EOS)" : "")
      << " | prefill " << ids.size() << " tokens in " << r.prefill_seconds << " s ("
      << double(ids.size()) / std::max(r.prefill_seconds, 1e-9) << " tokens/s) | decode "
      << (decoded > 0 ? double(decoded) / std::max(r.decode_seconds, 1e-9) : 0.0) << " tokens/s\n"
      << std::defaultfloat;
  nlohmann::json j = {{"command", "generate"},
                      {"prompt", text},
                      {"prompt_tokens", ids.size()},
                      {"text", generated},
                      {"tokens", r.tokens},
                      {"stopped_at_eos", r.stopped_at_eos},
                      {"temperature", c.temperature},
                      {"top_p", c.top_p},
                      {"seed", c.seed},
                      {"prefill_seconds", r.prefill_seconds},
                      {"decode_seconds", r.decode_seconds}};
  if (window.enabled()) j["evicted_tokens"] = session.evicted();
  finish_json(j, c.common, m, flags);
  return j;
}

nlohmann::json run_streaming_command(const StreamingCommand& c, std::ostream& out, std::ostream& log,
                                     const nlohmann::json& flags) {
  check_command_ranges(c);
  LL_CHECK(!c.common.base_model.empty(), "--model_name_or_path (or --base_model) is required");
  LL_CHECK(!c.test_filepath.empty(), "--test_filepath is required (a JSON list of records with `instruction`)");
  const std::vector<std::string> instructions = read_streaming_instructions(c.test_filepath);
  const Tokenizer tok = load_model_tokenizer(c.tokenizer, c.common.base_model, "streaming");
  EvalModel m = load_eval_model(model_options(c.common, 1, c.prefill_chunk, 0), log);
  check_tokenizer_fits(tok, m);
  const int64_t context = m.context();
  const StreamingWindow window = c.streaming.window();
  if (window.enabled()) warn_if_window_exceeds(window, context, log);
  const std::unique_ptr<InferenceSession> session = open_session(*m.model, context, window);
  log << instructions.size() << " turns, greedy, up to " << c.max_gen_len << " tokens each; KV cache "
      << (window.enabled() ? str_cat("streaming: start ", window.start_size, " + recent ", window.recent_size)
                           : str_cat(context, " tokens (no --enable_streaming: the conversation must fit)"))
      << "\n" << std::flush;
  nlohmann::json turns = nlohmann::json::array();
  for (const std::string& instruction : instructions) {
    const std::string prompt = streaming_turn_prompt(instruction);
    out << "\n" << prompt << std::flush;
    // run_streaming_llama: tokenizer(prompt) per turn, so each turn starts with BOS where the tokenizer adds one.
    const std::vector<int32_t> ids = tok.encode(prompt, tok.bos_id() >= 0, false);
    EchoedText echo(tok, out);
    const GenerateResult r =
        answer_turn(*session, ids, c.max_gen_len, tok.eos_id(), [&](int32_t id) { echo.push(id); });
    const std::string text = echo.finish();
    turns.push_back({{"instruction", instruction},
                     {"prompt_tokens", ids.size()},
                     {"text", text},
                     {"tokens", r.tokens},
                     {"stopped_at_eos", r.stopped_at_eos},
                     {"cached_tokens", session->model().kv_cache_length()},
                     {"evicted_tokens", session->evicted()}});
  }
  nlohmann::json j = {{"command", "streaming"},
                      {"test_filepath", c.test_filepath},
                      {"enable_streaming", window.enabled()},
                      {"start_size", c.streaming.start_size},
                      {"recent_size", c.streaming.recent_size},
                      {"fed_tokens", session->fed()},
                      {"turns", turns}};
  finish_json(j, c.common, m, flags);
  return j;
}

}  // namespace ll
