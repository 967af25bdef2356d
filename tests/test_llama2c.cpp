// llama2.c legacy checkpoint importer: the Meta → HF q/k row permutation on a hand-worked example, every
// tensor landing in the right parameter (hand-built files), header and size validation errors, and parity of
// the real trained checkpoint ../shared/assets/stories260K.bin with llama2.c's own math
// (scripts/make_stories_fixture.py wrote tests/fixtures/stories260K_logits.safetensors).
#include "io/llama2c.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/model.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "util/md5.h"

namespace fs = std::filesystem;

namespace ll {
namespace {

// ---- small helpers ------------------------------------------------------------------------------------------

// The fixture records the md5 of the asset it was made from.
std::string file_md5(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return md5_hex(bytes.data(), bytes.size());
}

std::vector<double> read_f32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry& e = f.entry(name);
  EXPECT_EQ(e.dtype, DType::F32) << name;
  std::vector<float> v(e.nbytes / 4);
  std::memcpy(v.data(), e.data, e.nbytes);
  return std::vector<double>(v.begin(), v.end());
}

std::vector<int32_t> read_i32(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsEntry& e = f.entry(name);
  EXPECT_EQ(e.dtype, DType::I32) << name;
  std::vector<int32_t> v(e.nbytes / 4);
  std::memcpy(v.data(), e.data, e.nbytes);
  return v;
}

// ---- the permutation --------------------------------------------------------------------------------------------

TEST(Llama2cPermutation, HandWorkedExample) {
  // 2 heads of head_dim 4, 2 input columns; Meta row i holds {10·i, 10·i + 1}. Within a head HF orders the rows
  // (pair 0 first element, pair 1 first element, pair 0 second element, pair 1 second element) = Meta rows 0, 2, 1, 3.
  std::vector<float> meta(8 * 2);
  for (int i = 0; i < 8; ++i) meta[2 * i] = float(10 * i), meta[2 * i + 1] = float(10 * i + 1);
  const std::vector<float> hf = permute_meta_to_hf_rows(meta, 2, 8, 2);
  const std::vector<float> expected = {0, 1, 20, 21, 10, 11, 30, 31, 40, 41, 60, 61, 50, 51, 70, 71};
  EXPECT_EQ(hf, expected);
  // head_dim 2 (one pair per head) is the identity.
  EXPECT_EQ(permute_meta_to_hf_rows(meta, 4, 8, 2), meta);
  // Shapes that are not heads of an even head dim are refused.
  EXPECT_THROW(permute_meta_to_hf_rows(meta, 3, 8, 2), Error);
  EXPECT_THROW(permute_meta_to_hf_rows(meta, 8, 8, 2), Error);
  EXPECT_THROW(permute_meta_to_hf_rows(meta, 2, 8, 3), Error);
}

// ---- hand-built files ---------------------------------------------------------------------------------------------

class Llama2cFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "l2c_test_XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << "mkdtemp failed for " << templ;
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = dir_ + "/" + name;
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }

  // Header + `floats` floats whose values are their index (so every tensor's source position is recognisable).
  static std::string file_bytes(std::initializer_list<int32_t> header, size_t floats) {
    std::string s(reinterpret_cast<const char*>(header.begin()), header.size() * 4);
    for (size_t i = 0; i < floats; ++i) {
      const float v = float(i);
      s.append(reinterpret_cast<const char*>(&v), 4);
    }
    return s;
  }

  // Float count of a well-formed file with dim 8, hidden 12, 2 layers, 2 heads, 1 KV head, |vocab| 16, seq_len 4.
  static size_t tiny_floats(bool shared) {
    const size_t D = 8, F = 12, L = 2, kv = 4, V = 16, S = 4, Dh = 4;
    return V * D + L * D + L * D * D + 2 * L * kv * D + L * D * D + L * D + 3 * L * F * D + D + 2 * S * Dh / 2 +
           (shared ? 0 : V * D);
  }

  // Opening `bytes` must fail with an ll::Error whose message names the file and holds every phrase.
  void expect_error(const std::string& name, const std::string& bytes, std::initializer_list<std::string> phrases) {
    const std::string p = write(name, bytes);
    try {
      read_llama2c_header(p);
      ADD_FAILURE() << name << ": expected an error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << "message does not name the file: " << msg;
      for (const std::string& ph : phrases)
        EXPECT_NE(msg.find(ph), std::string::npos) << "missing '" << ph << "' in: " << msg;
    }
  }

  std::string dir_;
};

