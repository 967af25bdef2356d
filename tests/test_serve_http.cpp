// build/serve over HTTP: the binary on a free loopback port with a tiny random Llama (the committed synthetic
// byte-level tokenizer.json with ChatML's turn tokens, so that nothing outside the repository is needed), driven
// with cpp-httplib's client. Greedy answers are compared with build/eval generate's.
#ifdef LONGLORA_WITH_HTTPLIB
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "eval_test_util.h"
#include "serve_test_util.h"
#include "data/tokenizer.h"
#include "eval/eval_model.h"
#include "eval/generate.h"

namespace ll {
namespace {

using nlohmann::json;

struct Reply {
  int status = 0;
  json body;
  std::string raw, retry_after;
};

Reply post(int port, const std::string& path, const std::string& body,
           const httplib::Headers& headers = {}) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120);
  Reply r;
  auto res = c.Post(path.c_str(), headers, body, "application/json");
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  r.retry_after = res->get_header_value("Retry-After");
  r.body = json::parse(res->body, nullptr, false);
  return r;
}
Reply post(int port, const std::string& path, const json& body) { return post(port, path, body.dump()); }

// A streamed request: the SSE payloads; `stop_after` > 0 closes the connection once that many have arrived.
std::vector<std::string> stream(int port, const std::string& path, json body, int* status = nullptr,
                                int stop_after = 0, std::atomic<int>* received = nullptr,
                                std::atomic<bool>* abort = nullptr) {
  body["stream"] = true;
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(120);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string raw;
  int events = 0;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    raw.append(data, n);
    events = int(test::sse_data(raw).size());
    if (received) *received = events;
    if (abort && *abort) return false;
    return stop_after <= 0 || events < stop_after;
  };
  auto res = c.send(req);
  if (status) *status = res ? res->status : 0;
  return test::sse_data(raw);
}

// The text of a stream (completions: choices[0].text; chat: delta.content), its finish reason and usage.
struct Streamed {
  std::string text, finish_reason;
  json usage;
  bool done = false;  // ended with [DONE]
  int chunks = 0;
};
Streamed join(const std::vector<std::string>& events) {
  Streamed s;
  for (const std::string& e : events) {
    if (e == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(e);
    if (j.contains("usage")) s.usage = j["usage"];
    if (j["choices"].empty()) continue;
    ++s.chunks;
    const json& c = j["choices"][0];
    if (c.contains("text")) s.text += c["text"].get<std::string>();
    if (c.contains("delta") && c["delta"].contains("content")) s.text += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"];
  }
  return s;
}

std::string serve_binary() { return test::sibling_binary("serve"); }

// Waits (at most a minute) for `done`.
void wait_for(const std::function<bool()>& done, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "timed out waiting for " << what;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// One model folder and one server for the suite; tests that need other flags start their own.
class ServeHttp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (serve_binary().empty()) return;
    dir_ = new test::TempDir();
    write_model(dir_->path());
    server_ = new test::ServerProcess(serve_binary(), {"--base_model", dir_->path(), "--max_body_bytes", "65536"},
                                      dir_->file("serve.log"));
    if (!server_->wait_ready(&start_error_)) {
      delete server_;
      server_ = nullptr;
    }
  }
  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->terminate(), 0) << server_->log();
    }
    delete server_;
    delete dir_;
    server_ = nullptr, dir_ = nullptr;
  }
  void SetUp() override {
    if (serve_binary().empty()) GTEST_SKIP() << "build/serve is not built next to the test binary";
    ASSERT_NE(server_, nullptr) << start_error_;
  }
  // A random Llama (context 256) with a ChatML tokenizer.json and template.
  static void write_model(const std::string& dir) {
    const std::string tokenizer_json = test::write_chatml_tokenizer_json(dir);
    const Tokenizer tok = Tokenizer::load(tokenizer_json);
    test::write_random_hf_folder(dir, test::small_config(tok.vocab_size(), 256), 17, 0.5);
    write_file_atomic(dir + "/tokenizer_config.json",
                      R"({"chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + )"
                      R"(message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %})"
                      R"({{ '<|im_start|>assistant\n' }}{% endif %}"})");
  }
  static int port() { return server_->port(); }
  static std::string model_dir() { return dir_->path(); }

  static test::TempDir* dir_;
  static test::ServerProcess* server_;
  static std::string start_error_;
};
test::TempDir* ServeHttp::dir_ = nullptr;
test::ServerProcess* ServeHttp::server_ = nullptr;
std::string ServeHttp::start_error_;

