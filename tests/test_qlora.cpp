// QLoRA end to end on the CPU: a tiny Llama pretrained, loaded with --load_in_4bit (quantized on load), its perplexity
// equal to the dense model's on the dequantized weights, then LongLoRA on the 4-bit base (PI + S2-Attn + LoRA+) lowering
// the long-context perplexity — the seed's scenario in miniature. Also the flag errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/backend.h"
#include "core/quantize.h"
#include "core/tensor_host.h"
#include "data/token_file.h"
#include "eval/perplexity.h"
#include "io/hf_checkpoint.h"
#include "io/hf_config.h"
#include "io/peft.h"
#include "model/model.h"
#include "neox_test_options.h"
#include "model/param_select.h"
#include "mpi/comm.h"
#include "mpi/zero3.h"
#include "test_data_util.h"
#include "test_util.h"
#include "train/trainer.h"
#include "util/files.h"

namespace ll {
namespace {

// Hidden 64, so the linears hold whole blocks of 64 per row; max_position_embeddings 16: the short context.
const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
  "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
  "vocab_size": 40, "rms_norm_eps": 1e-5, "max_position_embeddings": 16, "rope_theta": 10000.0})";

constexpr int64_t kShort = 16, kLong = 64;

class QloraTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::testing::TempDir() + "/qlora_suite");
    std::filesystem::remove_all(*dir_);
    make_directories(*dir_);
    write_file_atomic(*dir_ + "/config.json", kConfig);
    // A learnable stream: a few repeating phrases with noise; the validation file is the same process.
    for (const char* name : {"train.bin", "val.bin"}) {
      Rng rng(std::string(name) == "train.bin" ? 3 : 4);
      TokenFileWriter w(*dir_ + "/" + name, TokenFormat::Raw16);
      for (int i = 0; i < 6000; ++i) {
        const int phrase = (i / 12) % 3;
        w.append({int32_t(rng.uniform() < 0.9 ? (i * (5 + phrase)) % 40 : rng.below(40))});
      }
      w.finish();
    }
    // Pretraining at the short context, all weights trained.
    TrainOptions pre;
    pre.model_config = *dir_ + "/config.json";
    pre.data_path = *dir_ + "/train.bin";
    pre.output_dir = *dir_ + "/pretrain";
    pre.model_max_length = kShort;
    pre.use_s2attn = false;
    pre.low_rank_training = false;
    pre.learning_rate = 1e-2;
    pre.warmup_steps = 5;
    pre.per_device_train_batch_size = 8;
    pre.max_steps = 80;
    pre.save_steps = 0;
    pre.lr_scheduler_type = "cosine";
    pre.gradient_checkpointing = "false";
    run_training(pre, {});
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string base_dir() { return *dir_ + "/pretrain/model"; }

  // Perplexity at `context` with RoPE factor `factor` of the pretrained folder, 4-bit or dense, with an adapter.
  static PerplexityResult perplexity(bool four_bit, double factor, int64_t context, const std::string& adapter = "",
                                     bool dequantize_dense = false) {
    std::unique_ptr<Backend> backend = create_backend("cpu");
    ModelOptions mo;
    mo.config = read_hf_config(base_dir()).model;
    mo.config.rope_scaling_factor = factor;
    mo.config.load_in_4bit = four_bit;
    mo.config.base_weight_format = DType::NF4DQ;
    mo.batch = 2;
    mo.seq_len = context;
    if (!adapter.empty()) mo.lora = read_adapter_config(adapter, mo.config).lora;
    Model model(*backend, mo);
    load_hf_weights(base_dir(), model.params(), *backend);
    if (!adapter.empty()) load_adapter(adapter, model.params(), *backend);
    if (dequantize_dense) {  // the dense model with every linear replaced by its NF4 round trip
      model.params().write_all([&](Param& p) {
        if (p.role != ParamRole::Linear) return;
        std::vector<double> v = download_f64(*backend, p.value);
        const std::vector<float> f(v.begin(), v.end());
        std::vector<uint8_t> q(storage_bytes(DType::NF4DQ, p.numel()));
        quantize_4bit(DType::NF4DQ, f.data(), p.numel(), q.data());
        std::vector<float> d(f.size());
        dequantize_4bit(DType::NF4DQ, q.data(), p.numel(), 0, p.numel(), d.data());
        upload_f64(*backend, p.value, std::vector<double>(d.begin(), d.end()));
      });
    }
    const TokenFile val(*dir_ + "/val.bin", 40);
    PerplexityOptions po;
    po.sliding_window = context;
    po.max_windows = 24;
    return evaluate_perplexity(model, val, po);
  }

  static std::string* dir_;
};
std::string* QloraTest::dir_ = nullptr;

