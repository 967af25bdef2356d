// StreamingLLM's cache policy (attention sinks): Model::evict_kv_cache drops cached positions and re-rotates the
// later keys to their new index in the cache. Reference: in a one-layer model a token's key and value depend on the
// token and its position only, so the cache after evictions must equal a fresh cache of the kept tokens at positions
// 0..n−1 — the next logits equal a full forward (no cache) of the kept tokens plus the new ones, over turns that go
// far past the window.
#include <gtest/gtest.h>

#include "eval/command_flags.h"
#include "eval/commands.h"
#include "eval/eval_model.h"
#include "eval/streaming_chat.h"
#include "eval_test_util.h"
#include "neox_test_options.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

ModelOptions one_layer(ModelConfig config, int64_t seq_len) {
  ModelOptions o;
  o.config = config;
  o.config.num_hidden_layers = 1;
  o.batch = 1;
  o.seq_len = seq_len;
  return o;
}
ModelOptions one_layer(int64_t seq_len, double rope_factor) {
  ModelConfig c = test::small_config(40, 256);
  c.rope_scaling_factor = rope_factor;
  return one_layer(c, seq_len);
}

std::vector<double> last_row(Model& full, const std::vector<int32_t>& ids, int64_t vocab) {
  full.set_seq_len(int64_t(ids.size()));
  const std::vector<double> all = full.logits(ids.data());
  return std::vector<double>(all.end() - vocab, all.end());
}

TEST(StreamingLlm, EvictedCacheEqualsTheKeptTokensAtCachePositions) {
  ModelConfig neox = test::tiny_neox_config(/*parallel=*/true, /*rotary_dims=*/2);  // partial: 2 of 4
  neox.max_position_embeddings = 64;
  for (const auto& [name, config] : {std::pair{"llama", one_layer(4, 1.0).config},
                                     std::pair{"llama, RoPE factor 2", one_layer(4, 2.0).config},
                                     std::pair{"gpt-neox, rotary 2 of 4", neox}}) {
    std::unique_ptr<Backend> backend = create_backend("cpu");
    const int64_t start = 3, capacity = 14, vocab = config.vocab_size;
    Model cached(*backend, one_layer(config, 4)), full(*backend, one_layer(config, capacity));
    test::randomize(cached.params(), *backend, 7);
    test::randomize(full.params(), *backend, 7);
    cached.enable_kv_cache(capacity, /*evictable=*/true);
    std::vector<int32_t> kept;
    Rng rng(3);
    int evictions = 0;
    // Turns of 1..6 tokens (prompts and decode steps alike), evicting for room first as streaming-llm does.
    for (int turn = 0; turn < 25; ++turn) {
      std::vector<int32_t> add(size_t(1 + turn % 6));
      for (int32_t& t : add) t = int32_t(rng.uniform(0, double(vocab)));
      const int64_t over = int64_t(kept.size() + add.size()) - capacity;
      if (over > 0) {
        cached.evict_kv_cache(start, over);
        kept.erase(kept.begin() + start, kept.begin() + start + over);
        ++evictions;
      }
      const std::vector<double> got = cached.append_tokens(add.data(), int64_t(add.size()));
      kept.insert(kept.end(), add.begin(), add.end());
      ASSERT_EQ(cached.kv_cache_length(), int64_t(kept.size()));
      const std::vector<double> want = last_row(full, kept, vocab);
      double worst = 0;
      for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
      EXPECT_LT(worst, 2e-4) << name << ", turn " << turn << ", " << kept.size() << " cached";
    }
    EXPECT_GE(evictions, 10);
  }
}

TEST(StreamingLlm, EvictionOutsideTheCacheIsRefused) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  Model m(*backend, one_layer(4, 1.0));
  EXPECT_THROW(m.evict_kv_cache(0, 1), Error);  // no cache yet
  m.enable_kv_cache(8, /*evictable=*/true);
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  m.append_tokens(ids.data(), 5);
  EXPECT_THROW(m.evict_kv_cache(3, 3), Error);
  EXPECT_THROW(m.evict_kv_cache(-1, 1), Error);
  m.evict_kv_cache(1, 4);
  EXPECT_EQ(m.kv_cache_length(), 1);
}

