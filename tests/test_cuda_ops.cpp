// The CUDA backend against the CPU fp32 reference, op by op, on fresh random inputs at several shapes; then a
// small model trained for 20 steps on both, and two GPU runs compared bit for bit. Every test skips, printing the
// reason, when this build has no CUDA or the machine no usable GPU.
//
// Protocol: inputs are drawn in double, uploaded to the GPU (rounded to bf16 where the policy stores bf16), and the
// CPU reference is fed exactly those rounded values. Outputs are poisoned (NaN-filled) before each GPU run so an
// element the kernel forgets fails. Errors are ‖out − ref‖/‖ref‖ over the tensor (NaN never passes: every
// comparison with NaN is false), plus a per-row bound where a mask bug would hide in a tensor-wide norm.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <cstring>
#include <memory>
#include <tuple>

#include "core/backend.h"
#include "cpu/cpu_backend.h"
#include "core/dropout_mask.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/tensor_host.h"
#include "test_util.h"
#include "optim/adamw.h"

#ifdef LONGLORA_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace ll {
namespace {

// ---- end to end ----------------------------------------------------------------------------------------------------------------
ModelOptions e2e_options() {
  ModelOptions o;
  o.config.hidden_size = 256, o.config.intermediate_size = 344, o.config.num_attention_heads = 4;
  o.config.num_key_value_heads = 2, o.config.num_hidden_layers = 2, o.config.vocab_size = 101;
  o.config.rope_scaling_factor = 2.0;
  o.batch = 2;
  o.seq_len = 64;
  o.attention.use_s2 = true;  // G = 16
  o.lora.rank = 4;
  o.lora.alpha = 8;
  o.lora.targets = parse_lora_targets("q_proj,k_proj,v_proj,o_proj", o.config);
  o.trainable = TrainableConfig::parse("embed,norm");  // LongLoRA's LoRA+: embeddings and norms train too
  o.ce_chunk_rows = 48;                                     // several cross-entropy chunks, one partial
  return o;
}

struct RunResult {
  std::vector<double> losses;
  std::vector<std::vector<double>> weights;  // trainable parameters after the last step
  int64_t scratch_growths_after_first_step = 0;
};

// The same run on GPT-NeoX: fused QKV, LayerNorm, GELU, biases, a quarter of each head rotating; LongLoRA's NeoX
// targets (query_key_value, dense) and embed,norm (embed_in, embed_out, every LayerNorm).
ModelOptions neox_e2e_options(bool parallel_residual) {
  ModelOptions o = e2e_options();
  o.config.model_type = "gpt_neox";
  o.config.num_key_value_heads = o.config.num_attention_heads;
  o.config.intermediate_size = 4 * o.config.hidden_size;
  o.config.rotary_dims = o.config.head_dim() / 4;
  o.config.parallel_residual = parallel_residual;
  o.config.hidden_act = "gelu";
  o.lora.targets = parse_lora_targets("query_key_value,dense", o.config);
  return o;
}

// 20 AdamW steps on fixed random batches. `init` supplies the initial weights (by parameter name).
RunResult train(Backend& backend, const std::vector<std::pair<std::string, std::vector<double>>>& init, int steps,
                const ModelOptions& options = e2e_options()) {
  Model model(backend, options);
  for (const auto& [name, values] : init) upload_f64(backend, model.params().get(name).value, values);
  AdamW opt(backend, model.params(), AdamWConfig{0.9, 0.999, 1e-8, 0.0});
  Rng rng(99);
  const int64_t T = 2 * 64;
  RunResult r;
  [[maybe_unused]] int64_t growth0 = 0;
  for (int step = 0; step < steps; ++step) {
    std::vector<int32_t> tokens(T), targets(T);
    for (int64_t t = 0; t < T; ++t) tokens[t] = int32_t(rng.below(101));
    // A learnable rule (the target is a fixed function of the token), some targets ignored.
    for (int64_t t = 0; t < T; ++t) targets[t] = (t % 64 == 63 || t % 17 == 5) ? -100 : (tokens[t] * 7 + 3) % 101;
    model.params().zero_grads();
    r.losses.push_back(model.forward_backward(tokens.data(), targets.data()).mean());
    opt.clip_grad_norm(1.0);
    opt.step(5e-3);
#ifdef LONGLORA_WITH_CUDA
    if (auto* cuda = dynamic_cast<CudaBackend*>(&backend)) {
      if (step == 0) growth0 = cuda->scratch_reallocations();
      r.scratch_growths_after_first_step = cuda->scratch_reallocations() - growth0;
    }
#endif
  }
  for (Param& p : model.params().all())
    if (p.trainable) r.weights.push_back(download_f64(backend, p.value));
  return r;
}

// The end-to-end comparison below is only meaningful if the reference run learns: checked on the CPU, every build.
TEST(CudaEndToEndSetup, TheReferenceRunLearnsOnTheCpu) {
  CpuBackend<float> cpu;
  std::vector<std::pair<std::string, std::vector<double>>> init;
  {
    Model model(cpu, e2e_options());
    model.init_random(7, 0.05);
    for (Param& p : model.params().all()) init.push_back({p.name, download_f64(cpu, p.value)});
  }
  const RunResult r = train(cpu, init, 20);
  ASSERT_EQ(r.losses.size(), 20u);
  EXPECT_LT(r.losses.back(), r.losses.front() - 0.05) << "first " << r.losses.front() << ", last " << r.losses.back();
}

TEST(CudaEndToEndSetup, TheGptNeoXReferenceRunsLearnOnTheCpu) {
  for (const bool parallel : {true, false}) {
    CpuBackend<float> cpu;
    std::vector<std::pair<std::string, std::vector<double>>> init;
    {
      Model model(cpu, neox_e2e_options(parallel));
      model.init_random(7, 0.05);
      for (Param& p : model.params().all()) init.push_back({p.name, download_f64(cpu, p.value)});
    }
    const RunResult r = train(cpu, init, 20, neox_e2e_options(parallel));
    EXPECT_LT(r.losses.back(), r.losses.front() - 0.05)
        << (parallel ? "parallel" : "sequential") << ": first " << r.losses.front() << ", last " << r.losses.back();
  }
}

#ifndef LONGLORA_WITH_CUDA

TEST(CudaOps, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA support (nvcc was not found)"; }

#else

// Without a usable device the constructor fails with the runtime's reason (CPU-only machines run this one).
TEST(CudaBackendCreation, FailsClearlyWithoutAUsableDevice) {
  for (const BackendInfo& info : list_backends())
    if (info.name == "cuda" && info.available) GTEST_SKIP() << "a usable CUDA device is present";
  try {
    CudaBackend backend(0);
    FAIL() << "constructing the CUDA backend without a usable device must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda backend: "), std::string::npos) << e.what();
  }
}

// The backend, or a skip with the registry's reason.
class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const BackendInfo& info : list_backends())
      if (info.name == "cuda" && !info.available) GTEST_SKIP() << "no usable CUDA device: " << info.description;
    backend_ = std::make_unique<CudaBackend>(0);
  }
  CudaBackend& gpu() { return *backend_; }
  CpuBackend<float> cpu;
  Rng rng{20240601};

  // A device tensor owned by the test.
  struct Dev {
    Backend* be = nullptr;
    Tensor t;
    Dev(Backend& b, DType dt, std::vector<int64_t> dims) : be(&b) {
      Tensor shape(nullptr, dt, Device::CUDA, dims);
      t = Tensor(b.allocate(shape.nbytes()), dt, Device::CUDA, dims);
    }
    ~Dev() { be->release(t.data); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
  };
  // A device tensor that starts `offset` elements into its buffer, as a view into a larger tensor does. Offsets 1
  // and 3 leave bf16 data off 16-byte alignment (the kernels' scalar paths), 0 and 8 keep it (the vector paths).
  struct OffsetDev {
    Backend* be = nullptr;
    void* buf = nullptr;
    Tensor t;
    OffsetDev(Backend& b, DType dt, std::vector<int64_t> dims, int64_t offset) : be(&b) {
      Tensor shape(nullptr, dt, Device::CUDA, dims);
      buf = b.allocate(shape.nbytes() + size_t(offset) * dtype_size(dt));
      t = Tensor(static_cast<char*>(buf) + size_t(offset) * dtype_size(dt), dt, Device::CUDA, dims);
    }
    ~OffsetDev() { be->release(buf); }
    OffsetDev(const OffsetDev&) = delete;
    OffsetDev& operator=(const OffsetDev&) = delete;
  };
  std::vector<float> put(const Tensor& t, const std::vector<double>& values) {
    upload_f64(gpu(), t, values);
    return as_f32(download_f64(gpu(), t));
  }
  // The tensor's bytes as the GPU holds them (for bit-for-bit comparisons).
  std::vector<uint8_t> raw(const Tensor& t) {
    std::vector<uint8_t> bytes(t.nbytes());
    gpu().copy_to_host(bytes.data(), t);
    return bytes;
  }
  // Uploads values (rounded to the tensor's dtype) and returns them as the GPU holds them, as f32 for the CPU.
  std::vector<float> put(Dev& d, const std::vector<double>& values) {
    upload_f64(gpu(), d.t, values);
    return as_f32(download_f64(gpu(), d.t));
  }
  std::vector<float> put_random(Dev& d, double scale = 1.0) { return put(d, test::random_vector(rng, d.t.numel(), scale)); }
  std::vector<int32_t> put_ids(Dev& d, int64_t vocab) {
    std::vector<int32_t> ids(size_t(d.t.numel()));
    for (auto& id : ids) id = int32_t(rng.below(uint64_t(vocab)));
    upload_i32(gpu(), d.t, ids.data());
    return ids;
  }
  void poison(Dev& d) { gpu().fill(d.t, NAN); }
  std::vector<double> get(const Dev& d) { return download_f64(gpu(), d.t); }
  static std::vector<float> as_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }
  static std::vector<double> as_f64(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

 private:
  std::unique_ptr<CudaBackend> backend_;
};

bool all_finite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// max over rows of ‖got − ref‖_row / (‖ref‖_row + floor·rms row norm)
double max_row_error(const std::vector<double>& got, const std::vector<double>& ref, int64_t row_len,
                     double floor = 0.0) {
  const int64_t rows = int64_t(ref.size()) / row_len;
  double mean_sq = 0;
  for (double x : ref) mean_sq += x * x;
  const double rms_row = std::sqrt(mean_sq / double(std::max<int64_t>(rows, 1)));
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double d = 0, n = 0;
    for (int64_t c = 0; c < row_len; ++c) {
      const double a = got[size_t(r * row_len + c)], b = ref[size_t(r * row_len + c)];
      d += (a - b) * (a - b);
      n += b * b;
    }
    const double e = std::sqrt(d) / (std::sqrt(n) + floor * rms_row + 1e-30);
    if (!(e <= worst)) worst = e;  // NaN propagates
  }
  return worst;
}

#define EXPECT_CLOSE(got, ref, tol, what)                                                          \
  do {                                                                                             \
    const std::vector<double> g_ = (got), r_ = (ref);                                              \
    EXPECT_TRUE(all_finite(g_)) << what << ": non-finite output (an element was never written?)"; \
    EXPECT_LT(test::rel_error(g_, r_), (tol)) << what;                                             \
  } while (0)

// bf16 outputs compared with an f32 reference: bf16 rounding alone gives ~2e-3.
constexpr double kBf16Tol = 1e-2;

// ---- memory, conversion, elementwise ----------------------------------------------------------------------------
TEST_F(CudaOps, CopiesZeroConvertAndFill) {
  Dev a(gpu(), DType::F32, {3, 70}), b(gpu(), DType::F32, {210}), h(gpu(), DType::BF16, {210}), w(gpu(), DType::F64, {210});
  const std::vector<float> x = put_random(a);
  gpu().copy(b.t, a.t);
  EXPECT_EQ(get(b), as_f64(x));
  gpu().convert(h.t, a.t);
  const std::vector<double> hv = get(h);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(hv[i], double(bf16_to_f32(f32_to_bf16(x[i])))) << i;
  gpu().convert(w.t, h.t);
  EXPECT_EQ(get(w), hv);
  gpu().zero(b.t);
  for (double v : get(b)) ASSERT_EQ(v, 0.0);
  gpu().fill(b.t, NAN);
  for (double v : get(b)) ASSERT_TRUE(std::isnan(v));
}