TEST_F(QloraTest, FourBitPerplexityEqualsTheDenseForwardOnDequantizedWeights) {
  const PerplexityResult four = perplexity(true, 1.0, kShort);
  const PerplexityResult dense = perplexity(false, 1.0, kShort, "", /*dequantize_dense=*/true);
  const PerplexityResult original = perplexity(false, 1.0, kShort);
  EXPECT_EQ(four.loss, dense.loss);
  EXPECT_EQ(four.accuracy, dense.accuracy);
  // Quantization changes the model, a little.
  EXPECT_NE(four.loss, original.loss);
  EXPECT_NEAR(four.loss, original.loss, 0.1 * original.loss);
}

TEST_F(QloraTest, LongLoraOnAFourBitBaseImprovesLongContextPerplexity) {
  const double factor = double(kLong / kShort);
  const PerplexityResult before = perplexity(true, factor, kLong);
  TrainOptions ext;
  ext.model_name_or_path = base_dir();
  ext.tokenizer = "";
  ext.data_path = *dir_ + "/train.bin";
  ext.output_dir = *dir_ + "/qlora";
  ext.overwrite_output_dir = true;
  ext.add_pad_token = false;
  ext.model_max_length = kLong;  // factor ceil(64 / 16) = 4 by LongLoRA's rule
  ext.use_s2attn = true;
  ext.low_rank_training = true;
  ext.quant.load_in_4bit = true;
  ext.quant.bnb_4bit_quant_type = "nf4";
  ext.quant.bnb_4bit_use_double_quant = true;
  ext.quant.bnb_4bit_compute_dtype = "bfloat16";
  ext.lora_r = 8;
  ext.lora_target = "q_proj,k_proj,v_proj,o_proj";
  ext.trainable_params = "embed,norm";
  ext.learning_rate = 5e-3;
  ext.warmup_steps = 3;
  ext.per_device_train_batch_size = 2;
  ext.max_steps = 60;
  ext.save_steps = 0;
  ext.gradient_checkpointing = "true";
  ext.save_merged = true;
  run_training(ext, {});
  const PerplexityResult after = perplexity(true, factor, kLong, ext.output_dir);
  EXPECT_LT(after.perplexity, before.perplexity) << "before " << before.perplexity << ", after " << after.perplexity;
  std::printf("4-bit base, perplexity at %lld tokens (PI factor %g): before %.4f, after QLoRA %.4f\n",
              (long long)kLong, factor, before.perplexity, after.perplexity);

  // --save_merged on a 4-bit base: a dense folder (dequantized base + s·B·A) computing what base + adapter computes.
  const std::string merged = ext.output_dir + "/merged";
  EXPECT_FALSE(read_hf_config(merged).model.load_in_4bit);
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ModelOptions mo;
  mo.config = read_hf_config(merged).model;
  mo.batch = 2;
  mo.seq_len = kLong;
  Model model(*backend, mo);
  load_hf_weights(merged, model.params(), *backend);
  const TokenFile val(*dir_ + "/val.bin", 40);
  PerplexityOptions po;
  po.sliding_window = kLong;
  po.max_windows = 24;
  EXPECT_NEAR(evaluate_perplexity(model, val, po).perplexity, after.perplexity, 1e-3 * after.perplexity);
}

// A QLoRA run interrupted and resumed continues bit-identically (the 4-bit base is quantized again on load, the same).
TEST_F(QloraTest, ResumeContinuesBitIdentically) {
  auto options = [&](const std::string& out) {
    TrainOptions o;
    o.model_name_or_path = base_dir();
    o.data_path = *dir_ + "/train.bin";
    o.output_dir = *dir_ + "/" + out;
    o.overwrite_output_dir = true;
    o.add_pad_token = false;
    o.model_max_length = 32;
    o.quant.load_in_4bit = true;
    o.quant.bnb_4bit_quant_type = "nf4";
    o.quant.bnb_4bit_use_double_quant = true;
    o.lora_r = 4;
    o.lora_dropout = 0.1;
    o.learning_rate = 5e-3;
    o.per_device_train_batch_size = 2;
    o.max_steps = 6;
    o.save_steps = 0;
    return o;
  };
  run_training(options("resume_straight"), {});
  TrainOptions first = options("resume_split");
  first.interrupt_at_step = 3;
  EXPECT_TRUE(run_training(first, {}).interrupted);
  TrainOptions second = options("resume_split");
  second.overwrite_output_dir = false;
  second.resume_from_checkpoint = "auto";
  EXPECT_EQ(run_training(second, {}).steps, 6);
  for (const char* file : {"/checkpoint-6/trainable.safetensors", "/checkpoint-6/optimizer.safetensors"})
    EXPECT_EQ(read_text_file(*dir_ + "/resume_straight" + file), read_text_file(*dir_ + "/resume_split" + file))
        << file;
}