json eval_generate(const std::string& model, const std::string& prompt, const std::string& template_name,
                   int max_gen_len, const std::string& json_path, const std::string& extra_flags = "") {
  std::string out;
  const std::string cmd = test::eval_binary() + " generate --base_model '" + model + "' --prompt '" + prompt +
                          "' --chat_template " + template_name + " --temperature 0 --max_gen_len " +
                          std::to_string(max_gen_len) + " --progress false --json '" + json_path + "' " + extra_flags;
  EXPECT_EQ(test::run_command(cmd, &out), 0) << out;
  return json::parse(read_text_file(json_path));
}

TEST_F(ServeHttp, HealthModelsAndThePage) {
  httplib::Client c("127.0.0.1", port());
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body), json({{"status", "ok"}}));
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(m["data"][0]["meta"]["context_size"], 256);
  EXPECT_EQ(m["data"][0]["meta"]["chat_template"], "chatml");
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(page->body.find("/v1/chat/completions"), std::string::npos);
  EXPECT_EQ(page->body.find("<script src="), std::string::npos) << "the page loads nothing from elsewhere";
}

TEST_F(ServeHttp, GreedyCompletionsEqualEvalGenerate) {
  if (test::eval_binary().empty()) GTEST_SKIP() << "build/eval is not built next to the test binary";
  const json plain = eval_generate(model_dir(), "hello world", "none", 12, dir_->file("plain.json"));
  const Reply c = post(port(), "/v1/completions",
                       json{{"prompt", "hello world"}, {"max_tokens", 12}, {"temperature", 0}, {"cache_prompt", false}});
  ASSERT_EQ(c.status, 200) << c.raw;
  EXPECT_EQ(c.body["object"], "text_completion");
  EXPECT_EQ(c.body["choices"][0]["text"], plain["text"]);
  EXPECT_EQ(c.body["usage"]["prompt_tokens"], plain["prompt_tokens"]);
  EXPECT_EQ(c.body["usage"]["completion_tokens"], plain["tokens"].size());
  EXPECT_EQ(c.body["usage"]["total_tokens"], plain["prompt_tokens"].get<int>() + int(plain["tokens"].size()));
  EXPECT_EQ(c.body["choices"][0]["finish_reason"], plain["stopped_at_eos"].get<bool>() ? "stop" : "length");

  const json chat = eval_generate(model_dir(), "hello world", "auto", 12, dir_->file("chat.json"));
  const Reply r = post(port(), "/v1/chat/completions",
                       json{{"messages", {{{"role", "user"}, {"content", "hello world"}}}},
                            {"max_tokens", 12},
                            {"temperature", 0},
                            {"cache_prompt", false}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], chat["text"]);
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], chat["prompt_tokens"]);
  EXPECT_NE(plain["prompt_tokens"], chat["prompt_tokens"]) << "the chat went through the ChatML template";
}

