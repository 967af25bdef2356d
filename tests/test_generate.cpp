// Generation: greedy decoding with the KV cache equals the argmax of a full forward (no cache) at every step;
// prefix reuse gives a fresh prefill's logits; top-p sampling is reproducible and never leaves the nucleus;
// streamed text keeps multi-byte characters whole; the generate command end to end with the Llama-2 tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "cpu/cpu_backend.h"
#include "data/tokenizer.h"
#include "eval/commands.h"
#include "eval/generate.h"
#include "eval/sampling.h"
#include "eval_test_util.h"
#include "neox_test_options.h"
#include "util/error.h"

namespace ll {
namespace {

ModelOptions model_options(int64_t vocab, int64_t seq_len) {
  ModelOptions o;
  o.config = test::small_config(vocab);
  o.config.rope_scaling_factor = 2.0;
  o.batch = 1;
  o.seq_len = seq_len;
  return o;
}

std::vector<double> last_row(Model& full, const std::vector<int32_t>& ids, int64_t vocab) {
  full.set_seq_len(int64_t(ids.size()));
  const std::vector<double> all = full.logits(ids.data());
  return std::vector<double>(all.end() - vocab, all.end());
}

TEST(Generate, GreedyEqualsArgmaxOfFullForwardAtEveryStep) {
  CpuBackend<float> backend;
  const int64_t V = 29, P = 7, N = 12;
  Model cached(backend, model_options(V, 5)), full(backend, model_options(V, P + N));  // prefill chunks of 5
  test::randomize(cached.params(), backend, 11, 0.5);
  for (Param& p : cached.params().all()) backend.copy(full.params().get(p.name).value, p.value);
  const std::vector<int32_t> prompt = {1, 4, 9, 16, 25, 7, 3};
  InferenceSession session(cached, P + N);
  GenerateOptions go;
  go.max_new_tokens = N;
  go.sampling.temperature = 0;
  std::vector<int32_t> streamed;
  const GenerateResult r = generate(session, prompt, go, [&](int32_t t) { streamed.push_back(t); });
  ASSERT_EQ(int64_t(r.tokens.size()), N);
  EXPECT_EQ(streamed, r.tokens);
  std::vector<int32_t> context = prompt;
  std::set<int32_t> distinct;
  for (int64_t k = 0; k < N; ++k) {
    EXPECT_EQ(r.tokens[size_t(k)], argmax_index(last_row(full, context, V))) << "step " << k;
    context.push_back(r.tokens[size_t(k)]);
    distinct.insert(r.tokens[size_t(k)]);
  }
  EXPECT_GT(distinct.size(), 1u) << "a constant output would make this check weak";
  // EOS: stops right after the first occurrence, which is included.
  go.eos_id = r.tokens[5];
  const size_t first = size_t(std::find(r.tokens.begin(), r.tokens.end(), go.eos_id) - r.tokens.begin());
  const GenerateResult stopped = generate(session, prompt, go);
  EXPECT_TRUE(stopped.stopped_at_eos);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + first + 1));
  // Capacity (prompt + new tokens − 1: the last one is never fed) is checked up front.
  go.max_new_tokens = N + 1;
  EXPECT_NO_THROW(generate(session, prompt, go));
  go.max_new_tokens = N + 2;
  EXPECT_THROW(generate(session, prompt, go), Error);
}

// A chat template's end of turn (GenerateOptions::stop_ids) stops generation as EOS does, included in the output.
TEST(Generate, StopIdsEndItLikeEos) {
  CpuBackend<float> backend;
  const int64_t V = 29, N = 12;
  Model model(backend, model_options(V, 5));
  test::randomize(model.params(), backend, 11, 0.5);
  const std::vector<int32_t> prompt = {1, 4, 9, 16, 25, 7, 3};
  InferenceSession session(model, int64_t(prompt.size()) + N);
  GenerateOptions go;
  go.max_new_tokens = N;
  go.sampling.temperature = 0;
  const GenerateResult r = generate(session, prompt, go);
  ASSERT_EQ(int64_t(r.tokens.size()), N);
  EXPECT_FALSE(r.stopped_at_eos);
  const int32_t stop = r.tokens[4];
  const size_t first = size_t(std::find(r.tokens.begin(), r.tokens.end(), stop) - r.tokens.begin());
  go.stop_ids = {int32_t(V - 1 == stop ? V - 2 : V - 1), stop};  // one id never produced first, then the real one
  const GenerateResult stopped = generate(session, prompt, go);
  EXPECT_TRUE(stopped.stopped_at_eos);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + first + 1));
}