TEST_F(CudaOps, SwiGluAddDropout) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {37, 96}, {5, 11008}}) {
    Dev g(gpu(), DType::BF16, {rows, cols}), u(gpu(), DType::BF16, {rows, cols}), o(gpu(), DType::BF16, {rows, cols});
    Dev dg(gpu(), DType::BF16, {rows, cols}), du(gpu(), DType::BF16, {rows, cols}), dout(gpu(), DType::BF16, {rows, cols});
    std::vector<float> gv = put_random(g, 2.0), uv = put_random(u), dov = put_random(dout);
    std::vector<float> ref(gv.size()), rdg(gv.size()), rdu(gv.size());
    poison(o);
    gpu().swiglu_forward(o.t, g.t, u.t);
    cpu.swiglu_forward(test::view(ref, {rows, cols}), test::view(gv, {rows, cols}), test::view(uv, {rows, cols}));
    EXPECT_CLOSE(get(o), as_f64(ref), kBf16Tol, "swiglu_forward " << rows << "x" << cols);
    poison(dg), poison(du);
    gpu().swiglu_backward(dg.t, du.t, dout.t, g.t, u.t);
    cpu.swiglu_backward(test::view(rdg, {rows, cols}), test::view(rdu, {rows, cols}), test::view(dov, {rows, cols}),
                        test::view(gv, {rows, cols}), test::view(uv, {rows, cols}));
    EXPECT_CLOSE(get(dg), as_f64(rdg), kBf16Tol, "swiglu dgate");
    EXPECT_CLOSE(get(du), as_f64(rdu), kBf16Tol, "swiglu dup");
    // add, in place (out aliases a)
    cpu.add(test::view(ref, {rows, cols}), test::view(gv, {rows, cols}), test::view(uv, {rows, cols}));
    gpu().add(g.t, g.t, u.t);
    EXPECT_CLOSE(get(g), as_f64(ref), kBf16Tol, "add");
    // dropout: the same mask as the CPU, exactly; in place
    for (double p : {0.0, 0.1, 0.5}) {
      std::vector<float> xv = put_random(u), dref(xv.size());
      cpu.dropout(test::view(dref, {rows, cols}), test::view(xv, {rows, cols}), p, 77);
      gpu().dropout(u.t, u.t, p, 77);
      const std::vector<double> got = get(u);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i] == 0.0, dref[i] == 0.0f) << "mask differs at " << i;
      EXPECT_CLOSE(got, as_f64(dref), kBf16Tol, "dropout p=" << p);
    }
  }
}

// ---- embedding ------------------------------------------------------------------------------------------------------
TEST_F(CudaOps, EmbeddingForwardIsAGatherAndBackwardMatchesTheCpuBitForBit) {
  for (auto [T, V, D] : {std::tuple<int64_t, int64_t, int64_t>{1, 3, 8}, {37, 53, 96}, {300, 17, 4096}}) {
    Dev table(gpu(), DType::BF16, {V, D}), ids(gpu(), DType::I32, {T}), out(gpu(), DType::BF16, {T, D});
    Dev dtable(gpu(), DType::F32, {V, D}), dout(gpu(), DType::BF16, {T, D});
    const std::vector<float> tv = put_random(table);
    const std::vector<int32_t> iv = put_ids(ids, V);
    poison(out);
    gpu().embedding_forward(out.t, ids.t, table.t);
    const std::vector<double> got = get(out);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d) ASSERT_EQ(got[t * D + d], double(tv[iv[t] * D + d])) << t << "," << d;
    std::vector<float> dtv = put_random(dtable), dov = put_random(dout);
    std::vector<int32_t> ids_copy = iv;
    gpu().embedding_backward(dtable.t, ids.t, dout.t);
    cpu.embedding_backward(test::view(dtv, {V, D}), Tensor(ids_copy.data(), DType::I32, Device::CPU, {T}),
                           test::view(dov, {T, D}));
    EXPECT_EQ(get(dtable), as_f64(dtv)) << "same order of f32 additions as the CPU: bit-identical";
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------------------------------
TEST_F(CudaOps, RmsNormForwardBackward) {
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 8}, {37, 96}, {3, 1000}, {300, 4096}}) {
    Dev x(gpu(), DType::BF16, {rows, dim}), w(gpu(), DType::BF16, {dim}), out(gpu(), DType::BF16, {rows, dim});
    Dev rstd(gpu(), DType::F32, {rows}), dout(gpu(), DType::BF16, {rows, dim}), dx(gpu(), DType::BF16, {rows, dim});
    Dev dw(gpu(), DType::F32, {dim});
    std::vector<float> xv = put_random(x, 3.0), wv = put_random(w), dov = put_random(dout);
    std::vector<float> ref(xv.size()), rr(static_cast<size_t>(rows));
    poison(out), poison(rstd);
    gpu().rmsnorm_forward(out.t, rstd.t, x.t, w.t, 1e-5);
    cpu.rmsnorm_forward(test::view(ref, {rows, dim}), test::view(rr, {rows}), test::view(xv, {rows, dim}),
                        test::view(wv, {dim}), 1e-5);
    EXPECT_CLOSE(get(out), as_f64(ref), kBf16Tol, "rmsnorm out " << rows << "x" << dim);
    EXPECT_CLOSE(get(rstd), as_f64(rr), 1e-5, "rmsnorm rstd");
    const std::vector<float> rstd_gpu = as_f32(get(rstd));  // the backward's input, for both
    for (bool acc : {false, true}) {
      std::vector<float> dxv = acc ? put_random(dx) : std::vector<float>(xv.size()), dwv = put_random(dw);
      if (!acc) poison(dx);
      gpu().rmsnorm_backward(dx.t, dw.t, dout.t, x.t, w.t, rstd.t, acc);
      std::vector<float> rs = rstd_gpu;
      cpu.rmsnorm_backward(test::view(dxv, {rows, dim}), test::view(dwv, {dim}), test::view(dov, {rows, dim}),
                           test::view(xv, {rows, dim}), test::view(wv, {dim}), test::view(rs, {rows}), acc);
      EXPECT_CLOSE(get(dx), as_f64(dxv), 2e-2, "rmsnorm dx acc=" << acc);
      EXPECT_CLOSE(get(dw), as_f64(dwv), 1e-4, "rmsnorm dw (accumulated)");
    }
  }
}

// ---- linear, LoRA -----------------------------------------------------------------------------------------------------
TEST_F(CudaOps, LinearForwardBackward) {
  for (auto [T, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 8, 3}, {37, 96, 80}, {128, 256, 512}, {5, 7, 9}}) {
    Dev x(gpu(), DType::BF16, {T, K}), w(gpu(), DType::BF16, {N, K}), y(gpu(), DType::BF16, {T, N});
    Dev dy(gpu(), DType::BF16, {T, N}), dx(gpu(), DType::BF16, {T, K}), dw(gpu(), DType::F32, {N, K});
    std::vector<float> xv = put_random(x), wv = put_random(w), dyv = put_random(dy);
    for (bool acc : {false, true}) {
      std::vector<float> yv = acc ? put_random(y) : std::vector<float>(size_t(T * N));
      if (!acc) poison(y);
      gpu().linear_forward(y.t, x.t, w.t, acc);
      cpu.linear_forward(test::view(yv, {T, N}), test::view(xv, {T, K}), test::view(wv, {N, K}), acc);
      EXPECT_CLOSE(get(y), as_f64(yv), kBf16Tol, "linear y " << T << "x" << K << "x" << N << " acc " << acc);
      std::vector<float> dxv = acc ? put_random(dx) : std::vector<float>(size_t(T * K)), dwv = put_random(dw);
      if (!acc) poison(dx);
      gpu().linear_backward(dx.t, dw.t, dy.t, x.t, w.t, acc);
      cpu.linear_backward(test::view(dxv, {T, K}), test::view(dwv, {N, K}), test::view(dyv, {T, N}),
                          test::view(xv, {T, K}), test::view(wv, {N, K}), acc);
      EXPECT_CLOSE(get(dx), as_f64(dxv), kBf16Tol, "linear dx");
      EXPECT_CLOSE(get(dw), as_f64(dwv), 1e-4, "linear dW (f32, accumulated)");
    }
    // Frozen weight: an empty dW is skipped, dx still computed (and matches the CPU's, also without dW).
    std::vector<float> frozen_dxv(static_cast<size_t>(T * K));
    poison(dx);
    gpu().linear_backward(dx.t, Tensor(), dy.t, x.t, w.t, false);
    cpu.linear_backward(test::view(frozen_dxv, {T, K}), Tensor(), test::view(dyv, {T, N}), test::view(xv, {T, K}),
                        test::view(wv, {N, K}), false);
    EXPECT_CLOSE(get(dx), as_f64(frozen_dxv), kBf16Tol, "linear dx, frozen weight");
  }
  EXPECT_GT(gpu().cached_gemm_plans(), 0u);
}

TEST_F(CudaOps, LoraForwardBackward) {
  for (auto [T, K, N, r] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{37, 96, 80, 8}, {64, 256, 128, 4}, {3, 5, 7, 2}}) {
    const double s = 2.0;
    Dev x(gpu(), DType::BF16, {T, K}), xl(gpu(), DType::BF16, {T, K}), w(gpu(), DType::BF16, {N, K});
    Dev a(gpu(), DType::BF16, {r, K}), b(gpu(), DType::BF16, {N, r}), y(gpu(), DType::BF16, {T, N});
    Dev xa(gpu(), DType::BF16, {T, r}), dy(gpu(), DType::BF16, {T, N}), dx(gpu(), DType::BF16, {T, K});
    Dev dxl(gpu(), DType::BF16, {T, K}), dw(gpu(), DType::F32, {N, K}), da(gpu(), DType::F32, {r, K});
    Dev db(gpu(), DType::F32, {N, r}), dxa(gpu(), DType::BF16, {T, r});
    std::vector<float> xv = put_random(x), xlv = put_random(xl), wv = put_random(w), av = put_random(a, 0.3);
    std::vector<float> bv = put_random(b, 0.3), dyv = put_random(dy);
    std::vector<float> yv(static_cast<size_t>(T * N)), xav(static_cast<size_t>(T * r));
    poison(y), poison(xa);
    gpu().lora_forward(y.t, xa.t, x.t, xl.t, w.t, a.t, b.t, s);
    cpu.lora_forward(test::view(yv, {T, N}), test::view(xav, {T, r}), test::view(xv, {T, K}), test::view(xlv, {T, K}),
                     test::view(wv, {N, K}), test::view(av, {r, K}), test::view(bv, {N, r}), s);
    EXPECT_CLOSE(get(y), as_f64(yv), kBf16Tol, "lora y");
    EXPECT_CLOSE(get(xa), as_f64(xav), kBf16Tol, "lora xa");
    const std::vector<float> xa_gpu = as_f32(get(xa));
    for (bool separate : {false, true}) {
      std::vector<float> dxv = put_random(dx), dwv = put_random(dw), dav = put_random(da), dbv = put_random(db);
      std::vector<float> dxlv(static_cast<size_t>(T * K)), dxav(static_cast<size_t>(T * r)), xa_in = xa_gpu;
      poison(dxa);
      if (separate) poison(dxl);
      gpu().lora_backward(dx.t, separate ? dxl.t : Tensor(), dw.t, da.t, db.t, dxa.t, dy.t, x.t, xl.t, xa.t, w.t, a.t,
                          b.t, s, true);
      cpu.lora_backward(test::view(dxv, {T, K}), separate ? test::view(dxlv, {T, K}) : Tensor(), test::view(dwv, {N, K}),
                        test::view(dav, {r, K}), test::view(dbv, {N, r}), test::view(dxav, {T, r}),
                        test::view(dyv, {T, N}), test::view(xv, {T, K}), test::view(xlv, {T, K}),
                        test::view(xa_in, {T, r}), test::view(wv, {N, K}), test::view(av, {r, K}),
                        test::view(bv, {N, r}), s, true);
      EXPECT_CLOSE(get(dxa), as_f64(dxav), kBf16Tol, "lora dxa");
      EXPECT_CLOSE(get(da), as_f64(dav), 2e-2, "lora dA");  // dxa is rounded to bf16 before dA on the GPU
      EXPECT_CLOSE(get(db), as_f64(dbv), 1e-4, "lora dB");
      EXPECT_CLOSE(get(dw), as_f64(dwv), 1e-4, "lora dW");
      EXPECT_CLOSE(get(dx), as_f64(dxv), kBf16Tol, "lora dx separate=" << separate);
      if (separate) EXPECT_CLOSE(get(dxl), as_f64(dxlv), 2e-2, "lora dx_lora");
    }
  }
}

