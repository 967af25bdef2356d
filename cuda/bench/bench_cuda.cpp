// build/bench_cuda: benchmarks of the CUDA backend. Prints a table and writes JSON (--json FILE).
//
//   bench_cuda attention   fwd+bwd TFLOP/s, full causal and S2 (ratio 1/4), L = 8k/16k/32k, Dh 128, 16 heads,
//                          batch = max(1, 16k/L) (FlashAttention's benchmark setting and FLOP convention; S2 is
//                          also given in "effective" FLOPs = its exact attended pairs, and as time relative to full)
//   bench_cuda gemm        cuBLASLt TFLOP/s on Llama-2-7B projection shapes (8k tokens): forward, input gradient,
//                          weight gradient
//   bench_cuda e2e         a Llama-2-7B-shaped model (random weights), LoRA r=8 on q,k,v,o + trainable embed/norm,
//                          S2, one full training step (forward, backward, clip, AdamW): tokens/s, MFU, peak memory;
//                          --model PRESET takes another family's shapes (e.g. pythia-1.4b: LoRA on
//                          query_key_value,dense, LongLoRA's NeoX targets; the PI factor from its 2048 positions);
//                          --max_context searches the longest context that fits; --profile times one more step
//                          op by op (ProfilingBackend: a synchronisation around every op) and prints the table
//   bench_cuda memory      the memory-bound ops (SwiGLU, add, dropout, RMSNorm, RoPE) at Llama-2-7B shapes, 8k tokens:
//                          ms per call, bytes moved, GB/s and % of a device-to-device cudaMemcpy measured in the run
//                          (rows "unaligned": views at an odd element offset, which take the scalar kernels)
//   bench_cuda lora        LoRA's thin products at a Llama-2-7B projection (8k tokens, 4096→4096, r = --lora_r, 8):
//                          lora_forward / lora_backward (dx, frozen W) and the base linear_forward / linear_backward
//                          alone, with the hand-written kernels and with cuBLASLt: ms per call, the LoRA overhead
//                          (lora − base) and its effective bandwidth over the thin products' minimal bytes
//   bench_cuda decode      batch-1 decoding's products at Llama-2-7B shapes (one token: x [1, K] · Wᵀ): bf16 weights
//                          against 4-bit ones (--bnb_4bit_quant_type, --bnb_4bit_use_double_quant; the fused
//                          dequantizing matrix-vector kernel): ms per call, weight GB/s, and the linears' tokens/s of a
//                          32-layer model
//   e2e --load_in_4bit true: the same step on a 4-bit (QLoRA) base: every linear dequantized into the bf16 workspace
//
// Timing: wall clock around backend.synchronize(), after warm-up iterations. Without a usable GPU it says so and
// exits 0 (nothing to measure).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "cuda/launch_plan.h"
#include "cuda/perf_model.h"
#include "model/model.h"
#include "model/param_select.h"
#include "model/registry.h"
#include "core/profiling_backend.h"
#include "core/quantize.h"
#include "core/tensor_host.h"
#include "train/memory_check.h"
#include "optim/adamw.h"
#include "util/error.h"
#include "util/flags.h"

#ifdef LONGLORA_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "cuda/lora_timing.h"
#endif