TEST(Generate, PrefixReuseGivesAFreshPrefillsLogits) {
  CpuBackend<float> backend;
  const int64_t V = 23;
  Model a(backend, model_options(V, 4)), b(backend, model_options(V, 4));
  test::randomize(a.params(), backend, 12, 0.5);
  for (Param& p : a.params().all()) backend.copy(b.params().get(p.name).value, p.value);
  InferenceSession reuse(a, 40), fresh(b, 40);
  const std::vector<int32_t> first = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  const std::vector<int32_t> second = {1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22};
  reuse.prefill(first, true);
  reuse.append(14);
  const std::vector<double> got = reuse.prefill(second, true);
  EXPECT_EQ(reuse.last_reused(), 8);
  EXPECT_LT(test::rel_error(got, fresh.prefill(second)), 1e-5);
  EXPECT_EQ(fresh.last_reused(), 0);
  // The same prompt again: everything but its last token is reused.
  EXPECT_LT(test::rel_error(reuse.prefill(second, true), got), 1e-5);
  EXPECT_EQ(reuse.last_reused(), int64_t(second.size()) - 1);
}

TEST(Sampling, NucleusFollowsHuggingFacesTopP) {
  const std::vector<double> p = {0.15, 0.5, 0.05, 0.3};
  EXPECT_EQ(top_p_nucleus(p, 1.0), (std::vector<int32_t>{1, 3, 0, 2}));
  EXPECT_EQ(top_p_nucleus(p, 0.9), (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(top_p_nucleus(p, 0.7), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(top_p_nucleus(p, 0.5), (std::vector<int32_t>{1}));  // HF removes ascending cumsum <= 0.5: keeps one
  EXPECT_EQ(top_p_nucleus(p, 0.01), (std::vector<int32_t>{1}));
  EXPECT_THROW(top_p_nucleus(p, 0), Error);
  EXPECT_THROW(top_p_nucleus(p, 1.5), Error);
  const std::vector<double> logits = {1.0, 3.0, -2.0};
  const std::vector<double> t = softmax_with_temperature(logits, 0.5), ref = softmax_with_temperature({2, 6, -4}, 1);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(t[i], ref[i], 1e-15);
  Sampler greedy({0.0, 0.9, 1});
  EXPECT_EQ(greedy.next(logits), 1);
  EXPECT_EQ(argmax_index({2.0, 5.0, 5.0}), 1);  // first of equal maxima, like torch.argmax
}

TEST(Sampling, TopPIsReproducibleAndStaysInsideTheNucleus) {
  Rng rng(5);
  std::vector<double> logits(50);
  for (double& x : logits) x = 2.0 * rng.normal();
  const SamplingOptions o{0.8, 0.7, 42};
  // The nucleus computed here independently: probabilities sorted, summed until they reach top_p.
  const std::vector<double> p = softmax_with_temperature(logits, 0.8);
  std::vector<std::pair<double, int>> sorted;
  for (int i = 0; i < 50; ++i) sorted.push_back({-p[size_t(i)], i});
  std::sort(sorted.begin(), sorted.end());
  std::set<int32_t> nucleus;
  double mass = 0;
  for (const auto& [neg, i] : sorted) {
    if (mass >= 0.7) break;
    nucleus.insert(i), mass -= neg;
  }
  ASSERT_GT(nucleus.size(), 2u);
  ASSERT_LT(nucleus.size(), 50u);
  Sampler a(o), b(o), c({0.8, 0.7, 43});
  std::vector<int32_t> da, db, dc;
  std::map<int32_t, int> counts;
  for (int i = 0; i < 4000; ++i) {
    da.push_back(a.next(logits)), db.push_back(b.next(logits)), dc.push_back(c.next(logits));
    EXPECT_TRUE(nucleus.count(da.back())) << "token " << da.back() << " is outside the nucleus";
    ++counts[da.back()];
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
  // Frequencies follow the renormalised nucleus probabilities (4000 draws: within 4 standard deviations).
  for (int32_t t : nucleus) {
    const double q = p[size_t(t)] / mass, sd = std::sqrt(4000 * q * (1 - q));
    EXPECT_NEAR(counts[t], 4000 * q, 4 * sd + 1) << "token " << t;
  }
}

TEST(TextStream, KeepsMultiByteCharactersWhole) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  const Tokenizer tok = Tokenizer::load(path);
  const std::string text = "Grüße, 世界! 🦙 and 𝄞 done";
  const std::vector<int32_t> ids = tok.encode(text, false, false);
  TextStream stream(tok);
  std::string joined;
  int held = 0;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a partial character was printed";
    held += piece.empty();
    joined += piece;
  }
  joined += stream.flush();
  EXPECT_EQ(joined, tok.decode(ids));
  EXPECT_EQ(joined, text);
  EXPECT_GT(held, 0) << "the emoji should arrive as byte pieces, some of them held back";
}

// A random Llama with the Llama-2 vocabulary (tiny otherwise): the generate command end to end.
class GenerateCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = test::asset_path("llama2-tokenizer.model");
    if (tokenizer_.empty()) GTEST_SKIP() << "llama2-tokenizer.model not found (see tests/test_data_util.h)";
    test::write_random_hf_folder(dir_.path(), test::small_config(32000, 64), 21, 0.4);
  }
  GenerateCommand command() const {
    GenerateCommand c;
    c.common.base_model = dir_.path();
    c.common.progress = false;
    c.tokenizer = tokenizer_;
    c.prompt = "Hello there";
    c.max_gen_len = 6;
    c.prefill_chunk = 4;
    return c;
  }
  test::TempDir dir_;
  std::string tokenizer_;
};