// The thin LoRA products: the hand-written kernels (cuda/lora.cuh) and the cuBLASLt path against the CPU and against
// each other; the kernel path twice, bit for bit. Ranks 1…64 (every rank bucket of the kernels), row counts that are
// not multiples of any tile, widths below, at and above the kernels' K chunks and column tiles (136 = 128 + 8,
// 2184 = 2048 + 136), more row chunks than the reduction's cap (16500 rows), dx accumulated or not, dx_lora or not,
// dx absent, dW or not. The adapter term dominates y and dx (W is small), so a wrong index, a lost term or a scale
// applied twice moves the result by O(1), far beyond the bf16 tolerances; gradients accumulated into random initial
// values are compared as increments.
TEST_F(CudaOps, LoraThinKernelsMatchCublasLtAndTheCpu) {
  using LK = CudaBackend::LoraKernels;
  struct Case {
    int64_t T, K, N, r;
    bool kernels;  // whether the hand-written kernels support the shape (else both paths are cuBLASLt)
  };
  const Case cases[] = {{37, 64, 64, 1, true},     {1000, 136, 64, 8, true},    {37, 4096, 136, 16, true},
                        {1000, 64, 4096, 64, true}, {300, 4096, 4096, 8, true},  {37, 2184, 136, 24, true},
                        {16500, 64, 64, 8, true},   {5, 136, 2184, 3, true},     {1, 8, 8, 2, true},
                        {37, 20, 64, 8, false},     {37, 64, 64, 65, false}};
  const double s = 2.0;
  auto minus = [](std::vector<double> a, const std::vector<double>& b) {
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] -= b[i];
    return a;
  };
  for (const Case& c : cases) {
    const int64_t T = c.T, K = c.K, N = c.N, r = c.r;
    const bool kernels = c.kernels;
    SCOPED_TRACE(::testing::Message() << "T=" << T << " K=" << K << " N=" << N << " r=" << r);
    gpu().set_lora_kernels(LK::HandWritten);
    EXPECT_EQ(gpu().lora_kernels_chosen(T, K, N, r), kernels);
    gpu().set_lora_kernels(LK::CuBlasLt);
    EXPECT_FALSE(gpu().lora_kernels_chosen(T, K, N, r));

    Dev x(gpu(), DType::BF16, {T, K}), xl(gpu(), DType::BF16, {T, K}), w(gpu(), DType::BF16, {N, K});
    Dev a(gpu(), DType::BF16, {r, K}), b(gpu(), DType::BF16, {N, r}), y(gpu(), DType::BF16, {T, N});
    Dev xa(gpu(), DType::BF16, {T, r}), dy(gpu(), DType::BF16, {T, N}), dx(gpu(), DType::BF16, {T, K});
    Dev dxl(gpu(), DType::BF16, {T, K}), dw(gpu(), DType::F32, {N, K}), da(gpu(), DType::F32, {r, K});
    Dev db(gpu(), DType::F32, {N, r}), dxa(gpu(), DType::BF16, {T, r});
    const std::vector<float> xv = put_random(x), xlv = put_random(xl), wv = put_random(w, 0.05);
    const std::vector<float> av = put_random(a, 0.3), bv = put_random(b, 0.3), dyv = put_random(dy);

    // ---- forward
    std::vector<float> yref(size_t(T * N)), xaref(size_t(T * r));
    {
      std::vector<float> xc = xv, xlc = xlv, wc = wv, ac = av, bc = bv;
      cpu.lora_forward(test::view(yref, {T, N}), test::view(xaref, {T, r}), test::view(xc, {T, K}),
                       test::view(xlc, {T, K}), test::view(wc, {N, K}), test::view(ac, {r, K}), test::view(bc, {N, r}), s);
    }
    auto forward = [&](LK path) {
      gpu().set_lora_kernels(path);
      poison(y), poison(xa);
      gpu().lora_forward(y.t, xa.t, x.t, xl.t, w.t, a.t, b.t, s);
      return std::make_pair(get(y), get(xa));
    };
    const auto f1 = forward(LK::HandWritten), f2 = forward(LK::HandWritten), fc = forward(LK::CuBlasLt);
    EXPECT_EQ(f1.first, f2.first) << "lora y: two runs differ";
    EXPECT_EQ(f1.second, f2.second) << "lora xa: two runs differ";
    EXPECT_CLOSE(f1.first, as_f64(yref), kBf16Tol, "lora y (kernels)");
    EXPECT_CLOSE(f1.second, as_f64(xaref), kBf16Tol, "lora xa (kernels)");
    EXPECT_CLOSE(fc.first, as_f64(yref), kBf16Tol, "lora y (cuBLASLt)");
    EXPECT_CLOSE(fc.second, as_f64(xaref), kBf16Tol, "lora xa (cuBLASLt)");
    EXPECT_CLOSE(f1.first, fc.first, kBf16Tol, "lora y: kernels vs cuBLASLt");
    EXPECT_LT(max_row_error(f1.first, fc.first, N, 0.1), 2 * kBf16Tol) << "lora y rows: kernels vs cuBLASLt";

    // ---- backward: mode 0 adds dxa·A into dx, 1 writes dx_lora, 2 writes dx_lora without dx
    const std::vector<float> xav = put_random(xa);
    const std::vector<float> dx0 = as_f32(test::random_vector(rng, T * K)), dw0 = as_f32(test::random_vector(rng, N * K));
    const std::vector<float> da0 = as_f32(test::random_vector(rng, r * K)), db0 = as_f32(test::random_vector(rng, N * r));
    const bool big = K * N > (int64_t(1) << 20);  // dW only where it is cheap to check on the CPU
    for (int mode : {0, 1, 2})
      for (bool acc : {false, true})
        for (bool with_dw : {false, true}) {
          if ((mode == 2 && acc) || (with_dw && big)) continue;
          SCOPED_TRACE(::testing::Message() << "mode=" << mode << " accumulate=" << acc << " dW=" << with_dw);
          const bool has_dx = mode != 2, separate = mode != 0;
          struct Out {
            std::vector<double> dx, dxl, dw, da, db, dxa;
          };
          auto backward = [&](LK path) {
            gpu().set_lora_kernels(path);
            if (acc) upload_f64(gpu(), dx.t, as_f64(dx0)); else poison(dx);
            upload_f64(gpu(), dw.t, as_f64(dw0));
            upload_f64(gpu(), da.t, as_f64(da0));
            upload_f64(gpu(), db.t, as_f64(db0));
            poison(dxl), poison(dxa);
            gpu().lora_backward(has_dx ? dx.t : Tensor(), separate ? dxl.t : Tensor(), with_dw ? dw.t : Tensor(), da.t,
                                db.t, dxa.t, dy.t, x.t, xl.t, xa.t, w.t, a.t, b.t, s, acc);
            Out o;
            if (has_dx) o.dx = get(dx);
            if (separate) o.dxl = get(dxl);
            if (with_dw) o.dw = get(dw);
            o.da = get(da), o.db = get(db), o.dxa = get(dxa);
            return o;
          };
          // The CPU reference (dx starts from the bf16 values the GPU holds).
          Out ref;
          {
            std::vector<float> rdx(size_t(T * K));
            if (acc) {
              upload_f64(gpu(), dx.t, as_f64(dx0));
              rdx = as_f32(get(dx));
            }
            std::vector<float> rdxl(size_t(T * K)), rdw = dw0, rda = da0, rdb = db0, rdxa(size_t(T * r));
            std::vector<float> xc = xv, xlc = xlv, wc = wv, ac = av, bc = bv, dyc = dyv, xac = xav;
            cpu.lora_backward(has_dx ? test::view(rdx, {T, K}) : Tensor(), separate ? test::view(rdxl, {T, K}) : Tensor(),
                              with_dw ? test::view(rdw, {N, K}) : Tensor(), test::view(rda, {r, K}),
                              test::view(rdb, {N, r}), test::view(rdxa, {T, r}), test::view(dyc, {T, N}),
                              test::view(xc, {T, K}), test::view(xlc, {T, K}), test::view(xac, {T, r}),
                              test::view(wc, {N, K}), test::view(ac, {r, K}), test::view(bc, {N, r}), s, acc);
            ref.dx = as_f64(rdx), ref.dxl = as_f64(rdxl), ref.dw = as_f64(rdw), ref.da = as_f64(rda);
            ref.db = as_f64(rdb), ref.dxa = as_f64(rdxa);
          }
          const Out o1 = backward(LK::HandWritten), o2 = backward(LK::HandWritten), oc = backward(LK::CuBlasLt);
          EXPECT_TRUE(o1.dx == o2.dx && o1.dxl == o2.dxl && o1.dw == o2.dw && o1.da == o2.da && o1.db == o2.db &&
                      o1.dxa == o2.dxa)
              << "lora backward: two runs of the kernel path differ";
          const std::vector<double> da0d = as_f64(da0), db0d = as_f64(db0), dw0d = as_f64(dw0);
          for (const Out* o : {&o1, &oc}) {
            const char* which = o == &o1 ? "kernels" : "cuBLASLt";
            EXPECT_CLOSE(o->dxa, ref.dxa, kBf16Tol, "lora dxa (" << which << ")");
            EXPECT_CLOSE(minus(o->da, da0d), minus(ref.da, da0d), 2e-2, "lora dA increment (" << which << ")");
            EXPECT_CLOSE(minus(o->db, db0d), minus(ref.db, db0d), 1e-4, "lora dB increment (" << which << ")");
            if (with_dw) EXPECT_CLOSE(minus(o->dw, dw0d), minus(ref.dw, dw0d), 1e-4, "lora dW increment (" << which << ")");
            if (has_dx) EXPECT_CLOSE(o->dx, ref.dx, kBf16Tol, "lora dx (" << which << ")");
            if (separate) EXPECT_CLOSE(o->dxl, ref.dxl, 2e-2, "lora dx_lora (" << which << ")");
          }
          EXPECT_CLOSE(o1.dxa, oc.dxa, kBf16Tol, "lora dxa: kernels vs cuBLASLt");
          EXPECT_CLOSE(minus(o1.da, da0d), minus(oc.da, da0d), 2e-2, "lora dA: kernels vs cuBLASLt");
          EXPECT_CLOSE(minus(o1.db, db0d), minus(oc.db, db0d), 1e-4, "lora dB: kernels vs cuBLASLt");
          if (has_dx) EXPECT_CLOSE(o1.dx, oc.dx, kBf16Tol, "lora dx: kernels vs cuBLASLt");
          if (separate) EXPECT_CLOSE(o1.dxl, oc.dxl, 2e-2, "lora dx_lora: kernels vs cuBLASLt");
        }
  }
  gpu().set_lora_kernels(LK::Default);
}

// ---- RoPE ---------------------------------------------------------------------------------------------------------------
TEST_F(CudaOps, RopeForwardBackwardWithPositionInterpolation) {
  for (auto [T, H, Dh, theta, factor] : {std::tuple<int64_t, int64_t, int64_t, double, double>{37, 3, 64, 1e4, 1.0},
                                         {20, 2, 8, 1e4, 4.0}, {9, 4, 128, 5e5, 8.0}}) {
    Dev x(gpu(), DType::BF16, {T, H, Dh}), pos(gpu(), DType::I32, {T});
    std::vector<int32_t> pv(static_cast<size_t>(T));
    for (auto& p : pv) p = int32_t(rng.below(8192));
    upload_i32(gpu(), pos.t, pv.data());
    std::vector<float> xv = put_random(x), orig = xv;
    const RopeParams rp{theta, factor};
    gpu().rope_forward(x.t, pos.t, rp);
    cpu.rope_forward(test::view(xv, {T, H, Dh}), Tensor(pv.data(), DType::I32, Device::CPU, {T}), rp);
    EXPECT_CLOSE(get(x), as_f64(xv), kBf16Tol, "rope forward Dh=" << Dh << " factor " << factor);
    xv = as_f32(get(x));
    gpu().rope_backward(x.t, pos.t, rp);
    cpu.rope_backward(test::view(xv, {T, H, Dh}), Tensor(pv.data(), DType::I32, Device::CPU, {T}), rp);
    EXPECT_CLOSE(get(x), as_f64(xv), kBf16Tol, "rope backward");
    EXPECT_CLOSE(get(x), as_f64(orig), 2e-2, "rope backward ∘ forward = identity");
  }
}

// ---- vector and scalar paths of the memory-bound kernels ------------------------------------------------------------
// SwiGLU, add, dropout, RMSNorm and RoPE move 8 bf16 per 16-byte access when their pointers are 16-byte aligned (and,
// for RMSNorm, the row length a multiple of 8; for RoPE, half the head dimension), else they run scalar kernels;
// the vector element-wise kernels finish the n % 8 tail one element at a time. Both paths compute every element
// with the same float operations in the same order, so each case below must give the same bits at every offset
// (0 and 8: vector; 1 and 3: scalar, or mixed) as well as match the CPU. Offsets are in elements.
struct Offsets {
  int64_t in, out;
};
constexpr Offsets kOffsets[] = {{0, 0}, {8, 8}, {1, 1}, {3, 3}, {0, 3}, {1, 0}};

