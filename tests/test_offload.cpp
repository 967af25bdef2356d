// Offloading the saved inputs of checkpointed layers to host memory (ModelOptions::offload_checkpoints): the same
// loss and gradients bit for bit as without (k = 1, 2, partial, all; shorter sequences; forward-only and KV-cache
// paths), also on a backend whose asynchronous copies complete as late as the seam's contract allows (at
// wait_for_copies) — a missing wait changes the results there, which a backend lagging one wait behind proves —
// and the device plan equals what the model allocates, the host bytes max(0, k − 2) layer inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <vector>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "model/param_select.h"
#include "core/profiling_backend.h"
#include "core/tensor_host.h"
#include "util/error.h"
#include "util/random.h"
#include "model_test_options.h"

namespace ll {
namespace {

ModelOptions offload_options(int64_t layers = 5) {
  ModelOptions o = test::small_model_options(layers);
  o.config.rope_scaling_factor = 4.0;
  o.trainable = TrainableConfig::parse("embed,norm");  // embed + norm trainable: every layer input matters
  o.lora.rank = 4;
  o.lora.dropout = 0.1;  // the recomputation regenerates the masks
  o.lora.targets = parse_lora_targets("q,k,v,o,down", o.config);
  return o;
}

void randomize(Model& model, uint64_t seed) {
  Rng rng(seed);
  for (Param& p : model.params().all()) {
    std::vector<double> v(p.numel());
    const double scale = p.role == ParamRole::Embedding ? 1.0 : p.is_norm() ? 0.0 : 1.0 / std::sqrt(double(p.shape[1]));
    for (double& x : v) x = p.is_norm() ? 1.0 + 0.2 * rng.normal() : scale * rng.normal();
    upload_f64(model.backend(), p.value, v);
  }
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};
Batch random_batch(int64_t tokens, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  for (int64_t t = 0; t < tokens; ++t) b.tokens.push_back(int32_t(rng.below(vocab)));
  for (int64_t t = 0; t < tokens; ++t) b.targets.push_back(t + 1 < tokens ? b.tokens[size_t(t + 1)] : -100);
  return b;
}

// Loss sums and every trainable gradient's bytes after two training steps at the full length, then one at a
// shorter length (set_seq_len), gradients accumulating over all three.
struct Outcome {
  std::vector<double> losses;
  std::vector<std::vector<char>> grads;
};
Outcome train_three_steps(Backend& backend, const ModelOptions& o) {
  Model model(backend, o);
  randomize(model, 31);
  model.set_lora_dropout(true, 7);
  Outcome out;
  const int64_t T = o.batch * o.seq_len;
  for (uint64_t step = 0; step < 2; ++step) {
    const Batch b = random_batch(T, o.config.vocab_size, 100 + step);
    out.losses.push_back(model.forward_backward(b.tokens.data(), b.targets.data()).loss_sum);
  }
  model.set_seq_len(o.seq_len - 8);
  const Batch b = random_batch(o.batch * (o.seq_len - 8), o.config.vocab_size, 200);
  out.losses.push_back(model.forward_backward(b.tokens.data(), b.targets.data()).loss_sum);
  backend.synchronize();
  for (Param& p : model.params().all())
    if (p.trainable) {
      const char* g = static_cast<const char*>(p.grad.data);
      out.grads.emplace_back(g, g + p.grad.nbytes());
    }
  return out;
}

// Copies queued at the start and executed, in order, only at wait_for_copies (as late as the contract allows).
// `lag`: wait_for_copies leaves the last `lag` queued copies for the next wait — the behaviour a model missing
// waits would see — so a correct model must give different results on it.
class DeferredCopyBackend : public CpuBackend<float> {
 public:
  explicit DeferredCopyBackend(size_t lag = 0) : lag_(lag) {}
  void copy_to_host_async(void* host_dst, const Tensor& src) override {
    ++to_host;
    queue_.push_back([this, host_dst, src] { copy_to_host(host_dst, src); });
  }
  void copy_from_host_async(Tensor dst, const void* host_src) override {
    ++from_host;
    queue_.push_back([this, dst, host_src] { copy_from_host(dst, host_src); });
  }
  void wait_for_copies() override {
    ++waits;
    const size_t run = queue_.size() > lag_ ? queue_.size() - lag_ : 0;
    for (size_t i = 0; i < run; ++i) queue_[i]();
    queue_.erase(queue_.begin(), queue_.begin() + std::ptrdiff_t(run));
  }
  void* allocate_host(size_t bytes) override {
    host_bytes += bytes;
    void* p = CpuBackend<float>::allocate_host(bytes);
    std::memset(p, 0xFF, bytes);  // NaN until a copy lands: reading an unwritten host buffer cannot go unnoticed
    return p;
  }
  size_t pending() const { return queue_.size(); }
  int64_t to_host = 0, from_host = 0, waits = 0;
  size_t host_bytes = 0;