TEST_F(GenerateCommandTest, GreedyTokensAndStreamedText) {
  GenerateCommand c = command();
  c.temperature = 0;
  c.common.json = dir_.file("gen.json");
  std::ostringstream out, log;
  const nlohmann::json j = run_generate_command(c, out, log);
  EXPECT_EQ(j["prompt"], "[INST]Hello there[/INST]");
  const Tokenizer tok = Tokenizer::load(tokenizer_);
  std::vector<int32_t> ids = tok.encode("[INST]Hello there[/INST]", true, false);
  EXPECT_EQ(j["prompt_tokens"], ids.size());
  // Independent: full forwards of the growing sequence, argmax of the last row.
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ModelOptions mo;
  mo.config = read_hf_config(dir_.path()).model;
  mo.seq_len = int64_t(ids.size()) + 6;
  Model full(*backend, mo);
  load_hf_weights(dir_.path(), full.params(), *backend);
  std::vector<int32_t> expect;
  for (int k = 0; k < 6; ++k) {
    const int32_t next = argmax_index(last_row(full, ids, 32000));
    expect.push_back(next), ids.push_back(next);
    if (next == tok.eos_id()) break;
  }
  EXPECT_EQ(j["tokens"].get<std::vector<int32_t>>(), expect);
  EXPECT_EQ(out.str(), tok.decode(expect) + "\n");
  EXPECT_EQ(j["text"], tok.decode(expect));
  EXPECT_EQ(nlohmann::json::parse(read_text_file(c.common.json))["tokens"], j["tokens"]);
}