std::string describe(const Offsets& o) { return "offsets in " + std::to_string(o.in) + " out " + std::to_string(o.out); }

TEST_F(CudaOps, ElementwiseVectorAndScalarPathsAgreeBitForBit) {
  for (int64_t n : {1, 7, 8, 9, 15, 3552, 5 * 11008 + 3, 300007}) {
    const std::vector<double> gd = test::random_vector(rng, n, 2.0), ud = test::random_vector(rng, n),
                              dd = test::random_vector(rng, n);
    const char* names[] = {"swiglu out", "swiglu dgate", "swiglu dup", "add", "add in place", "dropout",
                           "dropout in place"};
    std::vector<std::vector<uint8_t>> first;
    for (const Offsets& off : kOffsets) {
      const std::string what = "n " + std::to_string(n) + ", " + describe(off);
      OffsetDev g(gpu(), DType::BF16, {n}, off.in), u(gpu(), DType::BF16, {n}, off.in),
          d(gpu(), DType::BF16, {n}, off.in), o(gpu(), DType::BF16, {n}, off.out), dg(gpu(), DType::BF16, {n}, off.out),
          du(gpu(), DType::BF16, {n}, off.out);
      std::vector<float> gv = put(g.t, gd), uv = put(u.t, ud), dv = put(d.t, dd);
      std::vector<float> ref(static_cast<size_t>(n)), rdg(static_cast<size_t>(n)), rdu(static_cast<size_t>(n));
      std::vector<std::vector<uint8_t>> outs;

      gpu().fill(o.t, NAN);
      gpu().swiglu_forward(o.t, g.t, u.t);
      cpu.swiglu_forward(test::view(ref, {n}), test::view(gv, {n}), test::view(uv, {n}));
      EXPECT_CLOSE(download_f64(gpu(), o.t), as_f64(ref), kBf16Tol, "swiglu_forward " << what);
      outs.push_back(raw(o.t));
      if (off.in == 0 && off.out == 0) {  // deterministic: a second run gives the same bits
        gpu().swiglu_forward(o.t, g.t, u.t);
        EXPECT_TRUE(raw(o.t) == outs.back()) << "two swiglu_forward runs differ, " << what;
      }

      gpu().fill(dg.t, NAN), gpu().fill(du.t, NAN);
      gpu().swiglu_backward(dg.t, du.t, d.t, g.t, u.t);
      cpu.swiglu_backward(test::view(rdg, {n}), test::view(rdu, {n}), test::view(dv, {n}), test::view(gv, {n}),
                          test::view(uv, {n}));
      EXPECT_CLOSE(download_f64(gpu(), dg.t), as_f64(rdg), kBf16Tol, "swiglu dgate " << what);
      EXPECT_CLOSE(download_f64(gpu(), du.t), as_f64(rdu), kBf16Tol, "swiglu dup " << what);
      outs.push_back(raw(dg.t)), outs.push_back(raw(du.t));

      gpu().fill(o.t, NAN);
      gpu().add(o.t, g.t, u.t);
      cpu.add(test::view(ref, {n}), test::view(gv, {n}), test::view(uv, {n}));
      EXPECT_CLOSE(download_f64(gpu(), o.t), as_f64(ref), kBf16Tol, "add " << what);
      outs.push_back(raw(o.t));
      gpu().copy(dg.t, g.t);
      gpu().add(dg.t, dg.t, u.t);  // out aliases a
      outs.push_back(raw(dg.t));
      EXPECT_TRUE(outs.back() == outs[3]) << "add in place differs from add, " << what;

      std::vector<float> dref(static_cast<size_t>(n));
      cpu.dropout(test::view(dref, {n}), test::view(dv, {n}), 0.3, 77);
      gpu().fill(o.t, NAN);
      gpu().dropout(o.t, d.t, 0.3, 77);
      const std::vector<double> got = download_f64(gpu(), o.t);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i] == 0.0, dref[i] == 0.0f) << "mask differs at " << i << ", " << what;
      EXPECT_CLOSE(got, as_f64(dref), kBf16Tol, "dropout " << what);
      outs.push_back(raw(o.t));
      gpu().copy(du.t, d.t);
      gpu().dropout(du.t, du.t, 0.3, 77);  // in place
      outs.push_back(raw(du.t));
      EXPECT_TRUE(outs.back() == outs[5]) << "dropout in place differs, " << what;

      if (first.empty()) first = outs;
      for (size_t k = 0; k < outs.size(); ++k)
        EXPECT_TRUE(outs[k] == first[k]) << names[k] << ": " << what << " differs from offsets 0 (vector path)";
    }
  }
}

// More vectors than the grid has threads (65535 CTAs × 256): the vector loop strides, and the element index of the
// dropout hash must stay right past the first pass. Checked exactly against the host, element by element.
TEST_F(CudaOps, ElementwiseVectorPathStridesOverTheWholeGrid) {
  const int64_t n = 8 * (int64_t(65535) * 256 + 1000) + 5;
  Dev a(gpu(), DType::BF16, {n}), b(gpu(), DType::BF16, {n}), o(gpu(), DType::BF16, {n});
  gpu().fill_uniform(a.t, 11, 3.0), gpu().fill_uniform(b.t, 12, 3.0);
  gpu().fill(o.t, NAN);
  gpu().add(o.t, a.t, b.t);
  std::vector<uint16_t> av(static_cast<size_t>(n)), bv(static_cast<size_t>(n)), ov(static_cast<size_t>(n));
  gpu().copy_to_host(av.data(), a.t), gpu().copy_to_host(bv.data(), b.t), gpu().copy_to_host(ov.data(), o.t);
  int64_t bad = 0, first_bad = -1;
  for (int64_t i = 0; i < n; ++i)
    if (ov[i] != f32_to_bf16(bf16_to_f32(av[i]) + bf16_to_f32(bv[i])) && bad++ == 0) first_bad = i;
  EXPECT_EQ(bad, 0) << "add: first wrong element " << first_bad;
  const double p = 0.25;
  const float keep_scale = float(1.0 / (1.0 - p));
  gpu().dropout(o.t, a.t, p, 5);
  gpu().copy_to_host(ov.data(), o.t);
  bad = 0, first_bad = -1;
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t want = dropout_keep(5, uint64_t(i), p) ? f32_to_bf16(bf16_to_f32(av[i]) * keep_scale) : f32_to_bf16(0.0f);
    if (ov[i] != want && bad++ == 0) first_bad = i;
  }
  EXPECT_EQ(bad, 0) << "dropout: first wrong element " << first_bad;
}

TEST_F(CudaOps, RmsNormStagedAndScalarPathsAgreeBitForBit) {
  // dim % 8 == 0 and dim <= 8192 with aligned pointers: the staged (vector) kernels for out and dx, and the
  // 8-column dw kernel (no width limit); 1001: scalar only; 8200: staged too wide, dw vector.
  for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 8}, {37, 96}, {3, 1000}, {5, 1001}, {4, 8192}, {2, 8200},
                           {300, 4096}}) {
    const std::vector<double> xd = test::random_vector(rng, rows * dim, 3.0), wd = test::random_vector(rng, dim),
                              dod = test::random_vector(rng, rows * dim), dxd = test::random_vector(rng, rows * dim),
                              dwd = test::random_vector(rng, dim);
    const char* names[] = {"out", "rstd", "dx", "dw", "dx accumulated", "dw (second pass)"};
    std::vector<std::vector<uint8_t>> first;
    for (const Offsets& off : kOffsets) {
      const std::string what = std::to_string(rows) + "x" + std::to_string(dim) + ", " + describe(off);
      // x, dout and w at the input offset; out and dx at the output offset
      OffsetDev x(gpu(), DType::BF16, {rows, dim}, off.in), w(gpu(), DType::BF16, {dim}, off.in),
          dout(gpu(), DType::BF16, {rows, dim}, off.in), out(gpu(), DType::BF16, {rows, dim}, off.out),
          dx(gpu(), DType::BF16, {rows, dim}, off.out), rstd(gpu(), DType::F32, {rows}, 0),
          dw(gpu(), DType::F32, {dim}, 0);
      std::vector<float> xv = put(x.t, xd), wv = put(w.t, wd), dov = put(dout.t, dod);
      std::vector<float> ref(static_cast<size_t>(rows * dim)), rr(static_cast<size_t>(rows));
      std::vector<std::vector<uint8_t>> outs;
      gpu().fill(out.t, NAN), gpu().fill(rstd.t, NAN);
      gpu().rmsnorm_forward(out.t, rstd.t, x.t, w.t, 1e-5);
      cpu.rmsnorm_forward(test::view(ref, {rows, dim}), test::view(rr, {rows}), test::view(xv, {rows, dim}),
                          test::view(wv, {dim}), 1e-5);
      EXPECT_CLOSE(download_f64(gpu(), out.t), as_f64(ref), kBf16Tol, "rmsnorm out " << what);
      EXPECT_CLOSE(download_f64(gpu(), rstd.t), as_f64(rr), 1e-5, "rmsnorm rstd " << what);
      outs.push_back(raw(out.t)), outs.push_back(raw(rstd.t));
      const std::vector<float> rstd_gpu = as_f32(download_f64(gpu(), rstd.t));
      for (bool acc : {false, true}) {
        std::vector<float> dxv(static_cast<size_t>(rows * dim)), dwv = put(dw.t, dwd), rs = rstd_gpu;
        if (acc)
          dxv = put(dx.t, dxd);
        else
          gpu().fill(dx.t, NAN);
        gpu().rmsnorm_backward(dx.t, dw.t, dout.t, x.t, w.t, rstd.t, acc);
        cpu.rmsnorm_backward(test::view(dxv, {rows, dim}), test::view(dwv, {dim}), test::view(dov, {rows, dim}),
                             test::view(xv, {rows, dim}), test::view(wv, {dim}), test::view(rs, {rows}), acc);
        EXPECT_CLOSE(download_f64(gpu(), dx.t), as_f64(dxv), 2e-2, "rmsnorm dx acc=" << acc << ", " << what);
        EXPECT_CLOSE(download_f64(gpu(), dw.t), as_f64(dwv), 1e-4, "rmsnorm dw (accumulated), " << what);
        outs.push_back(raw(dx.t)), outs.push_back(raw(dw.t));
      }
      if (first.empty()) first = outs;
      for (size_t k = 0; k < outs.size(); ++k)
        EXPECT_TRUE(outs[k] == first[k]) << "rmsnorm " << names[k] << ": " << what << " differs from offsets 0";
    }
  }
}

TEST_F(CudaOps, RopeVectorAndScalarPathsAgreeBitForBit) {
  // half = Dh/2 a multiple of 8 (Dh 128, 64, 48) with x aligned: the vector kernel; Dh 8 and 24: scalar only.
  for (auto [T, H, Dh] : {std::tuple<int64_t, int64_t, int64_t>{9, 4, 128}, {37, 3, 64}, {20, 2, 8}, {4, 3, 48},
                          {3, 2, 24}, {64, 32, 128}, {5, 9, 128}}) {
    const std::vector<double> xd = test::random_vector(rng, T * H * Dh);
    std::vector<int32_t> pv(static_cast<size_t>(T));
    for (auto& p : pv) p = int32_t(rng.below(8192));
    const RopeParams rp{5e5, 4.0};
    std::vector<std::vector<uint8_t>> first;
    for (int64_t offset : {0, 8, 1, 3}) {
      const std::string what = std::to_string(T) + "x" + std::to_string(H) + "x" + std::to_string(Dh) + ", offset " +
                               std::to_string(offset);
      OffsetDev x(gpu(), DType::BF16, {T, H, Dh}, offset), pos(gpu(), DType::I32, {T}, offset);
      upload_i32(gpu(), pos.t, pv.data());
      std::vector<float> xv = put(x.t, xd);
      std::vector<int32_t> pc = pv;
      std::vector<std::vector<uint8_t>> outs;
      gpu().rope_forward(x.t, pos.t, rp);
      cpu.rope_forward(test::view(xv, {T, H, Dh}), Tensor(pc.data(), DType::I32, Device::CPU, {T}), rp);
      EXPECT_CLOSE(download_f64(gpu(), x.t), as_f64(xv), kBf16Tol, "rope forward " << what);
      outs.push_back(raw(x.t));
      xv = as_f32(download_f64(gpu(), x.t));
      gpu().rope_backward(x.t, pos.t, rp);
      cpu.rope_backward(test::view(xv, {T, H, Dh}), Tensor(pc.data(), DType::I32, Device::CPU, {T}), rp);
      EXPECT_CLOSE(download_f64(gpu(), x.t), as_f64(xv), kBf16Tol, "rope backward " << what);
      outs.push_back(raw(x.t));
      if (first.empty()) first = outs;
      for (size_t k = 0; k < outs.size(); ++k)
        EXPECT_TRUE(outs[k] == first[k]) << "rope " << (k ? "backward" : "forward") << ": " << what
                                         << " differs from offset 0";
    }
  }
}