namespace ll {
namespace {

std::string str_join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

struct Options {
  std::string json;
  int64_t warmup = 2, iters = 5;
  double peak_tflops = 0;  // 0: from the device name
  // e2e
  std::string model = "llama2-7b";  // e2e: llama2-7b (the default shapes) or a --model_config preset (pythia-1.4b, …)
  int64_t seq_len = 8192, batch = 1, lora_r = 8, layers = 0;  // layers 0: the model's own (32 for Llama-2-7B)
  bool checkpointing = true, s2 = true, max_context = false, profile = false;
  int64_t checkpoint_layers = -1;  // layers recomputed in backward (the first ones); -1: all or none per checkpointing
  bool offload_checkpoints = false;  // the checkpointed layers' inputs in pinned host memory (ModelOptions)
  int64_t mlp_tile_rows = 0;         // the MLP over row tiles of this many tokens (ModelOptions; 0: off)
  std::string attention_wgmma = "";  // attention passes on wgmma at Dh 128 (LONGLORA_ATTENTION_WGMMA's values; "": it)
  // e2e, decode: the 4-bit base (QLoRA)
  bool load_in_4bit = false;
  std::string quant_type = "nf4";
  bool double_quant = true;
};

#ifdef LONGLORA_WITH_CUDA

double seconds_per_iter(Backend& be, int64_t warmup, int64_t iters, const std::function<void()>& f) {
  for (int64_t i = 0; i < warmup; ++i) f();
  be.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) f();
  be.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(iters);
}

struct DeviceTensor {
  Backend* be;
  Tensor t;
  DeviceTensor(CudaBackend& b, DType dt, std::vector<int64_t> dims, uint64_t seed) : be(&b) {
    Tensor shape(nullptr, dt, Device::CUDA, dims);
    t = Tensor(b.allocate(shape.nbytes()), dt, Device::CUDA, dims);
    if (dt != DType::I32) b.fill_uniform(t, seed, 1.0);
  }
  ~DeviceTensor() { be->release(t.data); }
};

nlohmann::json bench_attention(CudaBackend& be, const Options& o) {
  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-8s %-6s %-5s %12s %12s %14s %12s %9s %9s %11s %11s\n", "seq", "mask", "batch", "fwd+bwd ms",
              "TFLOP/s (FA)", "TFLOP/s (eff.)", "vs full", "fwd ms", "bwd ms", "fwd TFLOP/s", "bwd TFLOP/s");
  const int64_t H = 16, Dh = 128;
  for (int64_t L : {8192, 16384, 32768}) {
    const int64_t B = std::max<int64_t>(1, 16384 / L);
    DeviceTensor q(be, DType::BF16, {B, L, H, Dh}, 1), k(be, DType::BF16, {B, L, H, Dh}, 2),
        v(be, DType::BF16, {B, L, H, Dh}, 3), out(be, DType::BF16, {B, L, H, Dh}, 4),
        lse(be, DType::F32, {B, H, L}, 5), dout(be, DType::BF16, {B, L, H, Dh}, 6),
        dq(be, DType::BF16, {B, L, H, Dh}, 7), dk(be, DType::BF16, {B, L, H, Dh}, 8),
        dv(be, DType::BF16, {B, L, H, Dh}, 9);
    double full_ms = 0;
    for (const bool s2 : {false, true}) {
      const AttentionMask mask = s2 ? AttentionMask::s2(L / 4, false) : AttentionMask::causal();
      const double sec = seconds_per_iter(be, o.warmup, o.iters, [&] {
        be.attention_forward(out.t, lse.t, q.t, k.t, v.t, mask);
        be.attention_backward(dq.t, dk.t, dv.t, dout.t, q.t, k.t, v.t, out.t, lse.t, mask);
      });
      const double fwd_sec =
          seconds_per_iter(be, o.warmup, o.iters, [&] { be.attention_forward(out.t, lse.t, q.t, k.t, v.t, mask); });
      const double bwd_sec = sec - fwd_sec;  // the backward alone would need the forward's lse first
      const double fa = perf::flash_attention_flops(B, L, H, Dh, true, perf::Pass::ForwardBackward);
      const double eff = perf::masked_attention_flops(B, L, H, Dh, mask, perf::Pass::ForwardBackward);
      const double eff_fwd = perf::masked_attention_flops(B, L, H, Dh, mask, perf::Pass::Forward);
      const double eff_bwd = eff - eff_fwd;
      if (!s2) full_ms = sec * 1e3;
      std::printf("%-8lld %-6s %-5lld %12.2f %12.1f %14.1f %11.2fx %9.2f %9.2f %11.1f %11.1f\n", (long long)L,
                  s2 ? "S2" : "full", (long long)B, sec * 1e3, s2 ? 0.0 : fa / sec / 1e12, eff / sec / 1e12,
                  sec * 1e3 / full_ms, fwd_sec * 1e3, bwd_sec * 1e3, eff_fwd / fwd_sec / 1e12,
                  eff_bwd / bwd_sec / 1e12);
      rows.push_back({{"seq_len", L}, {"mask", s2 ? "s2" : "causal"}, {"batch", B}, {"heads", H}, {"head_dim", Dh},
                      {"ms_fwd_bwd", sec * 1e3}, {"tflops_fa_convention", s2 ? 0.0 : fa / sec / 1e12},
                      {"tflops_effective", eff / sec / 1e12}, {"time_vs_full", sec * 1e3 / full_ms},
                      {"ms_fwd", fwd_sec * 1e3}, {"ms_bwd", bwd_sec * 1e3},
                      {"tflops_effective_fwd", eff_fwd / fwd_sec / 1e12},
                      {"tflops_effective_bwd", eff_bwd / bwd_sec / 1e12}});
    }
  }
  return rows;
}

nlohmann::json bench_gemm(CudaBackend& be, const Options& o) {
  nlohmann::json rows = nlohmann::json::array();
  const int64_t T = 8192;
  struct Shape {
    const char* name;
    int64_t in, out;
  };
  const Shape shapes[] = {{"q/k/v/o_proj", 4096, 4096}, {"gate/up_proj", 4096, 11008}, {"down_proj", 11008, 4096},
                          {"lm_head", 4096, 32000}};
  std::printf("%-14s %-22s %10s %10s\n", "projection", "product", "ms", "TFLOP/s");
  for (const Shape& s : shapes) {
    DeviceTensor x(be, DType::BF16, {T, s.in}, 1), w(be, DType::BF16, {s.out, s.in}, 2), y(be, DType::BF16, {T, s.out}, 3);
    DeviceTensor dx(be, DType::BF16, {T, s.in}, 4), dw(be, DType::F32, {s.out, s.in}, 5);
    const double flops = 2.0 * double(T) * double(s.in) * double(s.out);
    const std::pair<const char*, std::function<void()>> products[] = {
        {"forward y=x·Wᵀ", [&] { be.linear_forward(y.t, x.t, w.t, false); }},
        {"input grad dx=dy·W", [&] { be.linear_backward(dx.t, Tensor(), y.t, x.t, w.t, false); }},
        {"weight grad dW+=dyᵀ·x", [&] { be.linear_backward(Tensor(), dw.t, y.t, x.t, w.t, false); }},
    };
    for (const auto& [what, f] : products) {
      const double sec = seconds_per_iter(be, o.warmup, o.iters, f);
      std::printf("%-14s %-22s %10.3f %10.1f\n", s.name, what, sec * 1e3, flops / sec / 1e12);
      rows.push_back({{"projection", s.name}, {"product", what}, {"m", T}, {"n", s.out}, {"k", s.in},
                      {"ms", sec * 1e3}, {"tflops", flops / sec / 1e12}});
    }
  }
  return rows;
}