// Only a cache that may evict reserves the rows eviction moves through: a plain KV cache is its keys and values.
TEST(StreamingLlm, OnlyAnEvictableCacheReservesEvictionScratch) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  const ModelOptions o = one_layer(4, 1.0);
  const size_t rows = size_t(16 * o.config.kv_dim()) * dtype_size(backend->dtypes().act);
  const size_t one = (rows + 255) / 256 * 256;  // the arena's alignment
  Model plain(*backend, o), evictable(*backend, o);
  plain.enable_kv_cache(16);
  evictable.enable_kv_cache(16, /*evictable=*/true);
  EXPECT_EQ(plain.kv_cache_bytes(), 2 * one);      // one layer's keys and values
  EXPECT_EQ(evictable.kv_cache_bytes(), 3 * one);  // and the scratch
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5};
  plain.append_tokens(ids.data(), 5);
  std::string message;
  try {
    plain.evict_kv_cache(1, 2);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("evict_kv_cache: this KV cache was enabled without eviction"), std::string::npos) << message;
  // A session: streaming reserves the scratch, a plain one does not.
  Model session_model(*backend, o);
  { InferenceSession s(session_model, 16); }
  EXPECT_EQ(session_model.kv_cache_bytes(), 2 * one);
  { InferenceSession s(session_model, StreamingWindow{2, 14}); }
  EXPECT_EQ(session_model.kv_cache_bytes(), 3 * one);
}

// An endless chat: the session remembers only what its cache holds (plus a count and a fingerprint of the rest, for
// prefix reuse), however many turns go past the window; a full-conversation prompt still continues it.
TEST(StreamingLlm, EndlessChatKeepsTheSessionsTokenRecordBounded) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  Model m(*backend, one_layer(4, 1.0));
  test::randomize(m.params(), *backend, 5);
  const StreamingWindow window{2, 10};
  InferenceSession session(m, window);
  std::vector<int32_t> conversation;  // the test's own record of everything fed
  int64_t fed = 0;
  for (int turn = 0; turn < 60; ++turn) {
    const std::vector<int32_t> ids = {int32_t(3 + turn % 30), int32_t(4 + turn % 20), 5};
    const GenerateResult r = answer_turn(session, ids, 3, -1);
    fed += int64_t(ids.size() + r.tokens.size() - 1);  // the last generated token is never fed
    conversation.insert(conversation.end(), ids.begin(), ids.end());
    conversation.insert(conversation.end(), r.tokens.begin(), r.tokens.end() - 1);
    ASSERT_LE(int64_t(session.tokens().size()), window.start_size + window.recent_size) << "turn " << turn;
    ASSERT_EQ(int64_t(session.tokens().size()), m.kv_cache_length()) << "turn " << turn;
    ASSERT_EQ(session.fed(), fed) << "turn " << turn;
  }
  EXPECT_GT(session.evicted(), 10 * window.recent_size);
  // The cached record is the first start_size tokens and the most recent ones.
  std::vector<int32_t> cached(conversation.begin(), conversation.begin() + window.start_size);
  cached.insert(cached.end(), conversation.end() - (m.kv_cache_length() - window.start_size), conversation.end());
  EXPECT_EQ(session.tokens(), cached);
  // A prompt that repeats the whole conversation and adds to it (a chat server's request) continues the cache;
  // one that changed an evicted token starts over.
  std::vector<int32_t> more = conversation;
  more.push_back(7);
  session.prefill(more, /*reuse_prefix=*/true, 1);
  EXPECT_EQ(session.last_reused(), int64_t(conversation.size()));
  std::vector<int32_t> changed = more;
  changed[5] += 1;
  changed.push_back(8);
  session.prefill(changed, /*reuse_prefix=*/true, 1);
  EXPECT_EQ(session.last_reused(), 0);
  EXPECT_LE(int64_t(session.tokens().size()), window.start_size + window.recent_size);
}

// ---- Against the independent reference: scripts/make_streaming_fixture.py (a numpy port of streaming-llm's
// StartRecentKVCache and pos-shift attention, keys cached before RoPE) on tests/fixtures/hf_tiny. ----

using nlohmann::json;

json streaming_reference() {
  return json::parse(read_text_file(test::fixtures_dir() + "/streaming_reference.json"));
}

EvalModel load_hf_tiny(const std::string& device = "cpu") {
  EvalModelOptions o;
  o.base_model = test::fixtures_dir() + "/hf_tiny";
  o.device = device;
  o.seq_len = 16;  // prefill chunk
  std::ostringstream log;
  return load_eval_model(o, log);
}

double worst_difference(const std::vector<double>& got, const json& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i].get<double>()));
  return worst;
}