// ---- GPT-NeoX ops: LayerNorm, bias, GELU, partial rotary ---------------------------------------------------------------
// The same protocol as the RMSNorm / element-wise / RoPE tests above: against the CPU fp32 reference within the same
// bounds, outputs poisoned first, and the vector (offsets 0, 8) and scalar (1, 3, mixed) paths bit for bit.
TEST_F(CudaOps, LayerNormMatchesTheCpuAndItsPathsAgreeBitForBit) {
  // Staged kernels for dim % 8 == 0 up to 8192 (aligned), the 8-column dw/db kernel for any dim % 8 == 0; 1001:
  // scalar only; 8200: staged too wide, dw/db vector. 1000 × 512: 32 row chunks in the dw/db reduction. Rows are
  // shifted by up to ±2·shift; at shift 100 the variance of 9 taken as E[x²] − E[x]² in f32 would be off by ~1e-4,
  // ten times the rstd bound: the two-pass statistics are checked.
  for (auto [rows, dim, shift] : {std::tuple<int64_t, int64_t, double>{1, 8, 4.0}, {37, 96, 4.0}, {3, 1000, 4.0},
                                  {5, 1001, 4.0}, {4, 8192, 4.0}, {2, 8200, 4.0}, {300, 4096, 4.0},
                                  {1000, 512, 4.0}, {37, 96, 100.0}, {64, 4096, 100.0}}) {
    std::vector<double> xd = test::random_vector(rng, rows * dim, 3.0);
    for (int64_t i = 0; i < rows * dim; ++i) xd[size_t(i)] += shift * double((i / dim) % 5 - 2);  // row means ≠ 0
    const std::vector<double> wd = test::random_vector(rng, dim), bd = test::random_vector(rng, dim),
                              dod = test::random_vector(rng, rows * dim), dxd = test::random_vector(rng, rows * dim),
                              dwd = test::random_vector(rng, dim), dbd = test::random_vector(rng, dim);
    const char* names[] = {"out", "mean", "rstd", "dx", "dw", "db", "dx accumulated", "dw (second pass)",
                           "db (second pass)"};
    std::vector<std::vector<uint8_t>> first;
    for (const Offsets& off : kOffsets) {
      const std::string what = std::to_string(rows) + "x" + std::to_string(dim) + " shift " +
                               std::to_string(int(shift)) + ", " + describe(off);
      OffsetDev x(gpu(), DType::BF16, {rows, dim}, off.in), w(gpu(), DType::BF16, {dim}, off.in),
          b(gpu(), DType::BF16, {dim}, off.in), dout(gpu(), DType::BF16, {rows, dim}, off.in),
          out(gpu(), DType::BF16, {rows, dim}, off.out), dx(gpu(), DType::BF16, {rows, dim}, off.out),
          mean(gpu(), DType::F32, {rows}, 0), rstd(gpu(), DType::F32, {rows}, 0), dw(gpu(), DType::F32, {dim}, 0),
          db(gpu(), DType::F32, {dim}, 0);
      std::vector<float> xv = put(x.t, xd), wv = put(w.t, wd), bv = put(b.t, bd), dov = put(dout.t, dod);
      std::vector<float> ref(static_cast<size_t>(rows * dim)), rm(static_cast<size_t>(rows)),
          rr(static_cast<size_t>(rows));
      std::vector<std::vector<uint8_t>> outs;
      gpu().fill(out.t, NAN), gpu().fill(mean.t, NAN), gpu().fill(rstd.t, NAN);
      gpu().layernorm_forward(out.t, mean.t, rstd.t, x.t, w.t, b.t, 1e-5);
      cpu.layernorm_forward(test::view(ref, {rows, dim}), test::view(rm, {rows}), test::view(rr, {rows}),
                            test::view(xv, {rows, dim}), test::view(wv, {dim}), test::view(bv, {dim}), 1e-5);
      EXPECT_CLOSE(download_f64(gpu(), out.t), as_f64(ref), kBf16Tol, "layernorm out " << what);
      EXPECT_CLOSE(download_f64(gpu(), mean.t), as_f64(rm), 1e-5, "layernorm mean " << what);
      EXPECT_CLOSE(download_f64(gpu(), rstd.t), as_f64(rr), 1e-5, "layernorm rstd " << what);
      outs.push_back(raw(out.t)), outs.push_back(raw(mean.t)), outs.push_back(raw(rstd.t));
      const std::vector<float> mean_gpu = as_f32(download_f64(gpu(), mean.t)),
                               rstd_gpu = as_f32(download_f64(gpu(), rstd.t));  // the backward's inputs, for both
      for (bool acc : {false, true}) {
        std::vector<float> dxv(static_cast<size_t>(rows * dim)), dwv = put(dw.t, dwd), dbv = put(db.t, dbd);
        std::vector<float> ms = mean_gpu, rs = rstd_gpu;
        if (acc)
          dxv = put(dx.t, dxd);
        else
          gpu().fill(dx.t, NAN);
        gpu().layernorm_backward(dx.t, dw.t, db.t, dout.t, x.t, w.t, mean.t, rstd.t, acc);
        cpu.layernorm_backward(test::view(dxv, {rows, dim}), test::view(dwv, {dim}), test::view(dbv, {dim}),
                               test::view(dov, {rows, dim}), test::view(xv, {rows, dim}), test::view(wv, {dim}),
                               test::view(ms, {rows}), test::view(rs, {rows}), acc);
        EXPECT_CLOSE(download_f64(gpu(), dx.t), as_f64(dxv), 2e-2, "layernorm dx acc=" << acc << ", " << what);
        EXPECT_CLOSE(download_f64(gpu(), dw.t), as_f64(dwv), 1e-4, "layernorm dw (accumulated), " << what);
        EXPECT_CLOSE(download_f64(gpu(), db.t), as_f64(dbv), 1e-4, "layernorm db (accumulated), " << what);
        outs.push_back(raw(dx.t)), outs.push_back(raw(dw.t)), outs.push_back(raw(db.t));
      }
      if (first.empty()) first = outs;
      for (size_t k = 0; k < outs.size(); ++k)
        EXPECT_TRUE(outs[k] == first[k]) << "layernorm " << names[k] << ": " << what << " differs from offsets 0";
    }
  }
  // Empty gradients are skipped: db alone gives the bits db gets alongside dx and dw.
  const int64_t rows = 37, dim = 96;
  Dev x(gpu(), DType::BF16, {rows, dim}), w(gpu(), DType::BF16, {dim}), b(gpu(), DType::BF16, {dim});
  Dev out(gpu(), DType::BF16, {rows, dim}), mean(gpu(), DType::F32, {rows}), rstd(gpu(), DType::F32, {rows});
  Dev dout(gpu(), DType::BF16, {rows, dim}), dx(gpu(), DType::BF16, {rows, dim}), dw(gpu(), DType::F32, {dim});
  Dev db(gpu(), DType::F32, {dim});
  put_random(x, 2.0), put_random(w), put_random(b), put_random(dout);
  gpu().layernorm_forward(out.t, mean.t, rstd.t, x.t, w.t, b.t, 1e-5);
  gpu().zero(dw.t), gpu().zero(db.t);
  gpu().layernorm_backward(dx.t, dw.t, db.t, dout.t, x.t, w.t, mean.t, rstd.t, false);
  const std::vector<uint8_t> db_all = raw(db.t);
  gpu().zero(db.t);
  gpu().layernorm_backward(Tensor(), Tensor(), db.t, dout.t, x.t, w.t, mean.t, rstd.t, false);
  EXPECT_TRUE(raw(db.t) == db_all) << "layernorm db alone differs from db with dx and dw";
}

TEST_F(CudaOps, GeluMatchesTheCpuAndItsPathsAgreeBitForBit) {
  for (int64_t n : {1, 7, 8, 9, 3552, 5 * 8192 + 3, 300007}) {
    const std::vector<double> xd = test::random_vector(rng, n, 2.5), dd = test::random_vector(rng, n);
    const char* names[] = {"out", "dx", "out in place", "dx in place"};
    std::vector<std::vector<uint8_t>> first;
    for (const Offsets& off : kOffsets) {
      const std::string what = "n " + std::to_string(n) + ", " + describe(off);
      OffsetDev x(gpu(), DType::BF16, {n}, off.in), d(gpu(), DType::BF16, {n}, off.in),
          o(gpu(), DType::BF16, {n}, off.out), dx(gpu(), DType::BF16, {n}, off.out);
      std::vector<float> xv = put(x.t, xd), dv = put(d.t, dd), ref(static_cast<size_t>(n)),
                         rdx(static_cast<size_t>(n));
      std::vector<std::vector<uint8_t>> outs;
      gpu().fill(o.t, NAN);
      gpu().gelu_forward(o.t, x.t);
      cpu.gelu_forward(test::view(ref, {n}), test::view(xv, {n}));
      EXPECT_CLOSE(download_f64(gpu(), o.t), as_f64(ref), kBf16Tol, "gelu_forward " << what);
      outs.push_back(raw(o.t));
      gpu().fill(dx.t, NAN);
      gpu().gelu_backward(dx.t, d.t, x.t);
      cpu.gelu_backward(test::view(rdx, {n}), test::view(dv, {n}), test::view(xv, {n}));
      EXPECT_CLOSE(download_f64(gpu(), dx.t), as_f64(rdx), kBf16Tol, "gelu_backward " << what);
      outs.push_back(raw(dx.t));
      gpu().copy(o.t, x.t);
      gpu().gelu_forward(o.t, o.t);  // out aliases x
      outs.push_back(raw(o.t));
      EXPECT_TRUE(outs.back() == outs[0]) << "gelu_forward in place differs, " << what;
      gpu().copy(dx.t, d.t);
      gpu().gelu_backward(dx.t, dx.t, x.t);  // dx aliases dout
      outs.push_back(raw(dx.t));
      EXPECT_TRUE(outs.back() == outs[1]) << "gelu_backward in place differs, " << what;
      if (first.empty()) first = outs;
      for (size_t k = 0; k < outs.size(); ++k)
        EXPECT_TRUE(outs[k] == first[k]) << "gelu " << names[k] << ": " << what << " differs from offsets 0";
    }
  }
}

TEST_F(CudaOps, BiasAddAndBackwardMatchTheCpuAndPathsAgreeBitForBit) {
  // add_bias: bf16(f32(y) + f32(b)) element by element, exactly the CPU's f32 sum rounded to bf16. bias_backward: the
  // column sums (16500 rows: more row chunks than the reduction's cap) as an increment onto random initial values.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {5, 7}, {37, 96}, {3, 6144}, {300, 4096}, {16500, 64},
                            {33, 1001}}) {
    const std::vector<double> yd = test::random_vector(rng, rows * cols, 3.0), bd = test::random_vector(rng, cols),
                              dyd = test::random_vector(rng, rows * cols), dbd = test::random_vector(rng, cols);
    std::vector<std::vector<uint8_t>> first;
    for (const Offsets& off : kOffsets) {
      const std::string what = std::to_string(rows) + "x" + std::to_string(cols) + ", " + describe(off);
      OffsetDev y(gpu(), DType::BF16, {rows, cols}, off.out), b(gpu(), DType::BF16, {cols}, off.in),
          dy(gpu(), DType::BF16, {rows, cols}, off.in), db(gpu(), DType::F32, {cols}, 0);
      const std::vector<float> yv = put(y.t, yd), bv = put(b.t, bd), dyv = put(dy.t, dyd), db0 = put(db.t, dbd);
      gpu().add_bias(y.t, b.t);
      const std::vector<double> got = download_f64(gpu(), y.t);
      int64_t wrong = 0, first_wrong = -1;
      for (int64_t i = 0; i < rows * cols; ++i)
        if (got[size_t(i)] != double(bf16_to_f32(f32_to_bf16(yv[size_t(i)] + bv[size_t(i % cols)]))) && wrong++ == 0)
          first_wrong = i;
      EXPECT_EQ(wrong, 0) << "add_bias " << what << ": first wrong element " << first_wrong;
      std::vector<float> rdb = db0, dyc = dyv;
      gpu().bias_backward(db.t, dy.t);
      cpu.bias_backward(test::view(rdb, {cols}), test::view(dyc, {rows, cols}));
      std::vector<double> inc = download_f64(gpu(), db.t), ref_inc = as_f64(rdb);
      for (int64_t c = 0; c < cols; ++c) inc[size_t(c)] -= db0[size_t(c)], ref_inc[size_t(c)] -= db0[size_t(c)];
      EXPECT_CLOSE(inc, ref_inc, 1e-5, "bias_backward increment " << what);
      std::vector<std::vector<uint8_t>> outs = {raw(y.t), raw(db.t)};
      gpu().bias_backward(Tensor(), dy.t);  // frozen bias: nothing to do
      if (first.empty()) first = outs;
      EXPECT_TRUE(outs[0] == first[0]) << "add_bias: " << what << " differs from offsets 0";
      EXPECT_TRUE(outs[1] == first[1]) << "bias_backward: " << what << " differs from offsets 0";
    }
  }
}