// The benchmarked model (--model, --layers) with LongLoRA's set-up: LoRA on the attention's projections (Llama:
// q,k,v,o; GPT-NeoX: query_key_value,dense), embeddings and norms trained, PI factor for seq_len, S2 on request.
ModelOptions e2e_model(const Options& o, int64_t seq_len) {
  ModelOptions m;
  if (o.model == "llama2-7b") {
    m.config.hidden_size = 4096, m.config.intermediate_size = 11008, m.config.num_attention_heads = 32;
    m.config.num_key_value_heads = 32, m.config.num_hidden_layers = 32, m.config.vocab_size = 32000;
    m.config.max_position_embeddings = 4096;
  } else {
    LL_CHECK(model_preset(o.model, &m.config), "bench_cuda: --model `", o.model, "` is not llama2-7b or a preset (",
             str_join(model_preset_names(), ", "), ")");
  }
  if (o.layers > 0) m.config.num_hidden_layers = o.layers;
  m.config.rope_scaling_factor = derive_rope_factor(seq_len, m.config.max_position_embeddings, 1.0);
  m.batch = o.batch;
  m.seq_len = seq_len;
  m.checkpoint_layers =
      o.checkpoint_layers >= 0 ? o.checkpoint_layers : o.checkpointing ? m.config.num_hidden_layers : 0;
  m.offload_checkpoints = o.offload_checkpoints;
  m.mlp_tile_rows = o.mlp_tile_rows;
  m.attention.use_s2 = o.s2;
  m.lora.rank = o.lora_r;
  m.lora.alpha = 16;
  m.lora.targets = parse_lora_targets(m.config.model_type == "gpt_neox" ? "query_key_value,dense"
                                                                        : "q_proj,k_proj,v_proj,o_proj",
                                      m.config);
  m.trainable = TrainableConfig::parse("embed,norm");
  m.config.load_in_4bit = o.load_in_4bit;
  m.config.base_weight_format = quant_format(o.quant_type, o.double_quant, "--bnb_4bit_quant_type");
  return m;
}

// A model of llama7b_lora shape on `run_on` (the CUDA backend, or a wrapper of it), its optimizer and a batch.
struct StepSetup {
  Model model;
  std::unique_ptr<AdamW> opt;  // created after the weights: it copies them into its f32 masters
  std::vector<int32_t> tokens, targets;
  StepSetup(CudaBackend& be, Backend& run_on, const Options& o, int64_t seq_len)
      : model(run_on, e2e_model(o, seq_len)) {
    uint64_t seed = 1;
    for (Param& p : model.params().all()) be.fill_uniform(p.value, seed++, p.is_norm() ? 0.0 : 0.02);
    for (Param& p : model.params().all())
      if (p.is_norm()) be.fill(p.value, 1.0);
    opt = std::make_unique<AdamW>(run_on, model.params(), AdamWConfig{});
    const int64_t T = o.batch * seq_len;
    tokens.resize(T), targets.resize(T);
    for (int64_t t = 0; t < T; ++t) tokens[t] = int32_t((t * 7919) % 32000), targets[t] = int32_t((t * 104729) % 32000);
  }
  void step() {
    model.params().zero_grads();
    model.forward_backward(tokens.data(), targets.data());
    opt->clip_grad_norm(1.0);
    opt->step(2e-5);
  }
};

// One training step's time at `seq_len`; throws ll::Error (out of memory) when it does not fit.
struct StepResult {
  double seconds;
  size_t peak_bytes, device_used;
  MemoryPlan plan;
  size_t optimizer_bytes;
};
StepResult time_step(CudaBackend& be, const Options& o, int64_t seq_len, int64_t warmup, int64_t iters) {
  StepSetup s(be, be, o, seq_len);
  const double sec = seconds_per_iter(be, warmup, iters, [&] { s.step(); });
  size_t free_b = 0, total_b = 0;
  be.memory_info(&free_b, &total_b);
  return {sec, be.peak_bytes_in_use(), total_b - free_b, s.model.memory_plan(), s.opt->state_bytes()};
}

// One step with every op timed, on its own model built on a ProfilingBackend (call it after the timed model is
// freed: two 7B-shaped models need not fit). The model is fresh but the backend's caches are warm from the timed run.
nlohmann::json profile_step(CudaBackend& be, const Options& o, double* wall_seconds) {
  ProfilingBackend prof(be);
  StepSetup s(be, prof, o, o.seq_len);
  be.synchronize();
  prof.set_enabled(true);
  const auto t0 = std::chrono::steady_clock::now();
  s.step();
  be.synchronize();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  prof.set_enabled(false);
  std::printf("  op profile of one step (%.3f s with a synchronisation around every op):\n%s", wall,
              prof.table(wall).c_str());
  *wall_seconds = wall;
  return prof.to_json();
}