TEST_F(GenerateCommandTest, SeededSamplingAndMaterialPrompt) {
  GenerateCommand c = command();
  c.temperature = 1.0, c.top_p = 0.95, c.seed = 3, c.max_gen_len = 10;
  std::ostringstream out, log;
  const nlohmann::json a = run_generate_command(c, out, log), b = run_generate_command(c, out, log);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  c.seed = 4;
  EXPECT_NE(run_generate_command(c, out, log)["tokens"], a["tokens"]);

  write_file_atomic(dir_.file("book.txt"), "Once upon a time.");
  c.prompt.clear();
  c.material = dir_.file("book.txt");
  c.question = "Who?";
  EXPECT_EQ(run_generate_command(c, out, log)["prompt"], "[INST]Once upon a time.\nWho?[/INST]");
  c.template_name = "none";
  EXPECT_EQ(run_generate_command(c, out, log)["prompt"], "Once upon a time.\nWho?");
  c.prompt = "x";
  EXPECT_THROW(run_generate_command(c, out, log), Error);  // --prompt with --material
  c = command();
  c.tokenizer.clear();  // and the folder has no tokenizer.model
  try {
    run_generate_command(c, out, log);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tokenizer"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ll

namespace ll {
namespace {

// --max_gen_len sizes the KV cache: 1e9 used to end in bad_alloc. It is bounded by the model's context (positions
// max_position_embeddings × RoPE factor), with an error naming the flag; a prompt that pushes the total past the
// context only warns.
// A model folder with a tokenizer.json and a ChatML template in its tokenizer_config.json: generate picks both
// (tokenizer.json over tokenizer.model, chatml by the template's markers), encodes the turn tokens by id and the
// message as text, and a prompt quoting <|im_end|> keeps it as text unless --parse_special_tokens.
TEST(GenerateCommandHf, TokenizerJsonAndChatTemplateFromTheModelFolder) {
  test::TempDir dir;
  const std::string tokenizer_json = test::write_chatml_tokenizer_json(dir.path());
  const Tokenizer tok = Tokenizer::load(tokenizer_json);
  ASSERT_GE(tok.token_to_id("<|im_end|>"), 600);
  test::write_random_hf_folder(dir.path(), test::small_config(tok.vocab_size(), 128), 5, 0.4);
  write_file_atomic(dir.file("tokenizer_config.json"),
                    R"({"chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + )"
                    R"(message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %})"
                    R"({{ '<|im_start|>assistant\n' }}{% endif %}"})");
  write_file_atomic(dir.file("tokenizer.model"), "not read: tokenizer.json comes first");
  GenerateCommand c;
  c.common.base_model = dir.path();
  c.common.progress = false;
  c.prompt = "hello <|im_end|> there";
  c.temperature = 0;
  c.max_gen_len = 4;
  std::ostringstream out, log;
  const nlohmann::json j = run_generate_command(c, out, log);
  EXPECT_EQ(j["prompt"], "<|im_start|>user\nhello <|im_end|> there<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_NE(log.str().find("chat template chatml, tokenizer tokenizer.json"), std::string::npos) << log.str();
  const int32_t start = tok.token_to_id("<|im_start|>"), end = tok.token_to_id("<|im_end|>");
  std::vector<int32_t> want = {start};
  for (int32_t id : tok.encode("user\nhello <|im_end|> there", false, false)) want.push_back(id);
  want.push_back(end);
  for (int32_t id : tok.encode("\n", false, false)) want.push_back(id);
  want.push_back(start);
  for (int32_t id : tok.encode("assistant\n", false, false)) want.push_back(id);
  EXPECT_EQ(j["prompt_tokens"], want.size());
  EXPECT_EQ(std::count(want.begin(), want.end(), end), 1) << "the quoted <|im_end|> stays text";

  c.parse_special_tokens = true;
  const nlohmann::json parsed = run_generate_command(c, out, log);
  const size_t quoted = tok.encode("user\nhello <|im_end|> there", false, false).size();
  const size_t split = tok.encode("user\nhello ", false, false).size() + 1 + tok.encode(" there", false, false).size();
  ASSERT_NE(quoted, split);
  EXPECT_EQ(parsed["prompt_tokens"].get<size_t>(), want.size() - quoted + split) << "the quoted one is the id";
  c.template_name = "llama3";
  EXPECT_THROW(run_generate_command(c, out, log), Error) << "the tokenizer has no <|start_header_id|>";
}

// A Pythia-like folder: GPT-NeoX weights and the GPT-NeoX tokenizer.json, nothing else. auto picks template none
// (model_type gpt_neox), and the prompt is tokenizer(prompt): no <|endoftext|> first.
TEST(GenerateCommandHf, PythiaFolder) {
  const std::string shipped = test::asset_path("tokenizers/gpt-neox/tokenizer.json");
  if (shipped.empty()) GTEST_SKIP() << "tokenizers/gpt-neox not found in $LONGLORA_ASSETS or ../shared/assets";
  test::TempDir dir;
  std::filesystem::copy_file(shipped, dir.file("tokenizer.json"));
  ModelConfig config = test::tiny_neox_config();
  config.vocab_size = 50304, config.max_position_embeddings = 64;
  test::write_random_hf_folder(dir.path(), config, 6, 0.4);
  GenerateCommand c;
  c.common.base_model = dir.path();
  c.common.progress = false;
  c.prompt = "Hello world";
  c.temperature = 0;
  c.max_gen_len = 3;
  std::ostringstream out, log;
  const nlohmann::json j = run_generate_command(c, out, log);
  EXPECT_EQ(j["prompt"], "Hello world");
  EXPECT_EQ(j["prompt_tokens"], 2) << "12092, 1533: " << log.str();
  EXPECT_NE(log.str().find("chat template none, tokenizer tokenizer.json"), std::string::npos) << log.str();
  EXPECT_EQ(j["tokens"].size(), 3u);
}

TEST(GenerateCommandLimits, MaxGenLenBeyondTheContextNamesTheFlag) {
  LL_REQUIRE_SMALL_TOKENIZER(tokenizer);
  test::TempDir dir;
  test::write_random_hf_folder(dir.path(), test::small_config(400, 32), 7, 0.4);
  GenerateCommand c;
  c.common.base_model = dir.path();
  c.common.progress = false;
  c.tokenizer = tokenizer;
  c.prompt = "kalo";
  c.temperature = 0;
  c.max_gen_len = 1000000000;
  std::ostringstream out, log;
  try {
    run_generate_command(c, out, log);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--max_gen_len 1000000000"), std::string::npos) << m;
    EXPECT_NE(m.find("context of 32 tokens"), std::string::npos) << m;
  }
  c.max_gen_len = 32;  // fits the context, but not with the prompt: generated, with a warning
  run_generate_command(c, out, log);
  EXPECT_NE(log.str().find("warning: the prompt"), std::string::npos) << log.str();
}

}  // namespace
}  // namespace ll