 private:
  size_t lag_;
  std::vector<std::function<void()>> queue_;
};

void expect_same(const Outcome& a, const Outcome& b, const std::string& what) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) EXPECT_EQ(a.losses[i], b.losses[i]) << what << " step " << i;
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_TRUE(a.grads[i] == b.grads[i]) << what << ": gradient " << i << " differs";
}

bool same(const Outcome& a, const Outcome& b) {
  return a.losses == b.losses && a.grads == b.grads;
}

TEST(Offload, BitIdenticalLossAndGradientsForEveryCheckpointCount) {
  const ModelOptions base = offload_options();
  const int64_t N = base.config.num_hidden_layers;
  CpuBackend<float> cpu;
  const Outcome reference = train_three_steps(cpu, base);  // nothing checkpointed
  for (double x : reference.losses) EXPECT_GT(x, 0.0);
  for (int64_t k = 1; k <= N; ++k) {
    ModelOptions o = base;
    o.checkpoint_layers = k;
    const Outcome plain = train_three_steps(cpu, o);
    o.offload_checkpoints = true;
    expect_same(reference, plain, str_cat("k=", k, " without offload"));
    expect_same(plain, train_three_steps(cpu, o), str_cat("k=", k, " offloaded, synchronous copies"));
    DeferredCopyBackend deferred;
    expect_same(plain, train_three_steps(deferred, o), str_cat("k=", k, " offloaded, deferred copies"));
    // Every offloaded input goes out once in each forward and comes back once in each backward (3 steps).
    const int64_t offloaded = std::max<int64_t>(0, k - 2);
    EXPECT_EQ(deferred.to_host, 3 * offloaded) << k;
    EXPECT_EQ(deferred.from_host, 3 * offloaded) << k;
    EXPECT_EQ(deferred.pending(), 0u) << k;  // nothing left in flight after a step
    EXPECT_GE(deferred.waits, deferred.from_host) << k;  // each prefetched input waited for before use
  }
}

TEST(Offload, FullFineTuningAndFrozenDownProjectionAlsoBitIdentical) {
  // Other activation layouts: every weight trainable (no LoRA), and LoRA without down_proj (shared SwiGLU buffer).
  for (int variant = 0; variant < 2; ++variant) {
    ModelOptions o = offload_options(4);
    if (variant == 0) {
      o.lora = LoraConfig{};
      o.trainable = TrainableConfig{};
      o.trainable.all = true;
    } else {
      o.lora.targets = parse_lora_targets("q,v", o.config);
    }
    o.checkpoint_layers = 4;
    CpuBackend<float> cpu;
    const Outcome plain = train_three_steps(cpu, o);
    o.offload_checkpoints = true;
    DeferredCopyBackend deferred;
    expect_same(plain, train_three_steps(deferred, o), str_cat("variant ", variant));
    EXPECT_EQ(deferred.to_host, 3 * 2);
  }
}

TEST(Offload, ProfilingBackendForwardsTheAsynchronousCopies) {
  ModelOptions o = offload_options();
  o.checkpoint_layers = 5;
  CpuBackend<float> cpu;
  const Outcome plain = train_three_steps(cpu, o);
  o.offload_checkpoints = true;
  DeferredCopyBackend inner;
  ProfilingBackend prof(inner);
  prof.set_enabled(true);
  expect_same(plain, train_three_steps(prof, o), "through the profiler");
  EXPECT_EQ(inner.to_host, 3 * 3);  // reached the inner backend's asynchronous entry points
  EXPECT_EQ(inner.from_host, 3 * 3);
  EXPECT_EQ(inner.host_bytes, size_t(3 * o.batch * o.seq_len * o.config.hidden_size) * sizeof(float));
  bool timed = false;
  for (const auto& st : prof.stats()) timed |= st.op == "copy_to_host_async" && st.calls == 9;
  EXPECT_TRUE(timed) << prof.table();
}

TEST(Offload, TheDeferredHarnessCatchesAMissingWait) {
  // The harness has teeth: copies completing one wait later than they should (what a model missing a wait sees)
  // change the result, for every k that offloads anything; for k ≤ 2 nothing is copied and nothing changes.
  const ModelOptions base = offload_options();
  CpuBackend<float> cpu;
  for (int64_t k = 1; k <= base.config.num_hidden_layers; ++k) {
    ModelOptions o = base;
    o.checkpoint_layers = k;
    o.offload_checkpoints = true;
    const Outcome right = train_three_steps(cpu, o);
    DeferredCopyBackend lagging(/*lag=*/1);
    const Outcome late = train_three_steps(lagging, o);
    if (k <= 2) expect_same(right, late, str_cat("k=", k));
    else EXPECT_FALSE(same(right, late)) << "k=" << k << ": copies one wait late went unnoticed";
  }
}