nlohmann::json bench_e2e(CudaBackend& be, const Options& o) {
  nlohmann::json j;
  const ModelOptions mo = e2e_model(o, o.seq_len);
  const int64_t group = o.s2 ? training_mask(mo.attention, mo.config, o.seq_len).group : 0;
  const StepResult r = time_step(be, o, o.seq_len, 1, o.iters);
  const double tokens_per_s = double(o.batch * o.seq_len) / r.seconds;
  double peak = o.peak_tflops > 0 ? o.peak_tflops : perf::bf16_peak_tflops(be.device_description().c_str());
  const double model_fpt = perf::lora_model_flops_per_token(mo.config, o.seq_len, group);
  const int64_t recomputed = mo.checkpoint_layers;  // checkpointed layers; backward recomputes all but the last
  const double hw_fpt = perf::lora_hardware_flops_per_token(
      mo.config, o.seq_len, group, double(std::max<int64_t>(recomputed - 1, 0)) / double(mo.config.num_hidden_layers));
  const double mfu = peak > 0 ? model_fpt * tokens_per_s / (peak * 1e12) : 0;
  const double hfu = peak > 0 ? hw_fpt * tokens_per_s / (peak * 1e12) : 0;
  std::printf("%s-shaped (%s) LoRA r=%lld (%s) + embed/norm, %s, seq %lld, batch %lld, checkpointing %lld of "
              "%lld layers%s%s\n",
              o.model.c_str(), mo.config.model_type.c_str(), (long long)o.lora_r,
              str_join(mo.lora.targets, ",").c_str(), o.s2 ? "S2 ratio 1/4" : "full causal", (long long)o.seq_len,
              (long long)o.batch, (long long)recomputed, (long long)mo.config.num_hidden_layers,
              o.offload_checkpoints ? ", their inputs offloaded to host memory" : "",
              o.mlp_tile_rows > 0 ? str_cat(", MLP over tiles of ", o.mlp_tile_rows, " tokens").c_str() : "");
  std::printf("  step %.3f s   %.0f tokens/s\n", r.seconds, tokens_per_s);
  std::printf("  LoRA-MFU %.1f%%  = (4·N + 3·attn_fwd) · tok/s / peak, N = %.3fB matmul params, %.1f GFLOP/token\n",
              100 * mfu, perf::matmul_params(mo.config) / 1e9, model_fpt / 1e9);
  std::printf("  HFU      %.1f%%  = (%s) · tok/s / peak, %.1f GFLOP/token; peak %.1f TFLOP/s%s\n", 100 * hfu,
              recomputed > 0 ? "4·N + 3·attn_fwd + recomputed share · (2·N + attn_fwd)" : "4·N + 3·attn_fwd",
              hw_fpt / 1e9, peak,
              peak > 0 ? "" : " (unknown card: pass --peak_tflops)");
  std::printf("  memory: peak allocated %.2f GiB, device in use %.2f GiB (plan: frozen %.2f, trainable %.2f, grads %.2f, "
              "optimizer %.2f, activations %.2f GiB; host: offloaded layer inputs %.2f GiB)\n",
              r.peak_bytes / 1073741824.0, r.device_used / 1073741824.0, r.plan.frozen_weights / 1073741824.0,
              r.plan.trainable_weights / 1073741824.0, r.plan.gradients / 1073741824.0, r.optimizer_bytes / 1073741824.0,
              r.plan.activations / 1073741824.0, r.plan.host_staging / 1073741824.0);
  j = {{"model", o.model}, {"model_type", mo.config.model_type}, {"seq_len", o.seq_len}, {"batch", o.batch},
       {"layers", mo.config.num_hidden_layers}, {"lora_r", o.lora_r}, {"s2", o.s2},
       {"checkpointing", recomputed > 0}, {"checkpoint_layers", recomputed},
       {"offload_checkpoints", o.offload_checkpoints && recomputed > 0}, {"host_staging_bytes", r.plan.host_staging},
       {"mlp_tile_rows", o.mlp_tile_rows},
       {"step_seconds", r.seconds},
       {"tokens_per_second", tokens_per_s},
       {"model_gflop_per_token", model_fpt / 1e9}, {"hardware_gflop_per_token", hw_fpt / 1e9},
       {"peak_tflops", peak}, {"lora_mfu", mfu}, {"hfu", hfu},
       {"mfu_formula", "(4*N_matmul + 3*attention_forward_per_token) * tokens_per_s / peak; attention_forward_per_token "
                       "= 2*layers*hidden*G (S2) or 2*layers*hidden*L (causal)"},
       {"peak_allocated_bytes", r.peak_bytes}, {"device_used_bytes", r.device_used}};
  if (o.profile) {
    double wall = 0;
    j["profile"] = profile_step(be, o, &wall);
    j["profile_step_seconds"] = wall;
  }
  if (o.max_context) {
    // The start-up memory plan predicts the longest length (it matched the measured peak to 0.1% at 100k on an
    // H200); one step there confirms it, stepping down 4096 tokens at a time if that step does not fit.
    constexpr int64_t kStep = 4096;
    DeviceMemoryState state;
    be.device_memory(&state);
    const size_t available = plan_budget(state);  // the budget build/train's start-up check allows
    const int64_t predicted = longest_fitting_seq_len(be, e2e_model(o, kStep), 0, 1, available, kStep);
    std::printf("  max context: the memory plan predicts %lld tokens (%.1f GiB available)\n", (long long)predicted,
                double(available) / double(size_t(1) << 30));
    int64_t ok = 0;
    for (int64_t L = predicted; L >= kStep && L > predicted - 3 * kStep && ok == 0; L -= kStep) {
      try {
        const StepResult r = time_step(be, o, L, 0, 1);
        ok = L;
        std::printf("  max context: %lld fits (one step %.1f s, peak %.2f GiB)\n", (long long)L, r.seconds,
                    double(r.peak_bytes) / double(size_t(1) << 30));
      } catch (const Error& e) {
        std::printf("  max context: %lld does not fit (%s)\n", (long long)L, e.what());
      }
    }
    std::printf("  longest context that fits: %lld tokens\n", (long long)ok);
    j["max_context_predicted"] = predicted;
    j["max_context"] = ok;
  }
  return j;
}

// ---- memory-bound ops: bandwidth against a device-to-device copy ------------------------------------------------
// Time per call: after kMemWarmup calls, kMemBatches batches of kMemCalls calls each are timed (wall clock around
// synchronize); the median batch, divided by kMemCalls. Bytes are what the op must move at the least: every input
// read once, every output written once (w and positions counted once, though every row reads them).
constexpr int64_t kMemWarmup = 10, kMemBatches = 21, kMemCalls = 10;