// Every step's logits of a multi-turn conversation (turn = evict_for_space(ids + max_gen_len), one forward over the
// ids, greedy decode; the last token unfed), then the same conversation through answer_turn: the greedy tokens.
void check_turns(Model& model, double tolerance) {
  const json ref = streaming_reference()["turns"];
  const StreamingWindow window{ref["start_size"].get<int64_t>(), ref["recent_size"].get<int64_t>()};
  const int64_t max_gen = ref["max_gen_len"];
  {
    InferenceSession session(model, window);
    std::vector<int32_t> conversation;
    for (size_t t = 0; t < ref["turns"].size(); ++t) {
      const json& turn = ref["turns"][t];
      for (int32_t id : turn["ids"].get<std::vector<int32_t>>()) conversation.push_back(id);
      std::vector<double> logits = session.prefill(conversation, /*reuse_prefix=*/true, max_gen);
      const std::vector<int32_t> tokens = turn["tokens"];
      for (size_t i = 0; i < tokens.size(); ++i) {
        EXPECT_LT(worst_difference(logits, turn["logits"][i]), tolerance) << "turn " << t << ", step " << i;
        if (i + 1 < tokens.size()) logits = session.append(tokens[i]);
        if (i + 1 < tokens.size()) conversation.push_back(tokens[i]);
      }
      EXPECT_EQ(model.kv_cache_length(), turn["cached_after"].get<int64_t>()) << "turn " << t;
    }
    EXPECT_GT(session.evicted(), 2 * window.recent_size) << "the conversation went far past the window";
  }
  InferenceSession session(model, window);
  for (size_t t = 0; t < ref["turns"].size(); ++t) {
    const json& turn = ref["turns"][t];
    const GenerateResult r = answer_turn(session, turn["ids"].get<std::vector<int32_t>>(), max_gen, 2);
    EXPECT_EQ(r.tokens, turn["tokens"].get<std::vector<int32_t>>()) << "turn " << t;
  }
}

TEST(StreamingLlmReference, TurnsPastTheWindowMatchStreamingLlm) {
  EvalModel m = load_hf_tiny();
  check_turns(*m.model, 1e-4);
}

// One prompt, more tokens than the window: an eviction before every decode step once the cache is full.
TEST(StreamingLlmReference, GenerationPastTheWindowMatches) {
  const json ref = streaming_reference()["long_generation"];
  EvalModel m = load_hf_tiny();
  const StreamingWindow window{ref["start_size"].get<int64_t>(), ref["recent_size"].get<int64_t>()};
  InferenceSession session(*m.model, window);
  const std::vector<int32_t> tokens = ref["tokens"];
  std::vector<double> logits = session.prefill(ref["ids"].get<std::vector<int32_t>>(), false, ref["max_gen_len"]);
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_LT(worst_difference(logits, ref["logits"][i]), 1e-4) << "step " << i;
    if (i + 1 < tokens.size()) logits = session.append(tokens[i]);
  }
  EXPECT_EQ(m.model->kv_cache_length(), window.start_size + window.recent_size);

  InferenceSession again(*m.model, window);
  GenerateOptions go;
  go.max_new_tokens = ref["max_gen_len"];
  go.sampling.temperature = 0;
  go.eos_id = 2;
  EXPECT_EQ(generate(again, ref["ids"].get<std::vector<int32_t>>(), go).tokens, tokens);
}

// The GPU path goes through the same backend ops (copy, rope_backward on cached keys): it must give the CPU's
// answers (bf16, so greedy tokens and loose logits).
TEST(StreamingLlmReference, CudaMatchesTheReference) {
  bool usable = false;
  std::string why = "this build has no CUDA backend";
  for (const BackendInfo& info : list_backends())
    if (info.name == "cuda") usable = info.available, why = info.description;
  if (!usable) GTEST_SKIP() << "no usable CUDA device: " << why;
  EvalModel m = load_hf_tiny("cuda");
  check_turns(*m.model, 0.1);
}

// ---- The commands: build/eval streaming and generate --enable_streaming ----

class StreamingCommands : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string tokenizer_json = test::write_chatml_tokenizer_json(dir_.path());
    const Tokenizer tok = Tokenizer::load(tokenizer_json);
    test::write_random_hf_folder(dir_.path(), test::small_config(tok.vocab_size(), 256), 17, 0.5);
    json records = json::array();
    for (const char* q : {"hello world", "what is a cache?", "tell me more about it", "and again", "once more"})
      records.push_back({{"instruction", q}, {"output", "ignored"}});
    write_file_atomic(dir_.file("turns.json"), records.dump());
  }
  StreamingCommand command(bool streaming, int64_t recent) {
    StreamingCommand c;
    c.common.base_model = dir_.path();
    c.common.progress = false;
    c.test_filepath = dir_.file("turns.json");
    c.max_gen_len = 12;
    c.streaming.enable_streaming = streaming;
    c.streaming.start_size = 4;
    c.streaming.recent_size = recent;
    return c;
  }
  test::TempDir dir_;
};