TEST_F(CudaOps, SplitAndMergeQkvMoveExactlyTheCpusBytes) {
  // GPT-NeoX's fused query_key_value rows: pure copies, so the GPU must give the CPU reference's values exactly, on
  // the 16-byte path (head dims a multiple of 8, aligned) and the element path (odd offsets, head dim 6).
  for (auto [rows, heads, dh] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 8}, {5, 4, 6}, {37, 16, 128},
                                 {300, 8, 64}, {3, 2, 2}}) {
    const int64_t width = 3 * heads * dh, n = rows * heads * dh;
    const std::vector<double> src = test::random_vector(rng, rows * width);
    for (const Offsets& off : kOffsets) {
      const std::string what = std::to_string(rows) + "x" + std::to_string(heads) + "x" + std::to_string(dh) + ", " +
                               describe(off);
      OffsetDev qkv(gpu(), DType::BF16, {rows, width}, off.in), back(gpu(), DType::BF16, {rows, width}, off.in);
      OffsetDev q(gpu(), DType::BF16, {rows, heads, dh}, off.out), k(gpu(), DType::BF16, {rows, heads, dh}, off.out),
          v(gpu(), DType::BF16, {rows, heads, dh}, off.out);
      std::vector<float> host = put(qkv.t, src), rq(static_cast<size_t>(n)), rk(static_cast<size_t>(n)),
                         rv(static_cast<size_t>(n));
      for (Tensor* t : {&q.t, &k.t, &v.t, &back.t}) gpu().fill(*t, NAN);
      gpu().split_qkv(q.t, k.t, v.t, qkv.t);
      cpu.split_qkv(test::view(rq, {rows, heads, dh}), test::view(rk, {rows, heads, dh}),
                    test::view(rv, {rows, heads, dh}), test::view(host, {rows, width}));
      EXPECT_EQ(download_f64(gpu(), q.t), as_f64(rq)) << "split_qkv q, " << what;
      EXPECT_EQ(download_f64(gpu(), k.t), as_f64(rk)) << "split_qkv k, " << what;
      EXPECT_EQ(download_f64(gpu(), v.t), as_f64(rv)) << "split_qkv v, " << what;
      gpu().merge_qkv(back.t, q.t, k.t, v.t);
      EXPECT_TRUE(raw(back.t) == raw(qkv.t)) << "merge_qkv(split_qkv(x)) != x, " << what;
    }
  }
}

TEST_F(CudaOps, PartialRopeMatchesTheCpuAndPassesTheRestThroughBitForBit) {
  // R/2 and Dh multiples of 8 with x aligned: the vector kernel ({64, 16}: pythia-70m/160m, {128, 32}: pythia-1.4b,
  // {80, 64}); R/2 = 12, 2 and Dh 10: scalar. Dims [R, Dh) keep their bits; R = Dh is the default (0) bit for bit.
  for (auto [T, H, Dh, R] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{37, 3, 64, 16}, {9, 4, 128, 32},
                             {4, 2, 80, 64}, {5, 3, 64, 24}, {20, 2, 8, 4}, {6, 2, 10, 4}, {7, 3, 64, 64}}) {
    const std::vector<double> xd = test::random_vector(rng, T * H * Dh);
    std::vector<int32_t> pv(static_cast<size_t>(T));
    for (auto& p : pv) p = int32_t(rng.below(8192));
    const RopeParams rp{10000.0, 4.0, R};
    std::vector<std::vector<uint8_t>> first;
    for (int64_t offset : {0, 8, 1, 3}) {
      const std::string what = std::to_string(T) + "x" + std::to_string(H) + "x" + std::to_string(Dh) + ", R " +
                               std::to_string(R) + ", offset " + std::to_string(offset);
      OffsetDev x(gpu(), DType::BF16, {T, H, Dh}, offset), pos(gpu(), DType::I32, {T}, offset);
      upload_i32(gpu(), pos.t, pv.data());
      std::vector<float> xv = put(x.t, xd);
      std::vector<int32_t> pc = pv;
      std::vector<uint16_t> before(static_cast<size_t>(T * H * Dh)), after(before.size());
      gpu().copy_to_host(before.data(), x.t);
      std::vector<std::vector<uint8_t>> outs;
      gpu().rope_forward(x.t, pos.t, rp);
      cpu.rope_forward(test::view(xv, {T, H, Dh}), Tensor(pc.data(), DType::I32, Device::CPU, {T}), rp);
      EXPECT_CLOSE(download_f64(gpu(), x.t), as_f64(xv), kBf16Tol, "partial rope forward " << what);
      gpu().copy_to_host(after.data(), x.t);
      int64_t moved = 0;
      for (int64_t th = 0; th < T * H; ++th)
        for (int64_t d = R; d < Dh; ++d) moved += after[size_t(th * Dh + d)] != before[size_t(th * Dh + d)];
      EXPECT_EQ(moved, 0) << "dims past rotary_dims changed, " << what;
      outs.push_back(raw(x.t));
      xv = as_f32(download_f64(gpu(), x.t));
      gpu().rope_backward(x.t, pos.t, rp);
      cpu.rope_backward(test::view(xv, {T, H, Dh}), Tensor(pc.data(), DType::I32, Device::CPU, {T}), rp);
      EXPECT_CLOSE(download_f64(gpu(), x.t), as_f64(xv), kBf16Tol, "partial rope backward " << what);
      outs.push_back(raw(x.t));
      if (R == Dh) {  // the default spelling gives the same bits
        put(x.t, xd);
        gpu().rope_forward(x.t, pos.t, RopeParams{10000.0, 4.0});
        EXPECT_TRUE(raw(x.t) == outs[0]) << "rotary_dims = Dh differs from the default 0, " << what;
      }
      if (first.empty()) first = outs;
      for (size_t k = 0; k < outs.size(); ++k)
        EXPECT_TRUE(outs[k] == first[k]) << "partial rope " << (k ? "backward" : "forward") << ": " << what
                                         << " differs from offset 0";
    }
  }
}

TEST_F(CudaOps, Llama3RopeMatchesTheCpu) {
  // Llama-3.1's per-frequency scaling (and LongLoRA's factor composed into it, as rope_params gives it) through the
  // CUDA rate table: the vector path (Dh 128, Llama-3's head) and the scalar one (Dh 10), forward and backward.
  const RopeLlama3 llama31{16.0, 1.0, 4.0, 8192};
  for (auto [T, H, Dh] : {std::tuple<int64_t, int64_t, int64_t>{33, 4, 128}, {7, 3, 10}}) {
    const std::vector<double> xd = test::random_vector(rng, T * H * Dh);
    std::vector<int32_t> pv(static_cast<size_t>(T));
    for (auto& p : pv) p = int32_t(rng.below(8192));  // f32 angles, as the other rope tests
    const RopeParams rp{500000.0, 1.0, 0, llama31};
    const std::string what = std::to_string(T) + "x" + std::to_string(H) + "x" + std::to_string(Dh);
    Dev x(gpu(), DType::BF16, {T, H, Dh}), pos(gpu(), DType::I32, {T});
    upload_i32(gpu(), pos.t, pv.data());
    std::vector<float> xv = put(x.t, xd);
    gpu().rope_forward(x.t, pos.t, rp);
    cpu.rope_forward(test::view(xv, {T, H, Dh}), Tensor(pv.data(), DType::I32, Device::CPU, {T}), rp);
    EXPECT_CLOSE(download_f64(gpu(), x.t), as_f64(xv), kBf16Tol, "llama3 rope forward " << what);
    xv = as_f32(download_f64(gpu(), x.t));
    gpu().rope_backward(x.t, pos.t, rp);
    cpu.rope_backward(test::view(xv, {T, H, Dh}), Tensor(pv.data(), DType::I32, Device::CPU, {T}), rp);
    EXPECT_CLOSE(download_f64(gpu(), x.t), as_f64(xv), kBf16Tol, "llama3 rope backward " << what);
  }
}

// ---- attention ------------------------------------------------------------------------------------------------------------
struct AttnCase {
  int64_t B, L, Lk, H, Hkv, Dh;
  AttentionMask mask;
  cuda_plan::AttentionPath path;
  const char* what;
};

std::vector<AttnCase> attention_cases() {
  using P = cuda_plan::AttentionPath;
  const AttentionMask causal = AttentionMask::causal();
  return {
      {1, 64, 64, 2, 1, 64, causal, P::TensorCore, "tc causal 64, one tile, GQA 2"},
      {2, 100, 100, 4, 2, 128, causal, P::TensorCore, "tc causal odd L, Dh 128"},
      {1, 513, 513, 2, 2, 128, causal, P::TensorCore, "tc causal 513"},
      {1, 129, 129, 4, 4, 64, AttentionMask::s2(32, false), P::TensorCore, "tc S2 G=32, L not a multiple"},
      {1, 200, 200, 8, 2, 64, AttentionMask::s2(50, false), P::TensorCore, "tc S2 G=50 (shift 25, unaligned), GQA 4"},
      {2, 96, 96, 4, 2, 128, AttentionMask::s2(7, false), P::TensorCore, "tc S2 odd G=7"},
      {1, 128, 128, 8, 2, 64, AttentionMask::s2(32, true), P::TensorCore, "tc S2 roll G=32"},
      {1, 64, 64, 4, 2, 128, AttentionMask::s2(16, true), P::TensorCore, "tc S2 roll G=16 (wrap tile = main tile)"},
      {1, 256, 256, 2, 2, 64, AttentionMask::s2(128, false), P::TensorCore, "tc S2 G=128 tile-aligned"},
      {1, 37, 300, 4, 2, 64, causal, P::TensorCore, "tc queries = last rows of longer keys"},
      {1, 1, 1, 2, 1, 128, causal, P::TensorCore, "tc one row"},
      // Several 128-row query tiles: unmasked interior tiles, diagonal tiles, double-buffered key tiles.
      {1, 1000, 1000, 4, 2, 128, causal, P::TensorCore, "tc causal 1000 (interior tiles skip the mask), GQA 2"},
      {1, 777, 777, 2, 1, 64, causal, P::TensorCore, "tc causal 777, Dh 64, GQA 2"},
      {1, 1024, 1024, 4, 4, 128, AttentionMask::s2(256, false), P::TensorCore, "tc S2 G=256, L=1024 (as in training)"},
      {1, 1024, 1024, 8, 2, 128, AttentionMask::s2(256, true), P::TensorCore, "tc S2 roll G=256, GQA 4"},
      {1, 600, 600, 4, 2, 64, AttentionMask::s2(200, false), P::TensorCore, "tc S2 G=200 (shift 100, unaligned)"},
      {1, 200, 1000, 2, 1, 128, causal, P::TensorCore, "tc 200 queries = last rows of 1000 keys"},
      {1, 7, 7, 2, 1, 4, causal, P::Generic, "generic Dh 4"},
      {2, 33, 50, 6, 3, 32, causal, P::Generic, "generic Dh 32, Lk > L"},
      {1, 45, 45, 4, 2, 96, AttentionMask::s2(9, false), P::Generic, "generic Dh 96 S2 odd G"},
      {1, 40, 40, 4, 2, 64, AttentionMask::s2(8, true), P::Generic, "generic forced, S2 roll"},
      {1, 20, 20, 2, 1, 256, causal, P::Generic, "generic Dh 256"},
      {1, 1, 1000, 4, 2, 128, causal, P::Decode, "decode 1 row, 1000 keys"},
      {2, 5, 777, 4, 4, 64, causal, P::Decode, "decode 5 rows, batch 2"},
      {1, 8, 2050, 2, 1, 256, causal, P::Decode, "decode 8 rows, Dh 256"},
      {1, 3, 300, 2, 2, 32, causal, P::Decode, "decode Dh 32"},
      // Sliding windows (Mistral): tiles before the window skipped, partial tiles masked; with S2 and GQA; decoding
      // against a long cache (the tensor-core path: the split-KV kernel has no window).
      {1, 1000, 1000, 4, 2, 128, causal.windowed(200), P::TensorCore, "tc window 200 of 1000, GQA 2"},
      {2, 300, 300, 4, 2, 64, causal.windowed(64), P::TensorCore, "tc window 64 (tile-aligned), Dh 64"},
      {1, 513, 513, 8, 2, 128, causal.windowed(1), P::TensorCore, "tc window 1 (self only), GQA 4"},
      {1, 1024, 1024, 8, 2, 128, AttentionMask::s2(256, false).windowed(100), P::TensorCore, "tc S2 G=256 + window 100"},
      {1, 512, 512, 4, 2, 128, AttentionMask::s2(128, true).windowed(300), P::TensorCore,
       "tc S2 roll + window wider than G (no wrap)"},
      {1, 3, 1000, 4, 2, 128, causal.windowed(130), P::TensorCore, "tc decoding 3 rows, 1000 keys, window 130"},
      {1, 37, 300, 4, 2, 64, causal.windowed(50), P::TensorCore, "tc 37 rows of 300 keys, window 50"},
      {1, 45, 60, 4, 2, 96, causal.windowed(9), P::Generic, "generic Dh 96, window 9, Lk > L"},
  };
}