TEST(Offload, ForwardOnlyPathsMatchAndCopyNothing) {
  ModelOptions o = offload_options();
  o.checkpoint_layers = 5;
  CpuBackend<float> cpu;
  Model plain(cpu, o);
  randomize(plain, 3);
  o.offload_checkpoints = true;
  DeferredCopyBackend deferred;
  Model off(deferred, o);
  randomize(off, 3);
  const Batch b = random_batch(o.batch * o.seq_len, o.config.vocab_size, 9);
  std::vector<int32_t> am1(b.tokens.size()), am2(b.tokens.size());
  EXPECT_EQ(plain.forward(b.tokens.data(), b.targets.data(), am1.data()).loss_sum,
            off.forward(b.tokens.data(), b.targets.data(), am2.data()).loss_sum);
  EXPECT_EQ(am1, am2);
  EXPECT_EQ(plain.logits(b.tokens.data()), off.logits(b.tokens.data()));
  plain.set_seq_len(10), off.set_seq_len(10);
  EXPECT_EQ(plain.logits(b.tokens.data()), off.logits(b.tokens.data()));
  EXPECT_EQ(deferred.to_host + deferred.from_host, 0);  // evaluation does not offload
}

TEST(Offload, KvCacheDecodingMatches) {
  ModelOptions o = offload_options(4);
  o.attention.use_s2 = false;
  o.batch = 1;
  o.seq_len = 8;
  o.lora.dropout = 0;
  o.checkpoint_layers = 4;
  CpuBackend<float> cpu;
  Model plain(cpu, o);
  o.offload_checkpoints = true;
  Model off(cpu, o);
  randomize(plain, 4), randomize(off, 4);
  plain.enable_kv_cache(20), off.enable_kv_cache(20);
  const Batch b = random_batch(20, o.config.vocab_size, 5);
  EXPECT_EQ(plain.append_tokens(b.tokens.data(), 13), off.append_tokens(b.tokens.data(), 13));  // two chunks
  for (int i = 13; i < 20; ++i)
    EXPECT_EQ(plain.append_tokens(&b.tokens[size_t(i)], 1), off.append_tokens(&b.tokens[size_t(i)], 1)) << i;
  // Training still works on the same model after decoding.
  off.reset_kv_cache(), plain.reset_kv_cache();
  off.set_seq_len(8), plain.set_seq_len(8);
  const Batch t = random_batch(8, o.config.vocab_size, 6);
  EXPECT_EQ(plain.forward_backward(t.tokens.data(), t.targets.data()).loss_sum,
            off.forward_backward(t.tokens.data(), t.targets.data()).loss_sum);
}

TEST(Offload, PlanEqualsAllocationAndHostBytesAreTheOffloadedInputs) {
  const ModelOptions base = offload_options();
  const int64_t N = base.config.num_hidden_layers, T = base.batch * base.seq_len, D = base.config.hidden_size;
  const size_t input_bytes = size_t(T * D) * sizeof(float);
  ASSERT_EQ(input_bytes % 256, 0u);  // arena alignment does not blur the arithmetic below
  for (int64_t k = 0; k <= N; ++k) {
    ModelOptions o = base;
    o.checkpoint_layers = k;
    CpuBackend<float> cpu;
    const MemoryPlan without = Model::plan_memory(cpu, o);
    o.offload_checkpoints = true;
    DeferredCopyBackend be;
    const MemoryPlan planned = Model::plan_memory(be, o);
    Model model(be, o);
    const MemoryPlan real = model.memory_plan();
    EXPECT_EQ(planned.frozen_weights, real.frozen_weights) << k;
    EXPECT_EQ(planned.trainable_weights, real.trainable_weights) << k;
    EXPECT_EQ(planned.gradients, real.gradients) << k;
    EXPECT_EQ(planned.activations, real.activations) << k;
    EXPECT_EQ(planned.total(), real.total()) << k;
    const size_t offloaded = size_t(std::max<int64_t>(0, k - 2));
    EXPECT_EQ(planned.host_staging, offloaded * input_bytes) << k;
    EXPECT_EQ(real.host_staging, planned.host_staging) << k;
    EXPECT_EQ(be.host_bytes, planned.host_staging) << k;  // what the model asked the backend for
    EXPECT_EQ(without.host_staging, 0u);
    // On the device, k inputs become min(k, 2) slots: k − 2 fewer layer inputs.
    EXPECT_EQ(without.activations - planned.activations, offloaded * input_bytes) << k;
    std::ostringstream printed;
    planned.print(printed);
    EXPECT_EQ(printed.str().find("host memory") != std::string::npos, offloaded > 0) << printed.str();
  }
}

}  // namespace
}  // namespace ll
