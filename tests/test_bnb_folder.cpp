// The transformers + bitsandbytes 4-bit folder layout (io/bnb_weights.h, build/quantize's io/quantize_folder.h):
// tensor names, dtypes, shapes and quant_state JSON as transformers' serialization writes them; a folder we write
// reads back bit-identically; merging onto a 4-bit base writes a dense folder; missing parts are named.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/quantize.h"
#include "eval_test_util.h"
#include "core/tensor_host.h"
#include "io/bnb_weights.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/merge.h"
#include "io/peft.h"
#include "model/param_select.h"
#include "io/quantize_folder.h"
#include "io/safetensors.h"
#include "model/params.h"
#include "test_data_util.h"
#include "test_util.h"
#include "util/files.h"

namespace ll {
namespace {

using Json = nlohmann::json;

std::string quantize_tiny(const std::string& out, bool double_quant) {
  QuantizeFolderOptions o;
  o.model_name_or_path = test::fixtures_dir() + "/hf_tiny";
  o.output_dir = out;
  o.quant.bnb_4bit_quant_type = "nf4";
  o.quant.bnb_4bit_use_double_quant = double_quant;
  o.quant.bnb_4bit_compute_dtype = "bfloat16";
  std::ostringstream log;
  quantize_hf_folder(o, log);
  return log.str();
}

TEST(BnbFolder, TensorsAndConfigAreTransformersLayout) {
  const test::TempDir dir;
  const std::string out = dir.path() + "/q";
  quantize_tiny(out, true);
  const Json config = Json::parse(read_text_file(out + "/config.json"));
  const Json& qc = config.at("quantization_config");
  EXPECT_EQ(qc.at("quant_method"), "bitsandbytes");
  EXPECT_EQ(qc.at("load_in_4bit"), true);
  EXPECT_EQ(qc.at("bnb_4bit_quant_type"), "nf4");
  EXPECT_EQ(qc.at("bnb_4bit_use_double_quant"), true);
  EXPECT_EQ(qc.at("bnb_4bit_compute_dtype"), "bfloat16");
  EXPECT_EQ(qc.at("bnb_4bit_quant_storage"), "uint8");

  const SafetensorsFile f(out + "/model.safetensors");
  const std::string q = "model.layers.0.self_attn.q_proj.weight";  // [32, 32]: 1024 elements, 16 blocks
  EXPECT_EQ(f.entry(q).dtype, DType::U8);
  EXPECT_EQ(f.entry(q).shape, (std::vector<int64_t>{512, 1}));
  EXPECT_EQ(f.entry(q + ".absmax").dtype, DType::U8);
  EXPECT_EQ(f.entry(q + ".absmax").shape, (std::vector<int64_t>{16}));
  EXPECT_EQ(f.entry(q + ".quant_map").shape, (std::vector<int64_t>{16}));
  EXPECT_EQ(f.entry(q + ".nested_absmax").dtype, DType::F32);
  EXPECT_EQ(f.entry(q + ".nested_absmax").shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(f.entry(q + ".nested_quant_map").shape, (std::vector<int64_t>{256}));
  const SafetensorsEntry& st = f.entry(q + ".quant_state.bitsandbytes__nf4");
  EXPECT_EQ(st.dtype, DType::U8);
  const std::string state(static_cast<const char*>(st.data), st.nbytes);
  EXPECT_EQ(state.rfind("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [32, 32], "
                        "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ",
                        0),
            0u)
      << state;
  // The output head, embeddings and norms stay dense in the compute dtype.
  EXPECT_EQ(f.entry("lm_head.weight").dtype, DType::BF16);
  EXPECT_EQ(f.entry("model.embed_tokens.weight").dtype, DType::BF16);
  EXPECT_EQ(f.entry("model.norm.weight").dtype, DType::BF16);
  EXPECT_FALSE(path_exists(out + "/lm_head.weight.absmax"));
}

// The parameters of `dir` loaded into a store of `config` (4-bit when the config says so), as raw bytes by name.
std::map<std::string, std::vector<uint8_t>> load_bytes(const std::string& dir, const ModelConfig& config) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ParamStore params(*backend, config, LoraConfig{}, TrainableConfig{});
  load_hf_weights(dir, params, *backend);
  std::map<std::string, std::vector<uint8_t>> out;
  for (Param& p : params.all()) {
    std::vector<uint8_t> raw(p.value.nbytes());
    backend->copy_to_host(raw.data(), p.value);
    out[p.name] = raw;
  }
  return out;
}

TEST(BnbFolder, AFolderWeWriteReadsBackAsQuantizeOnLoad) {
  for (bool dq : {false, true}) {
    SCOPED_TRACE(dq ? "double-quantized" : "plain absmax");
    const test::TempDir dir;
    const std::string out = dir.path() + "/q";
    quantize_tiny(out, dq);
    const HfConfig written = read_hf_config(out);
    ASSERT_TRUE(written.model.load_in_4bit);
    EXPECT_EQ(written.model.base_weight_format, dq ? DType::NF4DQ : DType::NF4);
    // Quantize on load from the dense folder, with the same settings.
    ModelConfig dense_config = read_hf_config(test::fixtures_dir() + "/hf_tiny").model;
    dense_config.load_in_4bit = true;
    dense_config.base_weight_format = written.model.base_weight_format;
    const auto from_folder = load_bytes(out, written.model);
    const auto on_load = load_bytes(test::fixtures_dir() + "/hf_tiny", dense_config);
    int quantized = 0;
    for (const auto& [name, bytes] : on_load) {
      if (name.find("_proj") == std::string::npos) continue;  // the linears; embeddings went through bf16
      EXPECT_EQ(from_folder.at(name), bytes) << name;
      ++quantized;
    }
    EXPECT_EQ(quantized, 2 * 7);
  }
}

// tests/fixtures/hf_tiny_bnb_nf4 was written by transformers + bitsandbytes (scripts/make_bnb_fixture.py): it loads,
// and its values are what quantize-on-load computes from hf_tiny — codes and absmax codes bit for bit; the offset
// (mean of the absmax: torch sums in float, core/quantize.h in double) within an ulp or two, and so the nested absmax
// (max |absmax − offset|) within a few ulps.
TEST(BnbFolder, ReadsAFolderTransformersWrote) {
  const std::string theirs = test::fixtures_dir() + "/hf_tiny_bnb_nf4";
  const HfConfig written = read_hf_config(theirs);
  ASSERT_TRUE(written.model.load_in_4bit);
  ASSERT_EQ(written.model.base_weight_format, DType::NF4DQ);
  ModelConfig dense_config = read_hf_config(test::fixtures_dir() + "/hf_tiny").model;
  dense_config.load_in_4bit = true;
  const auto from_folder = load_bytes(theirs, written.model);
  const auto on_load = load_bytes(test::fixtures_dir() + "/hf_tiny", dense_config);
  int quantized = 0;
  for (const auto& [name, mine] : on_load) {
    const std::vector<uint8_t>& other = from_folder.at(name);
    if (name.find("_proj") == std::string::npos) {
      EXPECT_EQ(other, mine) << name;  // dense f32 in both
      continue;
    }
    ++quantized;
    // Every linear of hf_tiny has 32·32, 32·64 or 64·32 elements; find the count whose layout has this size.
    int64_t n = 0;
    for (int64_t c : {32 * 32, 32 * 64, 16 * 32})
      if (storage_bytes(DType::NF4DQ, c) == mine.size()) n = c;
    ASSERT_GT(n, 0) << name;
    const QuantLayout l = quant_layout(DType::NF4DQ, n);
    EXPECT_EQ(std::vector<uint8_t>(other.begin(), other.begin() + l.nested),
              std::vector<uint8_t>(mine.begin(), mine.begin() + l.nested))
        << name << ": codes and absmax codes";
    for (int64_t k = 0; k < l.nested_blocks; ++k) {
      float a, b;
      std::memcpy(&a, other.data() + l.nested + 4 * k, 4);
      std::memcpy(&b, mine.data() + l.nested + 4 * k, 4);
      EXPECT_NEAR(a, b, 8 * std::nextafter(b, 2 * b) - 8 * b) << name << ": nested absmax";
    }
    // The offset is mean(absmax): torch sums in float, core/quantize.h in double; they may differ in the last bit.
    float a, b;
    std::memcpy(&a, other.data() + l.offset, 4);
    std::memcpy(&b, mine.data() + l.offset, 4);
    EXPECT_NEAR(a, b, 2 * (std::nextafter(b, 2 * b) - b)) << name << ": offset";
  }
  EXPECT_EQ(quantized, 2 * 7);
}

TEST(BnbFolder, ADenseModelDequantizesAFourBitFolder) {
  const test::TempDir dir;
  const std::string out = dir.path() + "/q";
  quantize_tiny(out, true);
  HfConfig written = read_hf_config(out);
  const auto four = load_bytes(out, written.model);
  written.model.load_in_4bit = false;
  const auto dense = load_bytes(out, written.model);
  const std::string q = "model.layers.1.mlp.down_proj.weight";
  const std::vector<uint8_t>& packed = four.at(q);
  const int64_t n = int64_t(dense.at(q).size() / 4);
  std::vector<float> expect(static_cast<size_t>(n));
  dequantize_4bit(DType::NF4DQ, packed.data(), n, 0, n, expect.data());
  std::vector<uint8_t> expect_bytes(dense.at(q).size());
  std::memcpy(expect_bytes.data(), expect.data(), expect_bytes.size());
  EXPECT_EQ(dense.at(q), expect_bytes);
}

TEST(BnbFolder, MissingOrInconsistentPartsAreNamed) {
  const test::TempDir dir;
  const std::string out = dir.path() + "/q";
  quantize_tiny(out, true);
  const std::string file = out + "/model.safetensors";
  const std::string victim = "model.layers.0.mlp.up_proj.weight.nested_absmax";
  // Rewrite the folder's file without one part.
  auto rewrite_without = [&](const std::string& drop) {
    std::vector<SafetensorsWriteItem> items;
    std::vector<std::vector<unsigned char>> keep;
    {
      const SafetensorsFile f(file);
      for (const std::string& name : f.names()) {
        if (name == drop) continue;
        const SafetensorsEntry& e = f.entry(name);
        const auto* bytes = static_cast<const unsigned char*>(e.data);
        keep.emplace_back(bytes, bytes + e.nbytes);
        items.push_back({name, e.dtype, e.shape, nullptr});
      }
    }
    for (size_t i = 0; i < items.size(); ++i) items[i].data = keep[i].data();
    write_safetensors(file, items);
  };
  rewrite_without(victim);
  const HfConfig written = read_hf_config(out);
  try {
    load_bytes(out, written.model);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(victim), std::string::npos) << e.what();
  }
  // A folder quantized as nf4 but read as fp4 is named.
  ModelConfig fp4 = written.model;
  fp4.base_weight_format = DType::FP4DQ;
  try {
    load_bytes(out, fp4);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fp4"), std::string::npos) << e.what();
  }
}

// Merging an adapter trained on a 4-bit base writes a dense folder: W = dequantize(W4) + s·B·A.
TEST(BnbFolder, MergingOntoAFourBitBaseWritesADenseFolder) {
  const test::TempDir dir;
  const std::string base = dir.path() + "/q", adapter = dir.path() + "/adapter", merged = dir.path() + "/merged";
  quantize_tiny(base, true);
  const HfConfig four = read_hf_config(base);
  std::unique_ptr<Backend> backend = create_backend("cpu");
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4;
  lora.targets = parse_lora_targets("q_proj", four.model);
  std::vector<double> a_values, b_values;
  {
    ParamStore params(*backend, four.model, lora, TrainableConfig{});
    load_hf_weights(base, params, *backend);
    Rng rng(9);
    for (Param& p : params.all())
      if (p.is_lora()) upload_f64(*backend, p.value, test::random_vector(rng, p.numel()));
    AdapterSaveOptions so;
    so.record = LongLoraRecord{1.0, 64, 0};
    save_adapter(adapter, params, *backend, lora, so);
    a_values = download_f64(*backend, params.get("model.layers.0.self_attn.q_proj.lora_A.weight").value);
    b_values = download_f64(*backend, params.get("model.layers.0.self_attn.q_proj.lora_B.weight").value);
  }
  MergeOptions mo;
  mo.base_model = base;
  mo.peft_model = adapter;
  mo.save_path = merged;
  mo.dtype = "f32";
  mo.rope_scaling_factor = 1.0;
  std::ostringstream log;
  merge_adapter_folder(mo, log);
  const HfConfig out = read_hf_config(merged);
  EXPECT_FALSE(out.model.load_in_4bit);
  EXPECT_FALSE(Json::parse(read_text_file(merged + "/config.json")).contains("quantization_config"));
  // The merged q_proj of layer 0 against dequantize(base) + (α/r)·B·A.
  const auto four_bytes = load_bytes(base, four.model);
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  const int64_t n = 32 * 32;
  std::vector<float> w(static_cast<size_t>(n));
  dequantize_4bit(DType::NF4DQ, four_bytes.at(q).data(), n, 0, n, w.data());
  const SafetensorsFile f(merged + "/model.safetensors");
  const SafetensorsEntry& e = f.entry(q);
  ASSERT_EQ(e.dtype, DType::F32);
  const float* got = static_cast<const float*>(e.data);
  for (int64_t o = 0; o < 32; ++o)
    for (int64_t i = 0; i < 32; ++i) {
      double delta = 0;
      for (int64_t k = 0; k < 2; ++k) delta += b_values[size_t(o * 2 + k)] * a_values[size_t(k * 32 + i)];
      EXPECT_NEAR(got[o * 32 + i], w[size_t(o * 32 + i)] + 2.0 * delta, 1e-5) << o << "," << i;
    }
}

// build/quantize as a user runs it (the command line), then build/eval on the folder; a bad flag is named.
TEST(BnbFolder, QuantizeBinaryWritesAFolderEvalReads) {
  const std::string quantize = test::sibling_binary("quantize"), eval = test::sibling_binary("eval");
  if (quantize.empty() || eval.empty()) GTEST_SKIP() << "no quantize / eval binary next to the test binary (make all)";
  const test::TempDir dir;
  std::string output;
  const std::string out = dir.path() + "/q";
  EXPECT_EQ(test::run_command(quantize + " --model_name_or_path " + test::fixtures_dir() + "/hf_tiny --output_dir " +
                                  out + " --bnb_4bit_quant_type nf4 --bnb_4bit_use_double_quant true",
                              &output),
            0)
      << output;
  EXPECT_TRUE(read_hf_config(out).model.load_in_4bit);
  std::vector<int32_t> tokens(600);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(i * 7 % 37);
  test::write_tokens(dir.path() + "/tokens.bin", tokens);
  EXPECT_EQ(test::run_command(eval + " perplexity --base_model " + out + " --data_path " + dir.path() +
                                  "/tokens.bin --seq_len 8 --progress false",
                              &output),
            0)
      << output;
  EXPECT_EQ(test::run_command(quantize + " --model_name_or_path " + test::fixtures_dir() + "/hf_tiny --output_dir " +
                                  dir.path() + "/bad --bnb_4bit_quant_type int4",
                              &output),
            1);
  EXPECT_NE(output.find("--bnb_4bit_quant_type"), std::string::npos) << output;
}

TEST(BnbFolder, QuantizationConfigIsReadAndUnsupportedOnesAreRefused) {
  ModelConfig c;
  parse_bnb_quantization_config(Json{{"quant_method", "bitsandbytes"}, {"load_in_4bit", true},
                                     {"bnb_4bit_quant_type", "nf4"}, {"bnb_4bit_use_double_quant", true}},
                                c, "config.json");
  EXPECT_TRUE(c.load_in_4bit);
  EXPECT_EQ(c.base_weight_format, DType::NF4DQ);
  ModelConfig d;
  EXPECT_THROW(parse_bnb_quantization_config(Json{{"quant_method", "bitsandbytes"}, {"load_in_8bit", true}}, d, "x"),
               Error);
  EXPECT_THROW(parse_bnb_quantization_config(Json{{"quant_method", "gptq"}}, d, "x"), Error);
  EXPECT_THROW(parse_bnb_quantization_config(
                   Json{{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}, {"bnb_4bit_quant_type", "int4"}},
                   d, "x"),
               Error);
}

}  // namespace
}  // namespace ll