double median_seconds_per_call(Backend& be, const std::function<void()>& f) {
  for (int64_t i = 0; i < kMemWarmup; ++i) f();
  be.synchronize();
  std::vector<double> per_call;
  for (int64_t b = 0; b < kMemBatches; ++b) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kMemCalls; ++i) f();
    be.synchronize();
    per_call.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(kMemCalls));
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

nlohmann::json bench_memory(CudaBackend& be, const Options&) {
  const int64_t T = 8192, D = 4096, F = 11008, H = 32, Dh = 128;
  const double nD = double(T * D), nF = double(T * F), bf = 2.0;  // elements of [T,D] and [T,F]; bytes per bf16
  DeviceTensor x(be, DType::BF16, {T, D}, 1), y(be, DType::BF16, {T, D}, 2), z(be, DType::BF16, {T, D}, 3);
  DeviceTensor w(be, DType::BF16, {D}, 4), rstd(be, DType::F32, {T}, 5), dw(be, DType::F32, {D}, 6);
  DeviceTensor g(be, DType::BF16, {T, F}, 7), u(be, DType::BF16, {T, F}, 8), h(be, DType::BF16, {T, F}, 9);
  DeviceTensor dg(be, DType::BF16, {T, F}, 10), du(be, DType::BF16, {T, F}, 11);
  DeviceTensor pos(be, DType::I32, {T}, 0);
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[size_t(t)] = int32_t(t);
  upload_i32(be, pos.t, positions.data());
  be.fill(w.t, 1.0);
  be.rmsnorm_forward(z.t, rstd.t, x.t, w.t, 1e-5);  // a real rstd for the backward
  const Tensor xr(x.t.data, DType::BF16, Device::CUDA, {T, H, Dh});  // x as q/k rows for RoPE
  const RopeParams rope{1e4, 2.0};
  const cuda_plan::ColumnReducePlan dw_plan = cuda_plan::plan_column_reduce(T);
  const double dw_bytes = 2 * bf * nD + 4.0 * T + 2 * 4.0 * double(dw_plan.chunks * D) + 2 * 4.0 * D;
  // Views one element into flat buffers: off 16-byte alignment, so the kernels take their scalar paths (what a view
  // at an odd offset costs, and the element-at-a-time kernels as they were before the vector paths).
  std::vector<std::unique_ptr<DeviceTensor>> flat;
  auto unaligned = [&](std::vector<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    flat.push_back(std::make_unique<DeviceTensor>(be, DType::BF16, std::vector<int64_t>{n + 8}, 20 + flat.size()));
    return Tensor(static_cast<char*>(flat.back()->t.data) + 2, DType::BF16, Device::CUDA, dims);
  };
  const Tensor ug = unaligned({T, F}), uu = unaligned({T, F}), uh = unaligned({T, F}), udg = unaligned({T, F}),
               udu = unaligned({T, F});
  const Tensor ux(ug.data, DType::BF16, Device::CUDA, {T, D}), uy(uu.data, DType::BF16, Device::CUDA, {T, D}),
      uz(uh.data, DType::BF16, Device::CUDA, {T, D}), uxr(ug.data, DType::BF16, Device::CUDA, {T, H, Dh});
  be.rmsnorm_forward(uz, rstd.t, ux, w.t, 1e-5);  // finite rstd for the unaligned backward

  struct Op {
    const char* name;
    const char* shape;
    double bytes;
    std::function<void()> run;
  };
  const std::vector<Op> ops = {
      {"copy (cudaMemcpy D2D)", "[8192,11008]", 2 * bf * nF, [&] { be.copy(h.t, g.t); }},
      {"swiglu_forward", "[8192,11008]", 3 * bf * nF, [&] { be.swiglu_forward(h.t, g.t, u.t); }},
      {"swiglu_backward", "[8192,11008]", 5 * bf * nF, [&] { be.swiglu_backward(dg.t, du.t, h.t, g.t, u.t); }},
      {"add", "[8192,4096]", 3 * bf * nD, [&] { be.add(z.t, x.t, y.t); }},
      {"add in place", "[8192,4096]", 3 * bf * nD, [&] { be.add(z.t, z.t, y.t); }},
      {"dropout p=0.05", "[8192,4096]", 2 * bf * nD, [&] { be.dropout(z.t, x.t, 0.05, 7); }},
      {"rmsnorm_forward", "[8192,4096]", 2 * bf * nD + bf * D + 4.0 * T,
       [&] { be.rmsnorm_forward(z.t, rstd.t, x.t, w.t, 1e-5); }},
      {"rmsnorm_backward dx", "[8192,4096]", 3 * bf * nD + bf * D + 4.0 * T,
       [&] { be.rmsnorm_backward(z.t, Tensor(), y.t, x.t, w.t, rstd.t, false); }},
      {"rmsnorm_backward dx acc", "[8192,4096]", 4 * bf * nD + bf * D + 4.0 * T,
       [&] { be.rmsnorm_backward(z.t, Tensor(), y.t, x.t, w.t, rstd.t, true); }},
      {"rmsnorm_backward dw", "[8192,4096]", dw_bytes,
       [&] { be.rmsnorm_backward(Tensor(), dw.t, y.t, x.t, w.t, rstd.t, false); }},
      {"rmsnorm_backward dx+dw", "[8192,4096]", 3 * bf * nD + bf * D + 4.0 * T + dw_bytes,
       [&] { be.rmsnorm_backward(z.t, dw.t, y.t, x.t, w.t, rstd.t, false); }},
      {"rope_forward", "[8192,32,128]", 2 * bf * nD + 4.0 * T, [&] { be.rope_forward(xr, pos.t, rope); }},
      {"rope_backward", "[8192,32,128]", 2 * bf * nD + 4.0 * T, [&] { be.rope_backward(xr, pos.t, rope); }},
      {"swiglu_forward unaligned", "[8192,11008]", 3 * bf * nF, [&] { be.swiglu_forward(uh, ug, uu); }},
      {"swiglu_backward unaligned", "[8192,11008]", 5 * bf * nF,
       [&] { be.swiglu_backward(udg, udu, uh, ug, uu); }},
      {"add unaligned", "[8192,4096]", 3 * bf * nD, [&] { be.add(uz, ux, uy); }},
      {"rmsnorm_forward unaligned", "[8192,4096]", 2 * bf * nD + bf * D + 4.0 * T,
       [&] { be.rmsnorm_forward(uz, rstd.t, ux, w.t, 1e-5); }},
      {"rmsnorm_backward dx unal.", "[8192,4096]", 3 * bf * nD + bf * D + 4.0 * T,
       [&] { be.rmsnorm_backward(uz, Tensor(), uy, ux, w.t, rstd.t, false); }},
      {"rope_forward unaligned", "[8192,32,128]", 2 * bf * nD + 4.0 * T, [&] { be.rope_forward(uxr, pos.t, rope); }},
  };
  nlohmann::json rows = nlohmann::json::array();
  double ceiling = 0;  // bytes/s of the copy, measured first
  std::printf("%-24s %-14s %9s %10s %9s %8s %10s\n", "op", "shape", "ms", "MB moved", "GB/s", "% copy",
              "floor ms");
  for (const Op& op : ops) {
    const double sec = median_seconds_per_call(be, op.run);
    const double rate = op.bytes / sec;
    if (ceiling == 0) ceiling = rate;
    std::printf("%-24s %-14s %9.4f %10.1f %9.0f %7.1f%% %10.4f\n", op.name, op.shape, sec * 1e3, op.bytes / 1e6,
                rate / 1e9, 100 * rate / ceiling, op.bytes / ceiling * 1e3);
    rows.push_back({{"op", op.name}, {"shape", op.shape}, {"ms", sec * 1e3}, {"bytes", op.bytes},
                    {"gb_per_s", rate / 1e9}, {"fraction_of_copy", rate / ceiling},
                    {"floor_ms_at_copy_rate", op.bytes / ceiling * 1e3}});
  }
  std::printf("ceiling: device-to-device cudaMemcpy %.0f GB/s (bytes read + written); floor ms = bytes / ceiling\n",
              ceiling / 1e9);
  return {{"copy_ceiling_gb_per_s", ceiling / 1e9}, {"ops", rows},
          {"timing", "median of 21 batches of 10 calls after 10 warm-up calls, wall clock around synchronize"}};
}