class CudaAttention : public CudaOps, public ::testing::WithParamInterface<AttnCase> {
 protected:
  // Runs the forward and backward — with the given passes on wgmma and the others on mma.sync, or (nullopt) with the
  // backend's default choice — and checks out, lse, dQ, dK, dV against the CPU, every element written (outputs are
  // poisoned first), both passes deterministic.
  void check_attention_passes(const AttnCase& c, std::optional<cuda_plan::AttentionWgmma> passes, const char* name);
};

TEST_P(CudaAttention, ForwardAndBackwardMatchTheCpu) {
  check_attention_passes(GetParam(), std::nullopt, "default kernels");
}

// The tensor-core passes at head dim 128 one kernel family at a time — mma.sync (attention.cu; the default before
// Hopper) for every pass, then (where the device runs them) each wgmma pass of attention_wgmma.cu alone — against
// the CPU within the default test's bounds, every element written, deterministic. The wgmma passes are tests of
// their own so that a kernel fault there cannot take the other GPU tests down with it: gpu_check.sh runs them
// first, each in its own process, and runs the rest with LONGLORA_ATTENTION_WGMMA set to the passes that held.
void CudaAttention::check_attention_passes(const AttnCase& c, std::optional<cuda_plan::AttentionWgmma> passes,
                                           const char* name) {
  const int64_t B = c.B, L = c.L, Lk = c.Lk, H = c.H, Hkv = c.Hkv, Dh = c.Dh;
  gpu().force_attention_path(c.path);
  gpu().set_attention_wgmma(passes);
  Dev q(gpu(), DType::BF16, {B, L, H, Dh}), k(gpu(), DType::BF16, {B, Lk, Hkv, Dh}), v(gpu(), DType::BF16, {B, Lk, Hkv, Dh});
  Dev out(gpu(), DType::BF16, {B, L, H, Dh}), lse(gpu(), DType::F32, {B, H, L}), dout(gpu(), DType::BF16, {B, L, H, Dh});
  Dev dq(gpu(), DType::BF16, {B, L, H, Dh}), dk(gpu(), DType::BF16, {B, Lk, Hkv, Dh}), dv(gpu(), DType::BF16, {B, Lk, Hkv, Dh});
  std::vector<float> qv = put_random(q, 1.5), kv = put_random(k, 1.5), vv = put_random(v), dov = put_random(dout);
  std::vector<float> ro(qv.size()), rl(static_cast<size_t>(B * H * L));
  poison(out), poison(lse);
  gpu().attention_forward(out.t, lse.t, q.t, k.t, v.t, c.mask);
  cpu.attention_forward(test::view(ro, {B, L, H, Dh}), test::view(rl, {B, H, L}), test::view(qv, {B, L, H, Dh}),
                        test::view(kv, {B, Lk, Hkv, Dh}), test::view(vv, {B, Lk, Hkv, Dh}), c.mask);
  const std::vector<double> got_out = get(out), got_lse = get(lse);
  EXPECT_CLOSE(got_out, as_f64(ro), 2e-2, c.what << ": out (" << name << ")");
  EXPECT_LT(max_row_error(got_out, as_f64(ro), Dh), 6e-2)
      << c.what << ": worst output row (a mask bug shows here; " << name << ")";
  double lse_err = 0;
  for (size_t i = 0; i < rl.size(); ++i) lse_err = std::max(lse_err, std::fabs(got_lse[i] - rl[i]));
  EXPECT_LT(lse_err, 2e-2) << c.what << ": lse (" << name << ")";
  EXPECT_TRUE(all_finite(got_lse)) << c.what << " (" << name << ")";
  gpu().attention_forward(out.t, lse.t, q.t, k.t, v.t, c.mask);
  EXPECT_EQ(get(out), got_out) << c.what << ": forward run twice (" << name << ")";
  if (c.path == cuda_plan::AttentionPath::Decode) return;  // forward-only path

  // Backward from the GPU's own out/lse (both sides), so only the backward is compared.
  std::vector<float> o_in = as_f32(got_out), l_in = as_f32(got_lse);
  std::vector<float> rdq(qv.size()), rdk(kv.size()), rdv(vv.size());
  poison(dq), poison(dk), poison(dv);
  gpu().attention_backward(dq.t, dk.t, dv.t, dout.t, q.t, k.t, v.t, out.t, lse.t, c.mask);
  cpu.attention_backward(test::view(rdq, {B, L, H, Dh}), test::view(rdk, {B, Lk, Hkv, Dh}),
                         test::view(rdv, {B, Lk, Hkv, Dh}), test::view(dov, {B, L, H, Dh}),
                         test::view(qv, {B, L, H, Dh}), test::view(kv, {B, Lk, Hkv, Dh}),
                         test::view(vv, {B, Lk, Hkv, Dh}), test::view(o_in, {B, L, H, Dh}),
                         test::view(l_in, {B, H, L}), c.mask);
  const std::vector<double> gdq = get(dq), gdk = get(dk), gdv = get(dv);
  EXPECT_CLOSE(gdv, as_f64(rdv), 3e-2, c.what << ": dv (" << name << ")");
  EXPECT_LT(max_row_error(gdv, as_f64(rdv), Dh, 0.2), 0.15) << c.what << ": worst dv row (" << name << ")";
  if (c.L == 1 && c.Lk == 1) {
    // One query, one key: the softmax weight is 1, so dS = P·(dP − δ) = 0 and dQ = dK = 0 exactly; both sides hold
    // rounding noise, which is compared with the size of dV rather than with zero.
    auto norm = [](const std::vector<double>& x) {
      double s = 0;
      for (double e : x) s += e * e;
      return std::sqrt(s);
    };
    const double dv_norm = norm(as_f64(rdv));
    EXPECT_LT(norm(gdq), 3e-2 * dv_norm) << c.what << ": dq must vanish (" << name << ")";
    EXPECT_LT(norm(gdk), 3e-2 * dv_norm) << c.what << ": dk must vanish (" << name << ")";
    EXPECT_TRUE(all_finite(gdq) && all_finite(gdk)) << c.what << " (" << name << ")";
  } else {
    EXPECT_CLOSE(gdq, as_f64(rdq), 3e-2, c.what << ": dq (" << name << ")");
    EXPECT_CLOSE(gdk, as_f64(rdk), 3e-2, c.what << ": dk (" << name << ")");
    EXPECT_LT(max_row_error(gdq, as_f64(rdq), Dh, 0.2), 0.15) << c.what << ": worst dq row (" << name << ")";
    EXPECT_LT(max_row_error(gdk, as_f64(rdk), Dh, 0.2), 0.15) << c.what << ": worst dk row (" << name << ")";
  }

  // Deterministic: a second run is bit-identical.
  gpu().attention_backward(dq.t, dk.t, dv.t, dout.t, q.t, k.t, v.t, out.t, lse.t, c.mask);
  EXPECT_EQ(get(dq), gdq) << c.what << " (" << name << ")";
  EXPECT_EQ(get(dk), gdk) << c.what << " (" << name << ")";
  EXPECT_EQ(get(dv), gdv) << c.what << " (" << name << ")";
}

TEST_P(CudaAttention, MmaSyncPassesMatchTheCpu) {
  const AttnCase c = GetParam();
  if (c.path != cuda_plan::AttentionPath::TensorCore || c.Dh != 128) GTEST_SKIP() << "two kernel families at Dh 128 only";
  check_attention_passes(c, cuda_plan::AttentionWgmma{}, "mma.sync");
}
TEST_P(CudaAttention, WgmmaForwardMatchesTheCpu) {
  const AttnCase c = GetParam();
  if (c.path != cuda_plan::AttentionPath::TensorCore || c.Dh != 128) GTEST_SKIP() << "the wgmma kernels are Dh 128";
  if (!gpu().attention_wgmma_available()) GTEST_SKIP() << "no sm_90a machine code for this device";
  check_attention_passes(c, cuda_plan::AttentionWgmma{true, false, false}, "wgmma forward");
}
TEST_P(CudaAttention, WgmmaDqMatchesTheCpu) {
  const AttnCase c = GetParam();
  if (c.path != cuda_plan::AttentionPath::TensorCore || c.Dh != 128) GTEST_SKIP() << "the wgmma kernels are Dh 128";
  if (!gpu().attention_wgmma_available()) GTEST_SKIP() << "no sm_90a machine code for this device";
  check_attention_passes(c, cuda_plan::AttentionWgmma{false, true, false}, "wgmma dQ");
}
TEST_P(CudaAttention, WgmmaDkdvMatchesTheCpu) {
  const AttnCase c = GetParam();
  if (c.path != cuda_plan::AttentionPath::TensorCore || c.Dh != 128) GTEST_SKIP() << "the wgmma kernels are Dh 128";
  if (!gpu().attention_wgmma_available()) GTEST_SKIP() << "no sm_90a machine code for this device";
  check_attention_passes(c, cuda_plan::AttentionWgmma{false, false, true}, "wgmma dK/dV");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention, ::testing::ValuesIn(attention_cases()),
                         [](const ::testing::TestParamInfo<AttnCase>& info) {
                           return "case" + std::to_string(info.index);
                         });

// ---- cross-entropy, argmax ---------------------------------------------------------------------------------------------
TEST_F(CudaOps, CrossEntropyInPlaceGradientAndArgmax) {
  for (auto [R, V] : {std::pair<int64_t, int64_t>{37, 1000}, {1, 32000}, {4, 3}}) {
    Dev logits(gpu(), DType::BF16, {R, V}), losses(gpu(), DType::F32, {R}), targets(gpu(), DType::I32, {R});
    Dev am(gpu(), DType::I32, {R});
    std::vector<int32_t> tv(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) tv[r] = (r % 5 == 3) ? -100 : int32_t(rng.below(uint64_t(V)));
    upload_i32(gpu(), targets.t, tv.data());
    for (bool grad : {false, true}) {
      std::vector<float> lv = put_random(logits, 3.0), rl(static_cast<size_t>(R));
      // arg-max first (exact, first index on ties: bf16 values tie often)
      gpu().argmax_rows(am.t, logits.t);
      std::vector<int32_t> want_am(static_cast<size_t>(R)), got_am(static_cast<size_t>(R));
      cpu.argmax_rows(Tensor(want_am.data(), DType::I32, Device::CPU, {R}), test::view(lv, {R, V}));
      gpu().copy_to_host(got_am.data(), am.t);
      EXPECT_EQ(got_am, want_am) << "argmax " << R << "x" << V;
      poison(losses);
      const double scale = 1.0 / 31.0;
      gpu().cross_entropy(logits.t, losses.t, targets.t, scale, grad);
      cpu.cross_entropy(test::view(lv, {R, V}), test::view(rl, {R}), Tensor(tv.data(), DType::I32, Device::CPU, {R}),
                        scale, grad);
      EXPECT_CLOSE(get(losses), as_f64(rl), 1e-4, "losses " << R << "x" << V << " grad " << grad);
      const std::vector<double> gl = get(logits);
      if (grad) {
        EXPECT_CLOSE(gl, as_f64(lv), kBf16Tol, "dlogits");
        for (int64_t r = 0; r < R; ++r) {
          if (tv[r] != -100) continue;
          for (int64_t j = 0; j < V; ++j) ASSERT_EQ(gl[r * V + j], 0.0) << "ignored row " << r;
        }
      } else {
        EXPECT_EQ(gl, as_f64(lv)) << "logits untouched without compute_grad";
      }
    }
  }
}