TEST_F(Llama2cFile, ImportsEveryTensorIntoItsParameter) {
  for (bool shared : {true, false}) {
    SCOPED_TRACE(shared ? "shared classifier" : "separate classifier");
    const std::string p = write("tiny.bin", file_bytes({8, 12, 2, 2, 1, shared ? 16 : -16, 4}, tiny_floats(shared)));
    const Llama2cHeader h = read_llama2c_header(p);
    EXPECT_EQ(h.shared_classifier(), shared);
    const ModelConfig c = llama2c_config(h);
    EXPECT_EQ(c.hidden_size, 8);
    EXPECT_EQ(c.intermediate_size, 12);
    EXPECT_EQ(c.num_hidden_layers, 2);
    EXPECT_EQ(c.num_attention_heads, 2);
    EXPECT_EQ(c.num_key_value_heads, 1);
    EXPECT_EQ(c.vocab_size, 16);
    EXPECT_EQ(c.max_position_embeddings, 4);
    EXPECT_EQ(c.tie_word_embeddings, shared);
    EXPECT_EQ(c.norm_eps, 1e-5);
    EXPECT_EQ(c.rope_theta, 10000.0);
    EXPECT_EQ(c.rope_scaling_factor, 1.0);

    std::unique_ptr<Backend> be = create_backend("cpu");
    ParamStore ps(*be, c, LoraConfig{}, TrainableConfig{});
    load_llama2c(p, *be, ps);
    // Expected value of element i of a tensor that starts at float `start` of the file (values = file index).
    auto expect_block = [&](const std::string& name, size_t start, std::vector<int> row_order = {}) {
      const std::vector<double> got = download_f64(*be, ps.get(name).value);
      const int64_t cols = ps.get(name).shape.size() == 2 ? ps.get(name).shape[1] : int64_t(got.size());
      for (size_t i = 0; i < got.size(); ++i) {
        size_t row = i / size_t(cols), col = i % size_t(cols);
        const size_t group = row_order.size();
        if (group) row = (row / group) * group + size_t(row_order[row % group]);
        ASSERT_EQ(got[i], double(start + row * size_t(cols) + col)) << name << " element " << i;
      }
    };
    // The file's tensors in order: HF name pattern ("#" = layer), floats per layer, q/k permutation applies.
    struct Block {
      const char* name;
      size_t floats;
      bool rope;
    };
    const Block blocks[] = {{"model.layers.#.input_layernorm.weight", 8, false},
                            {"model.layers.#.self_attn.q_proj.weight", 64, true},
                            {"model.layers.#.self_attn.k_proj.weight", 32, true},
                            {"model.layers.#.self_attn.v_proj.weight", 32, false},
                            {"model.layers.#.self_attn.o_proj.weight", 64, false},
                            {"model.layers.#.post_attention_layernorm.weight", 8, false},
                            {"model.layers.#.mlp.gate_proj.weight", 96, false},  // w1
                            {"model.layers.#.mlp.down_proj.weight", 96, false},  // w2
                            {"model.layers.#.mlp.up_proj.weight", 96, false}};   // w3
    const std::vector<int> hf_from_meta = {0, 2, 1, 3};                          // head_dim 4
    size_t at = 0;
    expect_block("model.embed_tokens.weight", at), at += 16 * 8;
    for (const Block& blk : blocks) {
      for (int l = 0; l < 2; ++l) {
        std::string name = blk.name;
        name.replace(name.find('#'), 1, std::to_string(l));
        expect_block(name, at, blk.rope ? hf_from_meta : std::vector<int>{}), at += blk.floats;
      }
    }
    expect_block("model.norm.weight", at), at += 8;
    at += 2 * 4 * 2;  // the two RoPE tables, seq_len · head_dim/2 each
    if (!shared) expect_block("lm_head.weight", at), at += 16 * 8;
    EXPECT_EQ(at, tiny_floats(shared));
    EXPECT_EQ(ps.find("lm_head.weight") == nullptr, shared);

    // Without the permutation q rows keep the file order.
    load_llama2c(p, *be, ps, /*permute_qk=*/false);
    expect_block("model.layers.0.self_attn.q_proj.weight", 16 * 8 + 2 * 8);
  }
}