// ---- LoRA's thin products: hand-written kernels vs cuBLASLt ---------------------------------------------------------
double median_ms(Backend& be, const std::function<void()>& f) {
  std::vector<double> ms;
  for (int i = 0; i < 2; ++i) f();
  for (int rep = 0; rep < 7; ++rep) ms.push_back(seconds_per_iter(be, 0, 10, f) * 1e3);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Batch-1 decoding's linears: y[1, N] = x[1, K]·Wᵀ with a bf16 weight and with a 4-bit one (the fused kernel).
nlohmann::json bench_decode(CudaBackend& be, const Options& o) {
  const DType format = quant_format(o.quant_type, o.double_quant, "--bnb_4bit_quant_type");
  struct Shape {
    const char* what;
    int64_t n, k, per_layer;
  };
  const Shape shapes[] = {{"q/k/v/o 4096x4096", 4096, 4096, 4}, {"gate/up 11008x4096", 11008, 4096, 2},
                          {"down 4096x11008", 4096, 11008, 1}};
  std::printf("%-20s %10s %10s %12s %12s\n", "weight", "bf16 ms", "4-bit ms", "bf16 GB/s", "4-bit GB/s");
  nlohmann::json rows = nlohmann::json::array();
  double token_bf16 = 0, token_4bit = 0;
  for (const Shape& s : shapes) {
    DeviceTensor x(be, DType::BF16, {1, s.k}, 1), y(be, DType::BF16, {1, s.n}, 2), w(be, DType::BF16, {s.n, s.k}, 3);
    const Tensor shape4(nullptr, format, Device::CUDA, {s.n, s.k});
    Tensor w4(be.allocate(shape4.nbytes()), format, Device::CUDA, {s.n, s.k});
    upload_f64(be, w4, download_f64(be, w.t));  // the same values, quantized on the host
    const double ms16 = median_ms(be, [&] { be.linear_forward(y.t, x.t, w.t, false); });
    const double ms4 = median_ms(be, [&] { be.linear_forward(y.t, x.t, w4, false); });
    const double bytes16 = double(w.t.nbytes()), bytes4 = double(w4.nbytes());
    be.release(w4.data);
    std::printf("%-20s %10.4f %10.4f %12.0f %12.0f\n", s.what, ms16, ms4, bytes16 / ms16 / 1e6, bytes4 / ms4 / 1e6);
    token_bf16 += double(s.per_layer) * ms16;
    token_4bit += double(s.per_layer) * ms4;
    rows.push_back({{"weight", s.what}, {"ms_bf16", ms16}, {"ms_4bit", ms4}, {"bytes_bf16", bytes16},
                    {"bytes_4bit", bytes4}});
  }
  const double layers = 32;
  std::printf("linears of a 32-layer 7B model per token: bf16 %.3f ms (%.1f tokens/s), %s %.3f ms (%.1f tokens/s)\n",
              layers * token_bf16, 1000 / (layers * token_bf16), dtype_name(format), layers * token_4bit,
              1000 / (layers * token_4bit));
  return {{"rows", rows}, {"format", dtype_name(format)}, {"ms_per_token_linears_bf16", layers * token_bf16},
          {"ms_per_token_linears_4bit", layers * token_4bit}};
}

nlohmann::json bench_lora(CudaBackend& be, const Options& o) {
  const int64_t T = 8192, K = 4096, N = 4096, r = o.lora_r;
  const double scale = 2.0;
  DeviceTensor x(be, DType::BF16, {T, K}, 1), w(be, DType::BF16, {N, K}, 2), a(be, DType::BF16, {r, K}, 3),
      b(be, DType::BF16, {N, r}, 4), y(be, DType::BF16, {T, N}, 5), xa(be, DType::BF16, {T, r}, 6),
      dy(be, DType::BF16, {T, N}, 7), dx(be, DType::BF16, {T, K}, 8), da(be, DType::F32, {r, K}, 9),
      db(be, DType::F32, {N, r}, 10), dxa(be, DType::BF16, {T, r}, 11);
  // Minimal bytes of the thin products: forward reads x and reads + writes y; backward reads dy twice (dB, dxa),
  // x once (dA) and reads + writes dx (dx += dxa·A). The rank-sized tensors are negligible.
  const double fwd_bytes = 2.0 * double(T) * (K + 2 * N), bwd_bytes = 2.0 * double(T) * (2 * N + K + 2 * K);
  const double base_fwd = median_ms(be, [&] { be.linear_forward(y.t, x.t, w.t, false); });
  const double base_bwd = median_ms(be, [&] { be.linear_backward(dx.t, Tensor(), dy.t, x.t, w.t, false); });
  std::printf("T=%lld K=%lld N=%lld r=%lld; base: forward %.4f ms, backward (dx only) %.4f ms\n", (long long)T,
              (long long)K, (long long)N, (long long)r, base_fwd, base_bwd);
  std::printf("%-10s %9s %9s %13s %13s %12s %12s %14s\n", "thin path", "fwd ms", "bwd ms", "fwd overhead",
              "bwd overhead", "fwd GB/s", "bwd GB/s", "ms per step");
  nlohmann::json rows = nlohmann::json::array();
  using LK = CudaBackend::LoraKernels;
  for (const LK path : {LK::HandWritten, LK::CuBlasLt}) {
    be.set_lora_kernels(path);
    const char* name = path == LK::HandWritten ? "kernels" : "cublaslt";
    if (path == LK::HandWritten && !be.lora_kernels_chosen(T, K, N, r))
      std::printf("(rank %lld is outside the kernels' support: both rows are cuBLASLt)\n", (long long)r);
    const double fwd = median_ms(be, [&] { be.lora_forward(y.t, xa.t, x.t, x.t, w.t, a.t, b.t, scale); });
    const double bwd = median_ms(be, [&] {
      be.lora_backward(dx.t, Tensor(), Tensor(), da.t, db.t, dxa.t, dy.t, x.t, x.t, xa.t, w.t, a.t, b.t, scale, false);
    });
    const double of = fwd - base_fwd, ob = bwd - base_bwd;
    const double per_step = 256 * of + 128 * ob;  // 7B, q/k/v/o adapted: 128 adapted projections, forward twice
    std::printf("%-10s %9.4f %9.4f %13.4f %13.4f %12.0f %12.0f %14.1f\n", name, fwd, bwd, of, ob,
                of > 0 ? fwd_bytes / of / 1e6 : 0.0, ob > 0 ? bwd_bytes / ob / 1e6 : 0.0, per_step);
    rows.push_back({{"thin_path", name}, {"ms_lora_forward", fwd}, {"ms_lora_backward", bwd},
                    {"ms_base_forward", base_fwd}, {"ms_base_backward", base_bwd}, {"ms_overhead_forward", of},
                    {"ms_overhead_backward", ob}, {"thin_bytes_forward", fwd_bytes},
                    {"thin_bytes_backward", bwd_bytes}, {"ms_overhead_per_step_256fwd_128bwd", per_step}});
  }
  be.set_lora_kernels(LK::Default);
  std::printf("overhead = lora − base (median of 7 batches of 10 calls); GB/s = thin products' minimal bytes / "
              "overhead; ms per step = 256 forward + 128 backward overheads (7B, q/k/v/o, recomputation)\n");
  // The hand-written kernels one by one (cudaEvent time, own operands), against a device-to-device copy.
  nlohmann::json kernels = nlohmann::json::array();
  if (r >= 1 && r <= 64) {  // the kernels' rank range (lora.cuh)
    std::printf("\n%-30s %9s %10s %9s\n", "hand-written kernel", "ms", "MB", "GB/s");
    for (const cuda::LoraKernelTiming& k : cuda::lora_kernel_timings(T, K, N, r, be.native_stream())) {
      std::printf("%-30s %9.4f %10.1f %9.0f\n", k.what.c_str(), k.ms, k.bytes / 1e6, k.bytes / k.ms / 1e6);
      kernels.push_back({{"kernel", k.what}, {"ms", k.ms}, {"bytes", k.bytes}, {"gb_per_s", k.bytes / k.ms / 1e6}});
    }
  }
  return {{"T", T}, {"K", K}, {"N", N}, {"rank", r}, {"rows", rows}, {"kernels", kernels}};
}

#endif  // LONGLORA_WITH_CUDA

int run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::printf("usage: bench_cuda attention|gemm|e2e|memory|lora|decode [flags]   (bench_cuda MODE --help lists the flags)\n");
    return argc < 2 ? 2 : 0;
  }
  const std::string mode = argv[1];
  LL_CHECK(mode == "attention" || mode == "gemm" || mode == "e2e" || mode == "memory" || mode == "lora" ||
               mode == "decode",
           "bench_cuda: unknown mode `", mode, "`; expected attention, gemm, e2e, memory, lora or decode");
  Options o;
  Flags flags("bench_cuda " + mode, "CUDA backend benchmark; prints a table, writes JSON with --json");
  flags.add("json", &o.json, "write the results here (JSON)");
  flags.add("warmup", &o.warmup, "untimed iterations first").at_least(0);
  flags.add("iters", &o.iters, "timed iterations").at_least(1);
  flags.add("peak_tflops", &o.peak_tflops, "dense bf16 peak for MFU (0: from the device name)").at_least(0);
  flags.add("seq_len", &o.seq_len, "e2e: sequence length").at_least(2);
  flags.add("batch", &o.batch, "e2e: sequences per step").at_least(1);
  flags.add("model", &o.model, "e2e: llama2-7b, or a --model_config preset such as pythia-1.4b (random weights)");
  flags.add("layers", &o.layers, "e2e: decoder layers (0: the model's own, 32 for Llama-2-7B)").at_least(0);
  flags.add("lora_r", &o.lora_r, "e2e, lora: LoRA rank").at_least(1);
  flags.add("checkpointing", &o.checkpointing, "e2e: per-layer activation checkpointing");
  flags.add("checkpoint_layers", &o.checkpoint_layers,
            "e2e: layers recomputed in backward, 0..layers (-1: all with --checkpointing, else none)")
      .at_least(-1);
  flags.add("offload_checkpoints", &o.offload_checkpoints,
            "e2e: keep the checkpointed layers' inputs in pinned host memory (copies overlap compute)");
  flags.add("mlp_tile_rows", &o.mlp_tile_rows,
            "e2e: run every layer's MLP over row tiles of N tokens, recomputed in backward (0: off)")
      .at_least(0);
  flags.add("s2", &o.s2, "e2e: S2-Attn (ratio 1/4)");
  flags.add("attention_wgmma", &o.attention_wgmma,
            "attention, e2e: attention passes at head dim 128 on the wgmma kernels: auto, none or a list of fwd,dq,dkdv "
            "(default: LONGLORA_ATTENTION_WGMMA, else auto)");
  flags.add("max_context", &o.max_context, "e2e: also search the longest context that fits");
  flags.add("load_in_4bit", &o.load_in_4bit, "e2e: a 4-bit (QLoRA) base: every linear but the output head");
  flags.add("bnb_4bit_quant_type", &o.quant_type, "e2e, decode: nf4 or fp4");
  flags.add("bnb_4bit_use_double_quant", &o.double_quant, "e2e, decode: double-quantized absmax");
  flags.add("profile", &o.profile, "e2e: after the timed steps, time one more step op by op (table + JSON \"profile\")");
  if (!flags.parse(argc, argv, 2)) return 0;
  ModelConfig preset;  // --model is checked here, with or without a GPU
  LL_CHECK(o.model == "llama2-7b" || model_preset(o.model, &preset), "bench_cuda: --model `", o.model,
           "` is not llama2-7b or a preset (", str_join(model_preset_names(), ", "), ")");