// ---- optimizer support ---------------------------------------------------------------------------------------------------
TEST_F(CudaOps, SumSquaresScaleAndAdamW) {
  const int64_t n = 200001;
  Dev g(gpu(), DType::F32, {n});
  const std::vector<float> gv = put_random(g);
  const double s1 = gpu().sum_squares(g.t), s2 = gpu().sum_squares(g.t);
  std::vector<float> gc = gv;
  const double want = cpu.sum_squares(test::view(gc, {n}));
  EXPECT_NEAR(s1, want, 1e-12 * want);
  EXPECT_EQ(std::memcmp(&s1, &s2, sizeof s1), 0) << "deterministic";
  gpu().scale(g.t, 0.37);
  cpu.scale(test::view(gc, {n}), 0.37);
  EXPECT_EQ(get(g), as_f64(gc)) << "scale: f32(double(x)·s) on both";
  std::vector<double> bad(size_t(n), 1.0);
  bad[12345] = NAN;
  upload_f64(gpu(), g.t, bad);
  EXPECT_TRUE(std::isnan(gpu().sum_squares(g.t))) << "NaN must propagate (the trainer skips such steps)";

  // AdamW: bf16 param with an f32 master against the same update on the host in f32.
  const int64_t m = 5000;
  Dev p(gpu(), DType::BF16, {m}), master(gpu(), DType::F32, {m}), grad(gpu(), DType::F32, {m});
  Dev mm(gpu(), DType::F32, {m}), vv(gpu(), DType::F32, {m});
  std::vector<float> pv = put_random(p, 0.5);
  gpu().convert(master.t, p.t);
  std::vector<float> mv(size_t(m), 0.f), v2(size_t(m), 0.f), master_ref = pv;
  gpu().zero(mm.t), gpu().zero(vv.t);
  for (int64_t t = 1; t <= 3; ++t) {
    const std::vector<float> gr = put_random(grad, 0.1);
    const AdamWStep st{1e-3, 0.9, 0.95, 1e-8, 0.1, t};
    gpu().adamw_step(p.t, master.t, grad.t, mm.t, vv.t, st);
    const double bc1 = 1 - std::pow(0.9, double(t)), bc2 = 1 - std::pow(0.95, double(t));
    for (int64_t i = 0; i < m; ++i) {
      double x = double(master_ref[i]) * (1 - 1e-3 * 0.1);
      mv[i] = float(0.9 * mv[i] + 0.1 * gr[i]);
      v2[i] = float(0.95 * v2[i] + 0.05 * double(gr[i]) * gr[i]);
      x -= 1e-3 / bc1 * mv[i] / (std::sqrt(double(v2[i])) / std::sqrt(bc2) + 1e-8);
      master_ref[i] = float(x);
    }
  }
  EXPECT_CLOSE(get(master), as_f64(master_ref), 1e-6, "adamw master");
  EXPECT_CLOSE(get(mm), as_f64(mv), 1e-6, "adamw m");
  EXPECT_CLOSE(get(vv), as_f64(v2), 1e-5, "adamw v");
  const std::vector<double> pm = get(master), pp = get(p);
  for (int64_t i = 0; i < m; ++i) ASSERT_EQ(pp[i], double(bf16_to_f32(f32_to_bf16(float(pm[i]))))) << i;
}

TEST_F(CudaOps, TwentyTrainingStepsFollowTheCpuAndTwoGpuRunsAreBitIdentical) {
  // Initial weights drawn once on the GPU model (so bf16-rounded), then given to both backends.
  std::vector<std::pair<std::string, std::vector<double>>> init;
  {
    Model model(gpu(), e2e_options());
    model.init_random(7, 0.05);
    // LoRA B starts at zero (PEFT); give it small values so the adapters matter from step 1.
    for (Param& p : model.params().all()) {
      if (p.role == ParamRole::LoraB) upload_f64(gpu(), p.value, test::random_vector(rng, p.numel(), 0.02));
      init.push_back({p.name, download_f64(gpu(), p.value)});
    }
  }
  const int steps = 20;
  const RunResult cpu_run = train(cpu, init, steps);
  const RunResult a = train(gpu(), init, steps), b = train(gpu(), init, steps);
  ASSERT_EQ(a.losses.size(), size_t(steps));
  for (int s = 0; s < steps; ++s) {
    EXPECT_TRUE(std::isfinite(a.losses[s])) << "step " << s;
    EXPECT_NEAR(a.losses[s], cpu_run.losses[s], 2e-2 * cpu_run.losses[s]) << "step " << s << " (bf16 vs f32)";
  }
  EXPECT_LT(cpu_run.losses.back(), cpu_run.losses.front()) << "the run learns something (sanity of the setup)";
  EXPECT_EQ(a.losses, b.losses) << "two GPU runs must be bit-identical";
  EXPECT_EQ(a.weights, b.weights) << "two GPU runs must end with bit-identical weights";
  EXPECT_EQ(a.scratch_growths_after_first_step, 0) << "no device allocation inside the step loop after step 1";
}

TEST_F(CudaOps, GptNeoXTrainingStepsFollowTheCpuAndRepeatBitForBit) {
  // Every NeoX op inside the model on the GPU (split/merge QKV, LayerNorm, GELU, biases, partial RoPE, S2), LoRA on
  // the fused projection: 20 steps per residual form against the CPU, and two GPU runs bit for bit.
  for (const bool parallel : {true, false}) {
    const ModelOptions o = neox_e2e_options(parallel);
    const std::string form = parallel ? "parallel residual" : "sequential residual";
    std::vector<std::pair<std::string, std::vector<double>>> init;
    {
      Model model(gpu(), o);
      model.init_random(7, 0.05);
      for (Param& p : model.params().all()) {
        if (p.role == ParamRole::LoraB || p.role == ParamRole::Bias || p.role == ParamRole::NormBias)
          upload_f64(gpu(), p.value, test::random_vector(rng, p.numel(), 0.02));  // so they matter from step 1
        init.push_back({p.name, download_f64(gpu(), p.value)});
      }
    }
    const int steps = 20;
    const RunResult cpu_run = train(cpu, init, steps, o);
    const RunResult a = train(gpu(), init, steps, o), b = train(gpu(), init, steps, o);
    ASSERT_EQ(a.losses.size(), size_t(steps));
    for (int s = 0; s < steps; ++s) {
      EXPECT_TRUE(std::isfinite(a.losses[s])) << form << ", step " << s;
      EXPECT_NEAR(a.losses[s], cpu_run.losses[s], 2e-2 * cpu_run.losses[s]) << form << ", step " << s;
    }
    EXPECT_EQ(a.losses, b.losses) << form << ": two GPU runs must be bit-identical";
    EXPECT_EQ(a.weights, b.weights) << form << ": two GPU runs must end with bit-identical weights";
  }
}

TEST_F(CudaOps, KvCacheDecodingMatchesTheCpu) {
  ModelOptions o = e2e_options();
  o.attention.use_s2 = false;
  o.batch = 1;
  o.seq_len = 16;  // prefill chunks of 16
  Model g(gpu(), o), c(cpu, o);
  g.init_random(3, 0.05);
  for (Param& p : g.params().all()) upload_f64(cpu, c.params().get(p.name).value, download_f64(gpu(), p.value));
  Rng r(4);
  std::vector<int32_t> tokens(300);
  for (auto& t : tokens) t = int32_t(r.below(101));
  g.enable_kv_cache(300);
  c.enable_kv_cache(300);
  EXPECT_CLOSE(g.append_tokens(tokens.data(), 290), c.append_tokens(tokens.data(), 290), 3e-2, "prefill 290");
  for (int t = 290; t < 300; ++t)  // one-token steps against >= 256 cached keys: the split-KV decode path
    EXPECT_CLOSE(g.append_tokens(&tokens[t], 1), c.append_tokens(&tokens[t], 1), 3e-2, "decode at " << t);
}

TEST_F(CudaOps, OffloadedCheckpointsAreBitIdenticalOnTheGpu) {
  // Five layers, all checkpointed: the inputs of three travel to pinned host memory and back on the copy stream,
  // overlapping compute; loss and every gradient must equal the run that keeps them on the device.
  ModelOptions o = e2e_options();
  o.config.num_hidden_layers = 5;
  o.checkpoint_layers = 5;
  auto run = [&](bool offload, std::vector<double>* losses) {
    ModelOptions x = o;
    x.offload_checkpoints = offload;
    Model model(gpu(), x);
    model.init_random(11, 0.05);
    EXPECT_EQ(model.memory_plan().host_staging, offload ? size_t(3 * 2 * 64 * 256 * 2) : size_t(0));
    Rng r(12);
    const int64_t T = 2 * 64;
    for (int step = 0; step < 2; ++step) {
      std::vector<int32_t> tokens(T), targets(T);
      for (int64_t t = 0; t < T; ++t) tokens[t] = int32_t(r.below(101)), targets[t] = int32_t(r.below(101));
      if (step == 1) model.set_seq_len(48);  // a shorter sequence re-views the slots and copies less
      losses->push_back(model.forward_backward(tokens.data(), targets.data()).loss_sum);
    }
    std::vector<std::vector<double>> grads;
    for (Param& p : model.params().all())
      if (p.trainable) grads.push_back(download_f64(gpu(), p.grad));
    return grads;
  };
  std::vector<double> l_on, l_off;
  const auto off = run(false, &l_off), on = run(true, &l_on);
  EXPECT_EQ(l_on, l_off);
  ASSERT_EQ(on.size(), off.size());
  for (size_t i = 0; i < on.size(); ++i) EXPECT_EQ(on[i], off[i]) << "gradient " << i;
}

TEST_F(CudaOps, MlpTilesTrainLikeTheUntiledModelAndTheCpu) {
  // The MLP over row tiles of 48 tokens (T = 128: tiles of 48, 48, 32) on the GPU: Llama with LoRA on every linear and
  // GPT-NeoX (parallel residual, biases), every layer checkpointed and offloaded. Ten steps follow the tiled CPU run
  // and the untiled GPU run; two tiled GPU runs are bit-identical; the tiled plan is smaller.
  for (const bool neox : {false, true}) {
    ModelOptions o = neox ? neox_e2e_options(true) : e2e_options();
    if (!neox) o.lora.targets = parse_lora_targets("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", o.config);
    o.checkpoint_layers = 2;
    o.offload_checkpoints = true;
    ModelOptions tiled = o;
    tiled.mlp_tile_rows = 48;
    const std::string what = neox ? "gpt_neox" : "llama";
    EXPECT_LT(Model::plan_memory(gpu(), tiled).activations, Model::plan_memory(gpu(), o).activations) << what;
    std::vector<std::pair<std::string, std::vector<double>>> init;
    {
      Model model(gpu(), tiled);
      model.init_random(7, 0.05);
      for (Param& p : model.params().all()) {
        if (p.role == ParamRole::LoraB || p.role == ParamRole::Bias || p.role == ParamRole::NormBias)
          upload_f64(gpu(), p.value, test::random_vector(rng, p.numel(), 0.02));  // so they matter from step 1
        init.push_back({p.name, download_f64(gpu(), p.value)});
      }
    }
    const int steps = 10;
    const RunResult cpu_run = train(cpu, init, steps, tiled);
    const RunResult a = train(gpu(), init, steps, tiled), b = train(gpu(), init, steps, tiled);
    const RunResult untiled = train(gpu(), init, steps, o);
    ASSERT_EQ(a.losses.size(), size_t(steps));
    for (int s = 0; s < steps; ++s) {
      EXPECT_TRUE(std::isfinite(a.losses[s])) << what << ", step " << s;
      EXPECT_NEAR(a.losses[s], cpu_run.losses[s], 2e-2 * cpu_run.losses[s]) << what << ", step " << s;
      EXPECT_NEAR(a.losses[s], untiled.losses[s], 1e-2 * untiled.losses[s]) << what << ", step " << s;
    }
    EXPECT_EQ(a.losses, b.losses) << what << ": two tiled GPU runs must be bit-identical";
    EXPECT_EQ(a.weights, b.weights) << what << ": two tiled GPU runs must end with bit-identical weights";
  }
}

#endif  // LONGLORA_WITH_CUDA

}  // namespace
}  // namespace ll