// A NaN or inf in the file stops the import naming the file and the parameter (it used to load silently).
TEST_F(Llama2cFile, RejectsNonFiniteWeightsNamingTheParameter) {
  std::string bytes = file_bytes({8, 12, 2, 2, 1, 16, 4}, tiny_floats(true));
  const float inf = std::numeric_limits<float>::infinity();
  const size_t at = 7 * 4 + (16 * 8 + 2 * 8 + 64 + 3) * 4;  // layer 1's wq, row 0, column 3
  std::memcpy(&bytes[at], &inf, 4);
  const std::string p = write("inf.bin", bytes);
  const ModelConfig c = llama2c_config(read_llama2c_header(p));
  std::unique_ptr<Backend> be = create_backend("cpu");
  ParamStore ps(*be, c, LoraConfig{}, TrainableConfig{});
  try {
    load_llama2c(p, *be, ps);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find(p + ": `model.layers.1.self_attn.q_proj.weight` holds inf at [0,3] of [8,8]"),
              0u)
        << e.what();
  }
}

TEST_F(Llama2cFile, RejectsWrongFileSizes) {
  const std::string good = file_bytes({8, 12, 2, 2, 1, 16, 4}, tiny_floats(true));
  const std::string expected = std::to_string(good.size());
  expect_error("truncated.bin", good.substr(0, good.size() - 4),
               {std::to_string(good.size() - 4) + " bytes", "exactly " + expected + " bytes", "truncated"});
  expect_error("trailing.bin", good + std::string(4, '\0'),
               {std::to_string(good.size() + 4) + " bytes", "exactly " + expected + " bytes", "trailing"});
  // A separate-classifier header on a shared-classifier body is short by V·D floats.
  expect_error("unshared.bin", file_bytes({8, 12, 2, 2, 1, -16, 4}, tiny_floats(true)), {"truncated"});
  expect_error("short_header.bin", good.substr(0, 20), {"20 bytes", "shorter than the 28-byte"});
  expect_error("empty.bin", "", {"0 bytes"});
}

TEST_F(Llama2cFile, RejectsBadHeaders) {
  const size_t n = tiny_floats(true);
  expect_error("dim0.bin", file_bytes({0, 12, 2, 2, 1, 16, 4}, n), {"dim must be positive, got 0"});
  expect_error("hidden.bin", file_bytes({8, -12, 2, 2, 1, 16, 4}, n), {"hidden_dim must be positive, got -12"});
  expect_error("layers.bin", file_bytes({8, 12, 0, 2, 1, 16, 4}, n), {"n_layers must be positive"});
  expect_error("heads.bin", file_bytes({8, 12, 2, 0, 1, 16, 4}, n), {"n_heads must be positive"});
  expect_error("kv.bin", file_bytes({8, 12, 2, 2, 0, 16, 4}, n), {"n_kv_heads must be positive"});
  expect_error("seq.bin", file_bytes({8, 12, 2, 2, 1, 16, 0}, n), {"seq_len must be positive"});
  expect_error("vocab.bin", file_bytes({8, 12, 2, 2, 1, 0, 4}, n), {"invalid vocab_size 0"});
  expect_error("divide.bin", file_bytes({8, 12, 2, 3, 1, 16, 4}, n), {"dim 8 is not divisible by n_heads 3"});
  expect_error("odd_head.bin", file_bytes({6, 12, 2, 2, 1, 16, 4}, n), {"head dimension", "= 3 must be even"});
  expect_error("gqa.bin", file_bytes({8, 12, 2, 2, 3, 16, 4}, n), {"n_heads 2 is not a multiple of n_kv_heads 3"});
  expect_error("huge.bin", file_bytes({1 << 30, 1 << 30, 1 << 30, 2, 1, 16, 4}, n), {"overflow"});
  expect_error("versioned.bin", file_bytes({0x616b3432, 1, 8, 12, 2, 2, 1}, n), {"versioned export format", "legacy"});
  try {
    read_llama2c_header(dir_ + "/missing.bin");
    ADD_FAILURE() << "expected an error for a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.bin"), std::string::npos) << e.what();
  }
}