#ifndef LONGLORA_WITH_CUDA
  std::printf("bench_cuda %s: this build has no CUDA support; nothing to measure\n", mode.c_str());
  return 0;
#else
  for (const BackendInfo& info : list_backends())
    if (info.name == "cuda" && !info.available) {
      std::printf("bench_cuda %s: no usable GPU (%s); nothing to measure\n", mode.c_str(), info.description.c_str());
      return 0;
    }
  CudaBackend be(0);
  if (!o.attention_wgmma.empty())
    be.set_attention_wgmma(
        cuda_plan::parse_attention_wgmma(o.attention_wgmma, be.attention_wgmma_available(), "--attention_wgmma"));
  std::printf("bench_cuda %s on %s (attention passes on wgmma at Dh 128: %s)\n", mode.c_str(),
              be.device_description().c_str(), cuda_plan::to_string(be.attention_wgmma()).c_str());
  nlohmann::json results = mode == "attention" ? bench_attention(be, o)
                           : mode == "gemm"    ? bench_gemm(be, o)
                           : mode == "memory"  ? bench_memory(be, o)
                           : mode == "lora"    ? bench_lora(be, o)
                           : mode == "decode"  ? bench_decode(be, o)
                                               : bench_e2e(be, o);
  if (!o.json.empty()) {
    const nlohmann::json doc = {{"benchmark", mode}, {"device", be.device_description()}, {"flags", flags.values()},
                                {"attention_wgmma", cuda_plan::to_string(be.attention_wgmma())}, {"results", results}};
    std::ofstream(o.json) << doc.dump(2) << "\n";
    std::printf("wrote %s\n", o.json.c_str());
  }
  return 0;
#endif
}

}  // namespace
}  // namespace ll

int main(int argc, char** argv) {
  try {
    return ll::run(argc, argv);
  } catch (const ll::Error& e) {
    const std::string message = e.what();  // Flags' and run's messages already start with "bench_cuda"
    std::fprintf(stderr, "%s%s\n", message.rfind("bench_cuda", 0) == 0 ? "" : "bench_cuda: ", message.c_str());
    return 1;
  }
}