TEST_F(QloraTest, FullFineTuningOfAFourBitBaseIsRefusedNamingTheFlag) {
  TrainOptions o;
  o.model_name_or_path = base_dir();
  o.data_path = *dir_ + "/train.bin";
  o.output_dir = *dir_ + "/refused";
  o.add_pad_token = false;
  o.model_max_length = kShort;
  o.low_rank_training = false;
  o.quant.load_in_4bit = true;
  o.max_steps = 1;
  try {
    run_training(o, {});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--low_rank_training false"), std::string::npos) << e.what();
  }
  o.low_rank_training = true;
  o.quant.bnb_4bit_quant_type = "int4";
  try {
    run_training(o, {});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--bnb_4bit_quant_type"), std::string::npos) << e.what();
  }
}

TEST_F(QloraTest, MemoryPlanCountsFourBitBytes) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ModelOptions mo;
  mo.config = read_hf_config(base_dir()).model;
  mo.batch = 1;
  mo.seq_len = kShort;
  mo.lora.rank = 4;
  mo.lora.targets = {"q_proj"};
  const MemoryPlan dense = Model::plan_memory(*backend, mo);
  mo.config.load_in_4bit = true;
  const MemoryPlan four = Model::plan_memory(*backend, mo);
  // Linears: 2 layers × (4 attention + 3 MLP) matrices; 4-bit with double quantization is ~4.1 bits instead of 32.
  const int64_t linear = 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 64 * 96);
  EXPECT_LT(four.frozen_weights, dense.frozen_weights - size_t(linear) * 4 * 3 / 4);
  EXPECT_EQ(four.trainable_weights, dense.trainable_weights);
  // The model built from the same options allocates what the plan says.
  Model model(*backend, mo);
  EXPECT_EQ(model.params().frozen_bytes(), four.frozen_weights);
}

// The rule reads only the architecture's roles: every Linear is 4-bit; the output head (tied or not), embeddings and
// norms stay in the compute dtype; adapters stay dense and train.
TEST(QloraWeightFormat, OnlyLinearsAreQuantizedTiedOrNot) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  for (bool tied : {false, true}) {
    ModelConfig c = parse_hf_config(nlohmann::json::parse(kConfig), "config").model;
    c.tie_word_embeddings = tied;
    c.load_in_4bit = true;
    c.base_weight_format = DType::FP4;
    LoraConfig lora;
    lora.rank = 2;
    lora.targets = parse_lora_targets("q_proj,down_proj", c);
    ParamStore params(*backend, c, lora, TrainableConfig::parse("embed,norm"));
    int quantized = 0;
    for (const Param& p : params.all()) {
      EXPECT_EQ(is_quantized(p.value.dtype), p.role == ParamRole::Linear) << p.name;
      if (is_quantized(p.value.dtype)) {
        EXPECT_EQ(p.value.dtype, DType::FP4) << p.name;
        EXPECT_FALSE(p.trainable) << p.name;
        ++quantized;
      }
    }
    EXPECT_EQ(quantized, 2 * 7);
    EXPECT_EQ(params.lm_head().value.dtype, DType::F32);
  }
  // A linear chosen to train fully cannot be 4-bit: the error names it.
  ModelConfig c = parse_hf_config(nlohmann::json::parse(kConfig), "config").model;
  c.load_in_4bit = true;
  try {
    ParamStore params(*backend, c, LoraConfig{}, TrainableConfig::parse("q_proj"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q_proj.weight"), std::string::npos) << e.what();
  }
}

// GPT-NeoX gets the same rule from its own table (query_key_value, dense, dense_h_to_4h, dense_4h_to_h are 4-bit;
// embed_in, embed_out, layer norms and biases stay dense), and its 4-bit forward equals the dense forward on the
// dequantized weights.
TEST(QloraNeox, FourBitForwardEqualsDenseOnDequantizedWeights) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ModelOptions dense_options = test::tiny_neox_options();
  dense_options.trainable = TrainableConfig::parse("embed,norm");
  dense_options.lora.rank = 2;
  dense_options.lora.targets = parse_lora_targets("query_key_value,dense", dense_options.config);
  ModelOptions four_options = dense_options;
  four_options.config.load_in_4bit = true;
  four_options.config.base_weight_format = DType::NF4DQ;
  Model dense(*backend, dense_options), four(*backend, four_options);
  dense.init_random(3, 0.5);
  int quantized = 0;
  four.params().write_all([&](Param& p) {
    quantized += is_quantized(p.value.dtype) ? 1 : 0;
    EXPECT_EQ(is_quantized(p.value.dtype), p.role == ParamRole::Linear) << p.name;
    upload_f64(*backend, p.value, download_f64(*backend, dense.params().get(p.name).value));
  });
  EXPECT_EQ(quantized, 2 * 4);
  dense.params().write_all([&](Param& p) {  // the dense model's linears replaced by their 4-bit round trip
    if (p.role == ParamRole::Linear)
      upload_f64(*backend, p.value, download_f64(*backend, four.params().get(p.name).value));
  });
  std::vector<int32_t> tokens(16), targets(16);
  const int V = int(dense_options.config.vocab_size);
  for (int i = 0; i < 16; ++i) tokens[size_t(i)] = (i * 7) % V, targets[size_t(i)] = (i * 7 + 7) % V;
  const LossResult a = four.forward_backward(tokens.data(), targets.data());
  const LossResult b = dense.forward_backward(tokens.data(), targets.data());
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  const std::string lora_a = "gpt_neox.layers.0.attention.query_key_value.lora_A.weight";
  EXPECT_EQ(download_f64(*backend, four.params().get(lora_a).grad),
            download_f64(*backend, dense.params().get(lora_a).grad));
}

