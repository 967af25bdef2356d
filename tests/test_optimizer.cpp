// AdamW, gradient clipping and learning-rate schedules against hand computations.
#include <gtest/gtest.h>

#include <cmath>
#include <omp.h>

#include <cstring>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "optim/adamw.h"
#include "train/schedule.h"

namespace ll {
namespace {

ModelOptions tiny() {
  ModelOptions o;
  o.config.hidden_size = 8;
  o.config.intermediate_size = 12;
  o.config.num_attention_heads = 2;
  o.config.num_key_value_heads = 2;
  o.config.num_hidden_layers = 1;
  o.config.vocab_size = 11;
  o.seq_len = 4;
  o.trainable = TrainableConfig::parse("embed,norm");  // embed + norms
  return o;
}

TEST(AdamW, ThreeStepsMatchAHandComputation) {
  CpuBackend<double> backend;
  Model model(backend, tiny());
  const AdamWConfig cfg{0.9, 0.95, 1e-8, 0.1};
  AdamW opt(backend, model.params(), cfg);
  Param& embed = model.params().get("model.embed_tokens.weight");
  Param& norm = model.params().get("model.norm.weight");
  Rng rng(3);
  std::vector<double> w = test::random_vector(rng, embed.numel()), wn = test::random_vector(rng, norm.numel());
  upload_f64(backend, embed.value, w);
  upload_f64(backend, norm.value, wn);
  std::vector<double> m(w.size()), v(w.size()), mn(wn.size()), vn(wn.size());
  const double lrs[] = {1e-3, 5e-4, 2e-3};
  for (int t = 1; t <= 3; ++t) {
    std::vector<double> g = test::random_vector(rng, embed.numel()), gn = test::random_vector(rng, norm.numel());
    upload_f64(backend, embed.grad, g);
    upload_f64(backend, norm.grad, gn);
    opt.step(lrs[t - 1]);
    // Hand computation (PyTorch AdamW): decay first, then the bias-corrected Adam update.
    auto update = [&](std::vector<double>& p, std::vector<double>& mm, std::vector<double>& vv,
                      const std::vector<double>& gg, double wd) {
      for (size_t i = 0; i < p.size(); ++i) {
        p[i] *= 1 - lrs[t - 1] * wd;
        mm[i] = 0.9 * mm[i] + 0.1 * gg[i];
        vv[i] = 0.95 * vv[i] + 0.05 * gg[i] * gg[i];
        const double mhat = mm[i] / (1 - std::pow(0.9, t)), vhat = vv[i] / (1 - std::pow(0.95, t));
        p[i] -= lrs[t - 1] * mhat / (std::sqrt(vhat) + 1e-8);
      }
    };
    update(w, m, v, g, 0.1);
    update(wn, mn, vn, gn, 0.0);  // norm weights are not decayed
  }
  EXPECT_LT(test::rel_error(download_f64(backend, embed.value), w), 1e-13);
  EXPECT_LT(test::rel_error(download_f64(backend, norm.value), wn), 1e-13);
  EXPECT_EQ(opt.steps_taken(), 3);
  // Frozen weights have no optimizer state.
  EXPECT_EQ(opt.slots().size(), 1u + 2u * 1 + 1u);  // embed, two layer norms, final norm
}

TEST(AdamW, ClipGradNormScalesToTheLimitAndReportsTheNorm) {
  CpuBackend<double> backend;
  Model model(backend, tiny());
  AdamW opt(backend, model.params(), AdamWConfig{});
  double sq = 0;
  Rng rng(4);
  for (OptimizerSlot& s : opt.slots()) {
    std::vector<double> g = test::random_vector(rng, s.param->numel());
    for (double x : g) sq += x * x;
    upload_f64(backend, s.param->grad, g);
  }
  const double norm = opt.clip_grad_norm(0.5);
  EXPECT_NEAR(norm, std::sqrt(sq), 1e-12);
  EXPECT_NEAR(opt.grad_norm(), 0.5 * std::sqrt(sq) / (std::sqrt(sq) + 1e-6), 1e-12);
  // Below the limit: the reported norm is that of the (already clipped) gradients, computed here in double from
  // host copies, and the gradients are left exactly as they were.
  std::vector<std::vector<double>> clipped;
  double clipped_sq = 0;
  for (OptimizerSlot& s : opt.slots()) {
    clipped.push_back(download_f64(backend, s.param->grad));
    for (double x : clipped.back()) clipped_sq += x * x;
  }
  EXPECT_NEAR(opt.clip_grad_norm(10.0), std::sqrt(clipped_sq), 1e-12);
  for (size_t i = 0; i < opt.slots().size(); ++i)
    EXPECT_EQ(download_f64(backend, opt.slots()[i].param->grad), clipped[i]) << "slot " << i << " changed";
  Param& any = *opt.slots()[0].param;
  std::vector<double> g = download_f64(backend, any.grad);
  g[0] = std::nan("");
  upload_f64(backend, any.grad, g);
  EXPECT_TRUE(std::isnan(opt.grad_norm()));
}

TEST(AdamW, SumOfSquaresDoesNotDependOnThreadCount) {
  CpuBackend<float> backend;
  Rng rng(5);
  std::vector<float> x(100003);
  for (float& v : x) v = float(rng.normal());
  Tensor t(x.data(), DType::F32, Device::CPU, {int64_t(x.size())});
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = backend.sum_squares(t);
  omp_set_num_threads(3);
  const double three = backend.sum_squares(t);
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(&one, &three, sizeof(double)), 0);
}

TEST(Schedules, HuggingFaceDefinitions) {
  ScheduleConfig c{LrSchedule::ConstantWithWarmup, 1.0, 4, 10};
  EXPECT_EQ(lr_at(c, 0), 0.0);  // first update with warmup uses rate 0, as HF's LambdaLR does
  EXPECT_EQ(lr_at(c, 2), 0.5);
  EXPECT_EQ(lr_at(c, 4), 1.0);
  EXPECT_EQ(lr_at(c, 9), 1.0);
  c.kind = LrSchedule::Linear;
  EXPECT_EQ(lr_at(c, 1), 0.25);
  EXPECT_DOUBLE_EQ(lr_at(c, 7), 0.5);  // (10 − 7) / (10 − 4)
  EXPECT_EQ(lr_at(c, 10), 0.0);
  EXPECT_EQ(lr_at(c, 12), 0.0);
  c.kind = LrSchedule::Cosine;
  EXPECT_DOUBLE_EQ(lr_at(c, 4), 1.0);
  EXPECT_NEAR(lr_at(c, 7), 0.5, 1e-15);  // half way: 0.5·(1 + cos(π/2))
  EXPECT_NEAR(lr_at(c, 10), 0.0, 1e-15);
  c.kind = LrSchedule::Constant;
  EXPECT_EQ(lr_at(c, 0), 1.0);
  c.base_lr = 2e-5;
  c.kind = LrSchedule::ConstantWithWarmup;
  c.warmup_steps = 20;
  EXPECT_DOUBLE_EQ(lr_at(c, 10), 1e-5);  // LongLoRA: lr 2e-5, 20 warmup steps
  EXPECT_EQ(parse_lr_schedule("cosine"), LrSchedule::Cosine);
  EXPECT_THROW(parse_lr_schedule("cosine_with_restarts"), Error);
}

// DeepSpeed's WarmupDecayLR (ds_configs/stage3.json's scheduler): log warmup over max(2, W) steps, then HF's linear
// decay; WarmupLR: the same warmup, then constant.
TEST(Schedules, DeepSpeedWarmupDecayAndWarmup) {
  ScheduleConfig c{LrSchedule::Linear, 1.0, 20, 100, WarmupShape::DeepSpeedLog};
  EXPECT_EQ(lr_at(c, 0), 0.0);  // log(1)
  EXPECT_DOUBLE_EQ(lr_at(c, 1), std::log(2.0) / std::log(20.0));
  EXPECT_DOUBLE_EQ(lr_at(c, 19), 1.0);  // log(20) / log(20)
  EXPECT_DOUBLE_EQ(lr_at(c, 20), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(c, 60), 0.5);  // (100 − 60) / (100 − 20)
  c.warmup_steps = 0;                   // DeepSpeed warms up over 2 steps at least
  EXPECT_EQ(lr_at(c, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(c, 1), 1.0);
  c.warmup = WarmupShape::DeepSpeedLinear;
  EXPECT_DOUBLE_EQ(lr_at(c, 1), 0.5);
  c.kind = LrSchedule::ConstantWithWarmup, c.warmup = WarmupShape::DeepSpeedLog, c.warmup_steps = 20;
  EXPECT_DOUBLE_EQ(lr_at(c, 99), 1.0);
  EXPECT_EQ(parse_warmup_shape("deepspeed_log"), WarmupShape::DeepSpeedLog);
  EXPECT_THROW(parse_warmup_shape("cosine"), Error);
}

}  // namespace
}  // namespace ll