TEST_F(StreamingCommands, StreamingAnswersEveryTurnInAFixedCache) {
  std::ostringstream out, log;
  const json small = run_streaming_command(command(true, 40), out, log);
  ASSERT_EQ(small["turns"].size(), 5u);
  EXPECT_NE(out.str().find("USER: what is a cache?\n\nASSISTANT: "), std::string::npos) << out.str();
  for (const json& t : small["turns"]) {
    EXPECT_FALSE(t["tokens"].empty());
    EXPECT_LE(t["cached_tokens"].get<int64_t>(), 44);
  }
  EXPECT_GT(small["turns"].back()["evicted_tokens"].get<int64_t>(), 0) << small.dump();
  EXPECT_GT(small["fed_tokens"].get<int64_t>(), 44);

  // A window that holds everything evicts nothing and answers as the plain growing cache does.
  const json big = run_streaming_command(command(true, 200), out, log);
  const json plain = run_streaming_command(command(false, 8192), out, log);
  EXPECT_EQ(big["turns"].back()["evicted_tokens"], 0);
  for (size_t t = 0; t < 5; ++t) EXPECT_EQ(big["turns"][t]["tokens"], plain["turns"][t]["tokens"]) << t;
  EXPECT_EQ(small["turns"][0]["tokens"], plain["turns"][0]["tokens"]) << "the first turn fits the small window";
}

TEST_F(StreamingCommands, WithoutStreamingAConversationPastTheContextIsRefused) {
  StreamingCommand c = command(false, 8192);
  c.max_gen_len = 250;  // each turn reserves more than the 256-token context can give twice
  std::ostringstream out, log;
  try {
    run_streaming_command(c, out, log);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not fit the KV cache"), std::string::npos) << e.what();
  }
}

TEST_F(StreamingCommands, BadTestFilesNameTheFileAndRecord) {
  StreamingCommand c = command(true, 40);
  std::ostringstream out, log;
  write_file_atomic(dir_.file("bad.json"), R"([{"instruction": "a"}, {"input": "b"}])");
  c.test_filepath = dir_.file("bad.json");
  try {
    run_streaming_command(c, out, log);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("record 1 has no string field `instruction`"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
  c.test_filepath = dir_.file("missing.json");
  EXPECT_THROW(run_streaming_command(c, out, log), Error);
}

TEST_F(StreamingCommands, GenerateWithStreamingRunsPastTheWindow) {
  GenerateCommand g;
  g.common.base_model = dir_.path();
  g.common.progress = false;
  g.prompt = "hello world";
  g.template_name = "none";
  g.temperature = 0;
  g.max_gen_len = 60;
  std::ostringstream out, log;
  const json plain = run_generate_command(g, out, log);
  g.streaming.enable_streaming = true;
  g.streaming.start_size = 4;
  g.streaming.recent_size = 200;
  const json wide = run_generate_command(g, out, log);
  EXPECT_EQ(wide["tokens"], plain["tokens"]);
  EXPECT_EQ(wide["evicted_tokens"], 0);
  g.streaming.recent_size = 16;
  g.max_gen_len = 300;  // past the model's context of 256: allowed in a fixed window
  const json narrow = run_generate_command(g, out, log);
  if (!narrow["stopped_at_eos"].get<bool>()) {
    EXPECT_EQ(narrow["tokens"].size(), 300u);
  }
  EXPECT_GT(narrow["evicted_tokens"].get<int64_t>(), 0);
}

TEST(StreamingFlags, BareEnableStreamingMeansTrueAndRangesAreChecked) {
  StreamingCommand c;
  Flags f("eval streaming", "");
  add_streaming_command_flags(f, c);
  // LongLoRA's README line (its `----enable_streaming` typo aside), flash attention flag included.
  const char* argv[] = {"eval", "--enable_streaming", "--start_size", "2", "--model_name_or_path", "m",
                        "--use_flash_attn", "True"};
  ASSERT_TRUE(f.parse(8, const_cast<char**>(argv), 1));
  EXPECT_TRUE(c.streaming.enable_streaming);
  EXPECT_EQ(c.streaming.start_size, 2);
  EXPECT_EQ(c.common.base_model, "m");
  StreamingCommand bad;
  Flags g("eval streaming", "");
  add_streaming_command_flags(g, bad);
  const char* argv2[] = {"eval", "--recent_size", "0"};
  EXPECT_THROW(g.parse(3, const_cast<char**>(argv2), 1), Error);
}

}  // namespace
}  // namespace ll