// QLoRA's base: --load_in_4bit quantizes the dense folder on load (NF4, double-quantized) in the server as in
// build/eval, so the greedy answers agree; /v1/models says which weights are served.
TEST_F(ServeHttp, FourBitBaseAnswersAsEvalGenerate) {
  if (test::eval_binary().empty()) GTEST_SKIP() << "build/eval is not built next to the test binary";
  const std::string four_bit = "--load_in_4bit true --bnb_4bit_quant_type nf4 --bnb_4bit_use_double_quant true";
  const json want = eval_generate(model_dir(), "hello world", "none", 12, dir_->file("nf4.json"), four_bit);
  test::ServerProcess s(serve_binary(),
                        {"--base_model", model_dir(), "--load_in_4bit", "--bnb_4bit_quant_type", "nf4",
                         "--bnb_4bit_use_double_quant", "true", "--bnb_4bit_compute_dtype", "bfloat16"},
                        dir_->file("serve_nf4.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  httplib::Client c("127.0.0.1", s.port());
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["meta"]["base_weights"], "nf4 (double-quantized)");
  const Reply r = post(s.port(), "/v1/completions",
                       json{{"prompt", "hello world"}, {"max_tokens", 12}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["text"], want["text"]);
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want["tokens"].size());
  EXPECT_EQ(s.terminate(), 0) << s.log();

  auto dense = httplib::Client("127.0.0.1", port()).Get("/v1/models");
  ASSERT_TRUE(dense);
  EXPECT_EQ(json::parse(dense->body)["data"][0]["meta"]["base_weights"], "dense");
}

// A full fine-tuning run's output folder (build/train exports its model to output_dir/model) as --base_model: the
// server loads that model and its tokenizer, as build/eval generate does, and answers as it does; a LoRA run's
// folder is refused before listening, naming --peft_model.
TEST_F(ServeHttp, FullFineTuningRunFolderIsItsModelAsInEvalGenerate) {
  if (test::eval_binary().empty()) GTEST_SKIP() << "build/eval is not built next to the test binary";
  test::TempDir run;
  std::filesystem::create_directories(run.file("model"));
  write_model(run.file("model"));
  const json want = eval_generate(run.path(), "hello world", "none", 12, dir_->file("run.json"));
  test::ServerProcess s(serve_binary(), {"--base_model", run.path()}, dir_->file("serve_run.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  EXPECT_NE(s.log().find("a full fine-tuning run's output folder; its model is " + run.path() + "/model"),
            std::string::npos) << s.log();
  const Reply r = post(s.port(), "/v1/completions",
                       json{{"prompt", "hello world"}, {"max_tokens", 12}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["text"], want["text"]);
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want["tokens"].size());
  EXPECT_EQ(s.terminate(), 0) << s.log();

  test::TempDir lora_run;
  write_file_atomic(lora_run.file("adapter_config.json"), "{}");
  std::string out;
  EXPECT_EQ(test::run_command(serve_binary() + " --port 0 --base_model " + lora_run.path(), &out), 1);
  EXPECT_NE(out.find("is a LoRA adapter folder"), std::string::npos) << out;
  EXPECT_EQ(out.find("listening"), std::string::npos) << out;
}

// StreamingLLM in the server (a bare --enable_streaming): one conversation far past a 4 + 24 token window, each
// request's prompt (token ids) extending the previous one, so each continues the cache after evictions; the
// greedy answer equals the library's streaming session fed the same way. A prompt past the model's context is
// accepted (the shared server without streaming refuses it).
TEST_F(ServeHttp, StreamingLlmContinuesAConversationPastTheWindow) {
  test::ServerProcess s(serve_binary(), {"--base_model", model_dir(), "--enable_streaming", "--recent_size", "24"},
                        dir_->file("serve_streaming.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  auto models = httplib::Client("127.0.0.1", s.port()).Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["meta"]["streaming"], json({{"start_size", 4}, {"recent_size", 24}}));

  std::ostringstream log;
  EvalModelOptions mo;
  mo.base_model = model_dir();
  mo.seq_len = 1024;
  EvalModel local = load_eval_model(mo, log);
  InferenceSession session(*local.model, StreamingWindow{4, 24});
  const Tokenizer tok = Tokenizer::load(model_dir() + "/tokenizer.json");
  Rng rng(5);
  std::vector<int32_t> conversation;
  for (int turn = 0; turn < 8; ++turn) {
    const size_t before = conversation.size();
    for (int i = 0; i < 7; ++i) conversation.push_back(int32_t(rng.uniform(40, 200)));
    // max_tokens 1: the answer's only token is never fed, so the next prompt extends what the server holds.
    const Reply r = post(s.port(), "/v1/completions",
                         json{{"prompt", conversation}, {"max_tokens", 1}, {"temperature", 0}});
    ASSERT_EQ(r.status, 200) << r.raw;
    const std::vector<double> logits = session.prefill(conversation, /*reuse_prefix=*/true, /*reserve=*/1);
    const int32_t want = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(r.body["choices"][0]["text"], tok.decode({want})) << "turn " << turn;
    EXPECT_EQ(r.body["usage"]["prompt_tokens_details"]["cached_tokens"], before) << "turn " << turn;
  }
  EXPECT_GT(session.evicted(), 24) << "the conversation went past the window";

  std::vector<int32_t> long_prompt(300, 65);
  const json body{{"prompt", long_prompt}, {"max_tokens", 2}, {"temperature", 0}};
  EXPECT_EQ(post(s.port(), "/v1/completions", body).status, 200);
  EXPECT_EQ(post(port(), "/v1/completions", body).status, 400);
  EXPECT_EQ(s.terminate(), 0) << s.log();
}

// The official `openai` Python client against the server (with an API key): its greedy completion and chat answers
// (whole and streamed) equal direct HTTP ones, a bad request is its BadRequestError (400), a wrong key its
// AuthenticationError (401). Skips when the Python ($LL_PYTHON, else python3) has no `openai` package.
TEST_F(ServeHttp, OpenAiPythonClient) {
  const char* env = std::getenv("LL_PYTHON");
  const std::string python = env && *env ? env : "python3";
  std::string out;
  if (test::run_command(python + " -c 'import openai'", &out) != 0)
    GTEST_SKIP() << "`" << python << "` cannot import openai (pip install openai; or set LL_PYTHON to a Python "
                 << "that has it): " << out;
  test::ServerProcess s(serve_binary(), {"--base_model", model_dir(), "--api_key", "sk-test"},
                        dir_->file("serve_openai.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  const std::string script = test::fixtures_dir() + "/../openai_client_check.py";
  const std::string result = dir_->file("openai.json");
  ASSERT_EQ(test::run_command(python + " '" + script + "' http://127.0.0.1:" + std::to_string(s.port()) +
                                  "/v1 sk-test '" + result + "'", &out), 0) << out;
  const json got = json::parse(read_text_file(result));
  const Reply c = post(port(), "/v1/completions", json{{"prompt", "hello world"}, {"max_tokens", 12}, {"temperature", 0}});
  const Reply r = post(port(), "/v1/chat/completions",
                       json{{"messages", {{{"role", "user"}, {"content", "hello world"}}}},
                            {"max_tokens", 12},
                            {"temperature", 0}});
  ASSERT_EQ(c.status, 200);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(got["completion"], c.body["choices"][0]["text"]) << got.dump();
  EXPECT_EQ(got["completion_tokens"], c.body["usage"]["completion_tokens"]);
  EXPECT_EQ(got["chat"], r.body["choices"][0]["message"]["content"]);
  EXPECT_EQ(got["chat_streamed"], got["chat"]);
  EXPECT_EQ(got["bad_request"]["status"], 400) << got.dump();
  EXPECT_EQ(got["unauthorized"], 401) << got.dump();
  EXPECT_EQ(s.terminate(), 0) << s.log();
}

// The page in a real browser (Debian's chromium, headless, driven by tests/browser_page_check.py over the DevTools
// pipe): attach a text file, ask, the answer appears piece by piece and equals the greedy chat answer over HTTP.
// The screenshot is kept in test_artifacts/ beside the test binary ($LL_TEST_ARTIFACTS overrides).
TEST_F(ServeHttp, PageInHeadlessChromium) {
  const char* env = std::getenv("LL_CHROMIUM");
  std::string chromium = env && *env ? env : "", out;
  if (chromium.empty() && test::run_command("command -v chromium", &out) == 0) chromium = out.substr(0, out.find('\n'));
  if (chromium.empty()) GTEST_SKIP() << "no chromium (apt-get install chromium, or set LL_CHROMIUM)";
  // Slowed tokens (60 ms each) so that the page shows the answer growing.
  test::ServerProcess s(serve_binary(), {"--base_model", model_dir(), "--test_delay_ms", "60"},
                        dir_->file("serve_page.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  const std::string material = dir_->file("material.txt"), question = "What does the cache keep?";
  write_file_atomic(material, "The cache keeps the first four tokens and the most recent ones.");
  const char* artifacts_env = std::getenv("LL_TEST_ARTIFACTS");
  const std::string artifacts = artifacts_env && *artifacts_env
                                    ? artifacts_env
                                    : test::sibling_binary("test_all").substr(0, test::sibling_binary("test_all").rfind('/')) +
                                          "/test_artifacts";
  std::filesystem::create_directories(artifacts);
  const std::string screenshot = artifacts + "/serve_page.png", result = dir_->file("page.json");
  std::remove(screenshot.c_str());
  const std::string script = test::fixtures_dir() + "/../browser_page_check.py";
  ASSERT_EQ(test::run_command("python3 '" + script + "' '" + chromium + "' http://127.0.0.1:" +
                                  std::to_string(s.port()) + "/ '" + material + "' '" + question + "' '" + screenshot +
                                  "' '" + result + "'", &out), 0) << out;
  const json got = json::parse(read_text_file(result));
  const Reply r = post(s.port(), "/v1/chat/completions",
                       json{{"messages", {{{"role", "user"}, {"content", read_text_file(material) + "\n" + question}}}},
                            {"max_tokens", 12},
                            {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(got["answer"], r.body["choices"][0]["message"]["content"]) << got.dump();
  EXPECT_GE(got["lengths_seen"].size(), 3u) << "the answer did not grow while streaming: " << got.dump();
  EXPECT_NE(got["material_info"].get<std::string>().find("material.txt"), std::string::npos) << got.dump();
  EXPECT_NE(got["speed"].get<std::string>().find("tokens/s"), std::string::npos) << got.dump();
  EXPECT_NE(got["used"].get<std::string>().find("context used"), std::string::npos) << got.dump();
  ASSERT_TRUE(path_exists(screenshot));
  EXPECT_EQ(test::read_bytes(screenshot).substr(0, 4), "\x89PNG");
  EXPECT_EQ(s.terminate(), 0) << s.log();
}

// demo.py's flags: --temperature / --top_p / --max_gen_len are the defaults of requests that leave them out,
// --flash_attn is accepted (ignored, with a line saying so).
TEST_F(ServeHttp, DemoPyFlagsAreRequestDefaults) {
  if (test::eval_binary().empty()) GTEST_SKIP() << "build/eval is not built next to the test binary";
  const json want = eval_generate(model_dir(), "hello world", "none", 5, dir_->file("demo_flags.json"));
  test::ServerProcess s(serve_binary(),
                        {"--base_model", model_dir(), "--temperature", "0", "--top_p", "0.9", "--max_gen_len", "5",
                         "--flash_attn", "True"},
                        dir_->file("serve_demo_flags.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  const Reply r = post(s.port(), "/v1/completions", json{{"prompt", "hello world"}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["choices"][0]["text"], want["text"]) << "greedy, 5 tokens, as build/eval generate";
  EXPECT_EQ(r.body["usage"]["completion_tokens"], want["tokens"].size());
  EXPECT_NE(s.log().find("flash_attn"), std::string::npos) << s.log();
  EXPECT_EQ(s.terminate(), 0) << s.log();
}

TEST_F(ServeHttp, StreamedAndUnstreamedAgree) {
  for (const bool chat : {true, false}) {
    json body = {{"max_tokens", 20}, {"temperature", 0.8}, {"top_p", 0.9}, {"seed", 5}};
    if (chat)
      body["messages"] = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Tell me."}}};
    else
      body["prompt"] = "Once upon";
    const std::string path = chat ? "/v1/chat/completions" : "/v1/completions";
    const Reply whole = post(port(), path, body);
    ASSERT_EQ(whole.status, 200) << whole.raw;
    body["stream_options"] = {{"include_usage", true}};
    int status = 0;
    const std::vector<std::string> events = stream(port(), path, body, &status);
    EXPECT_EQ(status, 200);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back(), "[DONE]");
    const Streamed s = join(events);
    EXPECT_TRUE(s.done);
    // At least one text chunk and the finishing one. How many text chunks is timing: Job::next hands over all the
    // text generated since the last write, so a fast CPU can finish 20 tokens before the first write.
    EXPECT_GE(s.chunks, 2) << "a text chunk and the finishing chunk";
    EXPECT_EQ(s.text, chat ? whole.body["choices"][0]["message"]["content"] : whole.body["choices"][0]["text"]);
    EXPECT_EQ(s.finish_reason, whole.body["choices"][0]["finish_reason"]);
    EXPECT_EQ(s.usage["completion_tokens"], whole.body["usage"]["completion_tokens"]);
    EXPECT_EQ(s.usage["prompt_tokens"], whole.body["usage"]["prompt_tokens"]);
    const json first = json::parse(events[0]);
    EXPECT_EQ(first["object"], chat ? "chat.completion.chunk" : "text_completion");
    if (chat) {
      EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
    }
  }
}

TEST_F(ServeHttp, TwoConcurrentStreamsEachGetTheirOwnAnswer) {
  auto body = [](const std::string& prompt) {
    return json{{"prompt", prompt}, {"max_tokens", 40}, {"temperature", 0}};
  };
  const Reply a = post(port(), "/v1/completions", body("alpha beta"));
  const Reply b = post(port(), "/v1/completions", body("gamma delta epsilon"));
  ASSERT_EQ(a.status, 200);
  ASSERT_EQ(b.status, 200);
  ASSERT_NE(a.body["choices"][0]["text"], b.body["choices"][0]["text"]);
  Streamed sa, sb;
  std::thread ta([&] { sa = join(stream(port(), "/v1/completions", body("alpha beta"))); });
  std::thread tb([&] { sb = join(stream(port(), "/v1/completions", body("gamma delta epsilon"))); });
  ta.join(), tb.join();
  EXPECT_TRUE(sa.done && sb.done);
  EXPECT_EQ(sa.text, a.body["choices"][0]["text"]);
  EXPECT_EQ(sb.text, b.body["choices"][0]["text"]);
}

TEST_F(ServeHttp, PromptCachingPrefillsOnlyTheNewTurn) {
  json messages = {{{"role", "user"}, {"content", "The first question, with some words in it."}}};
  const Reply turn1 = post(port(), "/v1/chat/completions",
                           json{{"messages", messages}, {"max_tokens", 8}, {"temperature", 0}});
  ASSERT_EQ(turn1.status, 200) << turn1.raw;
  messages.push_back({{"role", "assistant"}, {"content", turn1.body["choices"][0]["message"]["content"]}});
  messages.push_back({{"role", "user"}, {"content", "And a second one?"}});
  json next = {{"messages", messages}, {"max_tokens", 8}, {"temperature", 0}};
  const Reply cached = post(port(), "/v1/chat/completions", next);
  next["cache_prompt"] = false;
  const Reply fresh = post(port(), "/v1/chat/completions", next);
  ASSERT_EQ(cached.status, 200);
  ASSERT_EQ(fresh.status, 200);
  EXPECT_EQ(cached.body["choices"][0]["message"]["content"], fresh.body["choices"][0]["message"]["content"]);
  const int64_t first_prompt = turn1.body["usage"]["prompt_tokens"];
  EXPECT_GE(cached.body["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), first_prompt)
      << cached.raw << "\nthe first turn's prompt is reused";
  EXPECT_EQ(fresh.body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_LT(cached.body["usage"]["timings"]["prefill_tokens"].get<int64_t>(),
            fresh.body["usage"]["timings"]["prefill_tokens"].get<int64_t>());
}

TEST_F(ServeHttp, StopStringsEndTheTextBeforeThem) {
  json body = {{"prompt", "stop here"}, {"max_tokens", 30}, {"temperature", 0}};
  const Reply whole = post(port(), "/v1/completions", body);
  ASSERT_EQ(whole.status, 200);
  const std::string text = whole.body["choices"][0]["text"];
  ASSERT_GE(text.size(), 8u) << text;
  // Two whole UTF-8 characters from the middle.
  auto boundary = [&](size_t i) {
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  const size_t from = boundary(text.size() / 2), to = boundary(boundary(from + 1) + 1);
  ASSERT_LT(from, to);
  const std::string stop = text.substr(from, to - from);
  body["stop"] = {stop, "never appears \x01"};
  const Reply cut = post(port(), "/v1/completions", body);
  ASSERT_EQ(cut.status, 200) << cut.raw;
  EXPECT_EQ(cut.body["choices"][0]["text"], text.substr(0, text.find(stop)));
  EXPECT_EQ(cut.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(join(stream(port(), "/v1/completions", body)).text, text.substr(0, text.find(stop)));
}

TEST_F(ServeHttp, TokenizeAndDetokenize) {
  const Reply t = post(port(), "/tokenize", json{{"content", "hello world"}});
  ASSERT_EQ(t.status, 200) << t.raw;
  ASSERT_TRUE(t.body["tokens"].is_array());
  EXPECT_FALSE(t.body["tokens"].empty());
  const Reply d = post(port(), "/detokenize", json{{"tokens", t.body["tokens"]}});
  ASSERT_EQ(d.status, 200) << d.raw;
  EXPECT_EQ(d.body["content"], "hello world");
  EXPECT_EQ(post(port(), "/detokenize", json{{"tokens", {1, 99999999}}}).status, 400);
  EXPECT_EQ(post(port(), "/tokenize", json{{"content", 3}}).status, 400);
}

TEST_F(ServeHttp, BadRequestsGetOpenAiErrorObjects) {
  struct Case {
    std::string path, body;
    int status;
    std::string param;  // "" = not checked
  };
  std::string long_prompt;
  for (int i = 0; i < 400; ++i) long_prompt += "word ";
  const std::string chat = "/v1/chat/completions", comp = "/v1/completions";
  const std::vector<Case> cases = {
      {comp, "{not json", 400, ""},
      {comp, "[1, 2]", 400, ""},
      {comp, R"({"max_tokens": 4})", 400, "prompt"},
      {comp, R"({"prompt": 5})", 400, "prompt"},
      {comp, R"({"prompt": "a", "max_tokens": -1})", 400, "max_tokens"},
      {comp, R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens"},
      {comp, R"({"prompt": "a", "max_tokens": "ten"})", 400, "max_tokens"},
      {comp, R"({"prompt": "a", "max_tokens": 1000})", 400, "max_tokens"},
      {comp, R"({"prompt": "a", "temperature": "hot"})", 400, "temperature"},
      {comp, R"({"prompt": "a", "temperature": 3})", 400, "temperature"},
      {comp, R"({"prompt": "a", "top_p": 0})", 400, "top_p"},
      {comp, R"({"prompt": "a", "stream": "yes"})", 400, "stream"},
      {comp, R"({"prompt": "a", "stop": 7})", 400, "stop"},
      {comp, R"({"prompt": "a", "stop": ["a","b","c","d","e"]})", 400, "stop"},
      {comp, R"({"prompt": "a", "n": 2})", 400, "n"},
      {comp, R"({"prompt": "a", "seed": 1.5})", 400, "seed"},
      {comp, R"({"prompt": [1, -3]})", 400, "prompt"},
      {comp, json{{"prompt", long_prompt}}.dump(), 400, "prompt"},
      {chat, R"({"messages": []})", 400, "messages"},
      {chat, R"({"messages": "hi"})", 400, "messages"},
      {chat, R"({"messages": [{"role": "wizard", "content": "x"}]})", 400, "messages[0].role"},
      {chat, R"({"messages": [{"role": "user"}]})", 400, "messages[0].content"},
      {chat, R"({"messages": [{"role": "user", "content": 5}]})", 400, "messages[0].content"},
      {"/v1/nothing", "{}", 404, ""},
      {"/tokenize", "{oops", 400, ""},
  };
  for (const Case& c : cases) {
    const Reply r = post(port(), c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.path << " " << c.body << "\n" << r.raw;
    ASSERT_TRUE(r.body.is_object() && r.body.contains("error")) << c.body << "\n" << r.raw;
    const json& e = r.body["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << r.raw;
    EXPECT_TRUE(e["type"].is_string()) << r.raw;
    if (!c.param.empty()) {
      EXPECT_EQ(e["param"], c.param) << c.body << "\n" << r.raw;
    }
  }
  const Reply past = post(port(), comp, json{{"prompt", long_prompt}});
  EXPECT_EQ(past.body["error"]["code"], "context_length_exceeded") << past.raw;
  // Over --max_body_bytes (64 KiB here): 413 before the body is read.
  const Reply big = post(port(), comp, json{{"prompt", std::string(100000, 'x')}});
  EXPECT_EQ(big.status, 413) << big.raw;
  EXPECT_TRUE(big.body.is_object() && big.body.contains("error")) << big.raw;
  httplib::Client c("127.0.0.1", port());
  auto get = c.Get("/v1/unknown");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 404);
  EXPECT_TRUE(json::parse(get->body).contains("error"));
  // Still serving.
  EXPECT_EQ(post(port(), comp, json{{"prompt", "a"}, {"max_tokens", 2}}).status, 200);
}

TEST_F(ServeHttp, ApiKeyIsCheckedExceptForThePageAndHealth) {
  test::TempDir dir;
  test::ServerProcess s(serve_binary(), {"--base_model", model_dir(), "--api_key", "sekrit"}, dir.file("serve.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  const json body = {{"prompt", "a"}, {"max_tokens", 2}};
  const Reply none = post(s.port(), "/v1/completions", body.dump());
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.body["error"]["code"], "invalid_api_key") << none.raw;
  EXPECT_EQ(post(s.port(), "/v1/completions", body.dump(), {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(post(s.port(), "/v1/completions", body.dump(), {{"Authorization", "Bearer sekrit"}}).status, 200);
  httplib::Client c("127.0.0.1", s.port());
  EXPECT_EQ(c.Get("/")->status, 200);
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(s.terminate(), 0) << s.log();
}

// /health is 503 while the model loads; a model that cannot load ends the server with status 1 and the reason.
TEST(ServeHttpStart, HealthIs503WhileLoadingAndALoadFailureExits1) {
  if (serve_binary().empty()) GTEST_SKIP() << "build/serve is not built next to the test binary";
  test::TempDir dir;
  write_file_atomic(dir.file("config.json"), "{\"model_type\": \"llama\"}");
  test::ServerProcess s(serve_binary(), {"--base_model", dir.path(), "--test_delay_ms", "1500"}, dir.file("serve.log"));
  int port = 0;
  const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
  wait_for([&] {
    std::smatch m;
    const std::string log = s.log();
    if (std::regex_search(log, m, listening)) port = std::stoi(m[1]);
    return port > 0;
  }, "the listening line");
  httplib::Client c("127.0.0.1", port);
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body)["error"]["code"], "model_loading");
  EXPECT_FALSE(health->get_header_value("Retry-After").empty());
  EXPECT_EQ(post(port, "/v1/completions", json{{"prompt", "a"}}).status, 503);
  EXPECT_EQ(s.wait_exit(60), 1);
  EXPECT_NE(s.log().find("serve: error: no tokenizer"), std::string::npos) << s.log();
}

TEST(ServeHttpStart, BadFlagsAreRefusedBeforeListening) {
  if (serve_binary().empty()) GTEST_SKIP() << "build/serve is not built next to the test binary";
  std::string out;
  EXPECT_EQ(test::run_command(serve_binary() + " --port 70000 --base_model x", &out), 1);
  EXPECT_NE(out.find("--port"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(serve_binary() + " --port 0", &out), 1);
  EXPECT_NE(out.find("--base_model is required"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(serve_binary() + " --base_model x --chat_template jinja", &out), 1);
  EXPECT_NE(out.find("--chat_template"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(serve_binary() + " --base_model x --load_in_4bit --bnb_4bit_quant_type int4", &out), 1);
  EXPECT_NE(out.find("--bnb_4bit_quant_type"), std::string::npos) << out;
  EXPECT_EQ(out.find("listening"), std::string::npos) << out;
}

// With every token slowed down (--test_delay_ms), one generation runs while the test acts: a full queue answers
// 503 with Retry-After, a client that leaves stops its generation, SIGTERM lets the running stream finish.
TEST_F(ServeHttp, QueueLimitDisconnectAndSigterm) {
  test::TempDir dir;
  test::ServerProcess s(serve_binary(), {"--base_model", model_dir(), "--max_queue", "1", "--test_delay_ms", "40"},
                        dir.file("serve.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  const json long_body = {{"prompt", "a long one"}, {"max_tokens", 200}, {"temperature", 0}};
  std::atomic<int> received{0};
  std::atomic<bool> abort{false};
  std::vector<std::string> a_events;
  std::thread a([&] { a_events = stream(s.port(), "/v1/completions", long_body, nullptr, 0, &received, &abort); });
  wait_for([&] { return received >= 2; }, "the first stream's chunks");
  Reply b;
  std::thread tb([&] { b = post(s.port(), "/v1/completions", json{{"prompt", "queued"}, {"max_tokens", 3}}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // b waits in the queue
  const Reply c = post(s.port(), "/v1/completions", json{{"prompt", "one too many"}, {"max_tokens", 3}});
  EXPECT_EQ(c.status, 503) << c.raw;
  EXPECT_EQ(c.body["error"]["code"], "queue_full") << c.raw;
  EXPECT_FALSE(c.retry_after.empty());
  abort = true;  // the streaming client leaves
  a.join();
  tb.join();
  EXPECT_EQ(b.status, 200) << b.raw;
  EXPECT_EQ(b.body["usage"]["completion_tokens"], 3);
  EXPECT_LT(a_events.size(), 150u);
  const std::regex went_away("a client went away: its generation stopped after ([0-9]+) of 200 tokens");
  std::smatch m;
  const std::string log = s.log();
  ASSERT_TRUE(std::regex_search(log, m, went_away)) << log;
  EXPECT_LT(std::stoi(m[1]), 150);

  // SIGTERM while a stream runs: it ends whole, then the server exits 0.
  received = 0, abort = false;
  std::vector<std::string> d_events;
  const json d_body = {{"prompt", "last"}, {"max_tokens", 15}, {"temperature", 0}};
  std::thread d([&] { d_events = stream(s.port(), "/v1/completions", d_body, nullptr, 0, &received); });
  wait_for([&] { return received >= 2; }, "the last stream's chunks");
  EXPECT_EQ(s.terminate(), 0);
  d.join();
  const Streamed ds = join(d_events);
  EXPECT_TRUE(ds.done);
  EXPECT_EQ(ds.finish_reason, "length");
  EXPECT_NE(s.log().find("SIGTERM: finishing the requests in flight"), std::string::npos) << s.log();
}

// Issue 17: a client that leaves a non-streamed request (nothing is written to it until the end) stops its
// generation too. A raw socket sends a 200-token request to a server slowed to 40 ms a token, then closes; the next
// request is answered long before the 8 s the abandoned one would take, and the log says where it stopped.
TEST_F(ServeHttp, NonStreamedClientThatLeavesStopsItsGeneration) {
  test::TempDir dir;
  test::ServerProcess s(serve_binary(), {"--base_model", model_dir(), "--test_delay_ms", "40"}, dir.file("serve.log"));
  std::string why;
  ASSERT_TRUE(s.wait_ready(&why)) << why;
  const std::string body = json{{"prompt", "a long one"}, {"max_tokens", 200}, {"temperature", 0}}.dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(s.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), ssize_t(request.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // some tokens come out
  ::close(fd);

  const auto start = std::chrono::steady_clock::now();
  const Reply next = post(s.port(), "/v1/completions", json{{"prompt", "next"}, {"max_tokens", 3}, {"temperature", 0}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(next.status, 200) << next.raw;
  EXPECT_LT(seconds, 4.0) << "the abandoned generation ran on";
  const std::regex went_away("a client went away: its generation stopped after ([0-9]+) of 200 tokens");
  std::smatch m;
  const std::string log = s.log();
  ASSERT_TRUE(std::regex_search(log, m, went_away)) << log;
  EXPECT_LT(std::stoi(m[1]), 100);
  EXPECT_EQ(s.terminate(), 0) << s.log();
}

}  // namespace
}  // namespace ll

#else
#include <gtest/gtest.h>
TEST(ServeHttp, NeedsCppHttplib) { GTEST_SKIP() << "built without cpp-httplib (libcpp-httplib-dev): no build/serve"; }
#endif