TEST_F(Llama2cFile, RejectsAModelOfAnotherShape) {
  const std::string p = write("tiny.bin", file_bytes({8, 12, 2, 2, 1, 16, 4}, tiny_floats(true)));
  std::unique_ptr<Backend> be = create_backend("cpu");
  ModelConfig c = llama2c_config(read_llama2c_header(p));
  auto expect_refused = [&](const ModelConfig& other, const std::string& phrase) {
    ParamStore ps(*be, other, LoraConfig{}, TrainableConfig{});
    try {
      load_llama2c(p, *be, ps);
      ADD_FAILURE() << "expected an error containing '" << phrase << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
    }
  };
  ModelConfig other = c;
  other.num_hidden_layers = 3;
  expect_refused(other, "2 layers but the model has 3");
  other = c;
  other.tie_word_embeddings = false;
  expect_refused(other, "tie_word_embeddings");
  other = c;
  other.intermediate_size = 16;
  expect_refused(other, "mlp.gate_proj.weight");
}

// ---- stories260K ----------------------------------------------------------------------------------------------------

struct Stories {
  std::string asset;
  std::unique_ptr<SafetensorsFile> fixture;
};

// Locates the asset and the fixture; returns false (after GTEST_SKIP in the caller) when the asset is absent.
bool open_stories(Stories* s, std::string* why) {
  s->asset = test::asset_path("stories260K.bin");
  if (s->asset.empty()) {
    *why = "stories260K.bin not found (set LONGLORA_ASSETS, or provide ../shared/assets/ next to the repository)";
    return false;
  }
  const std::string dir = test::fixtures_dir();
  EXPECT_FALSE(dir.empty()) << "tests/fixtures is committed; run the tests from the repository root";
  s->fixture = std::make_unique<SafetensorsFile>(dir + "/stories260K_logits.safetensors");
  return true;
}

std::vector<double> stories_logits(const Stories& s, const std::string& backend_name, bool permute_qk) {
  const std::vector<int32_t> ids = read_i32(*s.fixture, "input_ids");
  const std::vector<int64_t> shape = s.fixture->entry("input_ids").shape;
  std::unique_ptr<Backend> be = create_backend(backend_name);
  ModelOptions o;
  o.config = llama2c_config(read_llama2c_header(s.asset));
  o.batch = shape.at(0);
  o.seq_len = shape.at(1);
  Model model(*be, o);
  load_llama2c(s.asset, *be, model.params(), permute_qk);
  return model.logits(ids.data());
}

TEST(Llama2cStories260K, AssetMatchesFixture) {
  Stories s;
  std::string why;
  if (!open_stories(&s, &why)) GTEST_SKIP() << why;
  EXPECT_EQ(file_md5(s.asset), s.fixture->metadata().at("asset_md5"))
      << s.asset << " is not the checkpoint the fixture was made from; rerun scripts/make_stories_fixture.py";
  const Llama2cHeader h = read_llama2c_header(s.asset);
  EXPECT_EQ(h.dim, 64);
  EXPECT_EQ(h.hidden_dim, 172);
  EXPECT_EQ(h.n_layers, 5);
  EXPECT_EQ(h.n_heads, 8);
  EXPECT_EQ(h.n_kv_heads, 4);
  EXPECT_EQ(h.vocab_size, 512);
  EXPECT_EQ(h.seq_len, 512);
  EXPECT_EQ(s.fixture->entry("logits").shape, (std::vector<int64_t>{2, 48, 512}));
}

TEST(Llama2cStories260K, LogitsMatchLlama2cMath) {
  Stories s;
  std::string why;
  if (!open_stories(&s, &why)) GTEST_SKIP() << why;
  ASSERT_EQ(file_md5(s.asset), s.fixture->metadata().at("asset_md5"));
  const std::vector<double> ref = read_f32(*s.fixture, "logits");
  const double e32 = test::rel_error(stories_logits(s, "cpu", true), ref);
  const double e64 = test::rel_error(stories_logits(s, "cpu-f64", true), ref);
  std::printf("stories260K logits relative error: cpu %.3e, cpu-f64 %.3e\n", e32, e64);
  EXPECT_LT(e32, 1e-4) << "fp32 backend";
  EXPECT_LT(e64, 1e-6) << "fp64 backend";
}

TEST(Llama2cStories260K, PermutationMatters) {
  Stories s;
  std::string why;
  if (!open_stories(&s, &why)) GTEST_SKIP() << why;
  const double e = test::rel_error(stories_logits(s, "cpu-f64", false), read_f32(*s.fixture, "logits"));
  std::printf("stories260K logits relative error without the q/k permutation: %.3e\n", e);
  EXPECT_GT(e, 1e-2) << "the Meta → HF q/k permutation should change the logits of a trained model";
}

}  // namespace
}  // namespace ll
