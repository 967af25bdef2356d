// AdamW with f32 master weights (what the CUDA backend's bf16 weights need), tested on the CPU through a small
// host backend with the CUDA precision policy (bf16 weights, f32 gradients/moments/masters). The same host
// semantics are the reference the GPU test (test_cuda_ops.cpp) holds the CUDA adamw_step to.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cpu/cpu_backend.h"
#include "model/param_select.h"
#include "model/params.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "optim/adamw.h"

namespace ll {
namespace {

// Memory ops on host buffers, convert, and the optimizer ops for bf16 params + f32 masters. Every other op throws:
// the optimizer must not need them.
class HostMixedBackend final : public Backend {
 public:
  std::string name() const override { return "host-mixed"; }
  Device device() const override { return Device::CPU; }
  DTypePolicy dtypes() const override { return {DType::BF16, DType::BF16, DType::F32, DType::F32}; }
  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    ++allocations;
    return p;
  }
  void release(void* p) override { std::free(p); }
  void copy_from_host(Tensor dst, const void* src) override { std::memcpy(dst.data, src, dst.nbytes()); }
  void copy_to_host(void* dst, const Tensor& src) override { std::memcpy(dst, src.data, src.nbytes()); }
  void copy(Tensor dst, const Tensor& src) override { std::memmove(dst.data, src.data, dst.nbytes()); }
  void convert(Tensor dst, const Tensor& src) override {
    ++converts;
    convert_values(src.data, src.dtype, dst.data, dst.dtype, size_t(src.numel()));
  }
  void zero(Tensor t) override { std::memset(t.data, 0, t.nbytes()); }
  double sum_squares(const Tensor& x) override {
    double s = 0;
    for (int64_t i = 0; i < x.numel(); ++i) s += double(x.ptr<float>()[i]) * x.ptr<float>()[i];
    return s;
  }
  void scale(Tensor x, double s) override {
    for (int64_t i = 0; i < x.numel(); ++i) x.ptr<float>()[i] = float(double(x.ptr<float>()[i]) * s);
  }
  // The reference mixed-precision AdamW: f32 arithmetic on the master (as the CUDA kernel does), then the
  // working copy is the master rounded to bf16.
  void adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v, const AdamWStep& st) override {
    LL_CHECK(param.dtype == DType::BF16 && !master.empty() && master.dtype == DType::F32, "test backend: bf16 param "
             "with an f32 master expected");
    const double bc1 = 1.0 - std::pow(st.beta1, double(st.step)), bc2 = 1.0 - std::pow(st.beta2, double(st.step));
    const float step_size = float(st.lr / bc1), bc2_sqrt = float(std::sqrt(bc2)), decay = float(1 - st.lr * st.weight_decay);
    auto* p16 = static_cast<uint16_t*>(param.data);
    float *pm = master.ptr<float>(), *g = grad.ptr<float>(), *mm = m.ptr<float>(), *vv = v.ptr<float>();
    for (int64_t i = 0; i < param.numel(); ++i) {
      float p = pm[i] * decay;
      mm[i] = float(st.beta1) * mm[i] + float(1 - st.beta1) * g[i];
      vv[i] = float(st.beta2) * vv[i] + float(1 - st.beta2) * g[i] * g[i];
      p -= step_size * mm[i] / (std::sqrt(vv[i]) / bc2_sqrt + float(st.eps));
      pm[i] = p;
      p16[i] = f32_to_bf16(p);
    }
  }
#define LL_NOT_HERE(sig) \
  sig override { fail("test backend: op not available"); }
  LL_NOT_HERE(void embedding_forward(Tensor, const Tensor&, const Tensor&))
  LL_NOT_HERE(void embedding_backward(Tensor, const Tensor&, const Tensor&))
  LL_NOT_HERE(void rmsnorm_forward(Tensor, Tensor, const Tensor&, const Tensor&, double))
  LL_NOT_HERE(void rmsnorm_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool))
  LL_NOT_HERE(void layernorm_forward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, double))
  LL_NOT_HERE(void layernorm_backward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const Tensor&, bool))
  LL_NOT_HERE(void add_bias(Tensor, const Tensor&))
  LL_NOT_HERE(void bias_backward(Tensor, const Tensor&))
  LL_NOT_HERE(void gelu_forward(Tensor, const Tensor&))
  LL_NOT_HERE(void gelu_backward(Tensor, const Tensor&, const Tensor&))
  LL_NOT_HERE(void linear_forward(Tensor, const Tensor&, const Tensor&, bool))
  LL_NOT_HERE(void linear_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, bool))
  LL_NOT_HERE(void lora_forward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, double))
  LL_NOT_HERE(void lora_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, const Tensor&, const Tensor&,
                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, bool))
  LL_NOT_HERE(void dropout(Tensor, const Tensor&, double, uint64_t))
  LL_NOT_HERE(void rope_forward(Tensor, const Tensor&, const RopeParams&))
  LL_NOT_HERE(void rope_backward(Tensor, const Tensor&, const RopeParams&))
  LL_NOT_HERE(void attention_forward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const AttentionMask&))
  LL_NOT_HERE(void attention_backward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      const Tensor&, const Tensor&, const AttentionMask&))
  LL_NOT_HERE(void split_qkv(Tensor, Tensor, Tensor, const Tensor&))
  LL_NOT_HERE(void merge_qkv(Tensor, const Tensor&, const Tensor&, const Tensor&))
  LL_NOT_HERE(void swiglu_forward(Tensor, const Tensor&, const Tensor&))
  LL_NOT_HERE(void swiglu_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&))
  LL_NOT_HERE(void add(Tensor, const Tensor&, const Tensor&))
  LL_NOT_HERE(void cross_entropy(Tensor, Tensor, const Tensor&, double, bool))
  LL_NOT_HERE(void argmax_rows(Tensor, const Tensor&))