// QLoRA through the training loop on GPT-NeoX (LongLoRA's NeoX set-up: LoRA on query_key_value,dense, embed,norm
// trained, S2): the loss falls.
TEST(QloraNeox, TrainsThroughTheLoop) {
  const test::TempDir dir;
  write_file_atomic(dir.path() + "/config.json", test::tiny_neox_config_json(true, 2));
  {
    Rng rng(3);
    TokenFileWriter w(dir.path() + "/train.bin", TokenFormat::Raw16);
    for (int i = 0; i < 3000; ++i) w.append({int32_t(rng.uniform() < 0.9 ? (i * 7) % 50 : rng.below(50))});
    w.finish();
  }
  TrainOptions o;
  o.model_config = dir.path() + "/config.json";
  o.data_path = dir.path() + "/train.bin";
  o.output_dir = dir.path() + "/out";
  o.model_max_length = 32;
  o.quant.load_in_4bit = true;
  o.quant.bnb_4bit_quant_type = "nf4";
  o.quant.bnb_4bit_use_double_quant = true;
  o.lora_r = 4;
  o.lora_target = "query_key_value,dense";
  o.trainable_params = "embed,norm";
  o.learning_rate = 1e-2;
  o.per_device_train_batch_size = 4;
  o.max_steps = 20;
  o.save_steps = 0;
  const TrainResult r = run_training(o, {});
  EXPECT_EQ(r.steps, 20);
  std::vector<double> losses;
  std::ifstream in(o.output_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) losses.push_back(nlohmann::json::parse(line).at("loss"));
  ASSERT_EQ(losses.size(), 20u);
  EXPECT_LT(losses.back(), losses.front());
}

// ZeRO-3 shards a 4-bit weight as its raw bytes and gathers it whole: one rank's sharded model computes what the
// replicated one does (loss and adapter gradients bit for bit).
TEST(QloraZero3, ShardedFourBitBaseMatchesTheReplicatedModel) {
  std::unique_ptr<Backend> backend = create_backend("cpu");
  ModelOptions o;
  o.config = parse_hf_config(nlohmann::json::parse(kConfig), "config").model;
  o.config.load_in_4bit = true;
  o.config.base_weight_format = DType::NF4DQ;
  o.batch = 2;
  o.seq_len = 16;
  o.lora.rank = 4;
  o.lora.targets = parse_lora_targets("q_proj,v_proj", o.config);
  o.trainable = TrainableConfig::parse("embed,norm");
  std::vector<int32_t> tokens(32), targets(32);
  for (int i = 0; i < 32; ++i) tokens[size_t(i)] = (i * 7) % 40, targets[size_t(i)] = (i * 7 + 7) % 40;

  Model replicated(*backend, o);
  replicated.init_random(5);
  const LossResult a = replicated.forward_backward(tokens.data(), targets.data());

  ModelOptions z = o;
  z.external_param_storage = true;
  Model sharded(*backend, z);
  std::unique_ptr<Comm> local = make_local_comm();
  Zero3Storage storage(*backend, sharded.params(), *local);
  sharded.init_random(5);
  const LossResult b = sharded.forward_backward(tokens.data(), targets.data());
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  int four_bit = 0;
  for (const Param& p : sharded.params().all()) four_bit += is_quantized(p.value.dtype) ? 1 : 0;
  EXPECT_EQ(four_bit, 2 * 7);
}

}  // namespace
}  // namespace ll