#undef LL_NOT_HERE

  int allocations = 0, converts = 0;
};

ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.num_hidden_layers = 1;
  c.vocab_size = 11;
  return c;
}

TEST(AdamWMasters, MixedPrecisionBackendsGetF32MastersInitialisedByAWideningCopy) {
  HostMixedBackend backend;
  LoraConfig lora;
  lora.rank = 2;
  lora.targets = parse_lora_targets("q_proj,v_proj", tiny_config());
  ParamStore params(backend, tiny_config(), lora, TrainableConfig::parse("embed,norm"));
  Rng rng(1);
  for (Param& p : params.all()) upload_f64(backend, p.value, test::random_vector(rng, p.numel()));
  AdamW opt(backend, params, AdamWConfig{});
  EXPECT_TRUE(opt.has_masters());
  size_t master_bytes = 0, trainable = 0;
  for (const Param& p : params.all()) trainable += p.trainable;
  ASSERT_EQ(opt.slots().size(), trainable);
  for (const OptimizerSlot& s : opt.slots()) {
    ASSERT_FALSE(s.master.empty()) << s.param->name;
    EXPECT_EQ(s.master.dtype, DType::F32);
    EXPECT_EQ(s.m.dtype, DType::F32);
    EXPECT_EQ(s.master.dims(), s.param->value.dims());
    master_bytes += s.master.nbytes();
    // Exactly the widened bf16 values.
    EXPECT_EQ(download_f64(backend, s.master), download_f64(backend, s.param->value)) << s.param->name;
  }
  EXPECT_GE(opt.state_bytes(), 3 * master_bytes) << "masters live in the optimizer arena with m and v";
  EXPECT_EQ(size_t(backend.converts), trainable);
}

TEST(AdamWMasters, SmallUpdatesAccumulateInTheMasterAndTheWorkingCopyIsItsRounding) {
  HostMixedBackend backend;
  ParamStore params(backend, tiny_config(), LoraConfig{}, TrainableConfig::parse("norm"));  // norms
  for (Param& p : params.all()) upload_f64(backend, p.value, std::vector<double>(size_t(p.numel()), 1.0));
  AdamW opt(backend, params, AdamWConfig{0.9, 0.999, 1e-8, 0.0});
  // lr 1e-4 per step moves a weight of 1.0 by ~1e-4: below bf16's spacing there (2^-7), so without masters the
  // weights would never change. With masters they drift by ~n·lr and the working copy follows the rounding.
  const int steps = 50;
  for (int t = 0; t < steps; ++t) {
    for (OptimizerSlot& s : opt.slots()) upload_f64(backend, s.param->grad, std::vector<double>(size_t(s.param->numel()), 1.0));
    opt.step(1e-4);
  }
  for (OptimizerSlot& s : opt.slots()) {
    const std::vector<double> master = download_f64(backend, s.master), value = download_f64(backend, s.param->value);
    for (size_t i = 0; i < master.size(); ++i) {
      EXPECT_NEAR(master[i], 1.0 - steps * 1e-4, 1e-5) << s.param->name;  // Adam with a constant gradient: lr per step
      EXPECT_EQ(value[i], double(bf16_to_f32(f32_to_bf16(float(master[i])))));
    }
    EXPECT_NE(value[0], 1.0) << "the working copy moved once the master crossed a bf16 rounding boundary";
  }
  // Overwriting the working weights (e.g. loading a checkpoint) and re-syncing puts the masters back in line.
  for (OptimizerSlot& s : opt.slots()) upload_f64(backend, s.param->value, std::vector<double>(size_t(s.param->numel()), 2.0));
  opt.sync_masters();
  for (OptimizerSlot& s : opt.slots())
    for (double x : download_f64(backend, s.master)) EXPECT_EQ(x, 2.0);
}

TEST(AdamWMasters, SameDtypeBackendsKeepNoMasters) {
  // The CPU path is unchanged: its weights are the masters (covered in depth by test_optimizer.cpp).
  CpuBackend<float> cpu;
  ParamStore params(cpu, tiny_config(), LoraConfig{}, TrainableConfig::parse("embed,norm"));
  AdamW opt(cpu, params, AdamWConfig{});
  EXPECT_FALSE(opt.has_masters());
  for (const OptimizerSlot& s : opt.slots()) EXPECT_TRUE(s.master.empty()) << s.param->name;
  EXPECT_NO_THROW(opt.sync_masters());
}

}  // namespace
}  // namespace ll
