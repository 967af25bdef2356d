// Mixed precision under ZeRO on CPU ranks: a host backend with the CUDA backend's policy (bf16 weights, f32
// gradients and masters; tests/mpi/mixed_host_backend.h) drives the real optimizer and ZeRO-3 storage. Gradients are
// small dyadic numbers, so every sum over ranks and micro-batches is exact in f32 whatever the reduction order, and
// N ranks must reproduce the single-rank AdamW-with-masters run bit for bit: bf16 working weights, f32 masters.
// Covers the f32 master shards (stages 2 and 3), bf16 all-gathers, ZeRO-2's gradient→weight arena mapping (the
// bf16 and f32 arenas pad differently) and buckets reduced from the backward hook, ZeRO-3's gradient seeding, the
// deferred-completion emulation of asynchronous collectives, and masters in checkpoints re-cut for one rank.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "io/safetensors.h"
#include "mixed_host_backend.h"
#include "model/param_select.h"
#include "model/params.h"
#include "mpi/zero.h"
#include "mpi/zero3.h"
#include "mpi_test_env.h"
#include "util/files.h"
#include "core/dropout_mask.h"

namespace fs = std::filesystem;

namespace ll {
namespace {

using test::g_comm;
using test::MixedHostBackend;

constexpr int kLayers = 3;
constexpr int kMicro = 2;

ModelConfig config() {
  ModelConfig c;
  c.hidden_size = 32, c.intermediate_size = 48, c.num_attention_heads = 4, c.num_key_value_heads = 2;
  c.num_hidden_layers = kLayers, c.vocab_size = 50;
  return c;
}
LoraConfig lora() {
  LoraConfig l;
  l.rank = 4;
  l.targets = parse_lora_targets("q_proj,v_proj", config());
  return l;
}
// Embedding (first in the arenas), norms, and the LM head (last): outer-group parameters at both ends.
TrainableConfig trainable() { return TrainableConfig::parse("embed,norm,lm_head"); }

uint64_t key(const std::string& name, int64_t i, uint64_t salt) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return mix64(h ^ mix64(uint64_t(i) * 0x9E3779B97F4A7C15ull + salt));
}
// Multiples of 1/1024 in [-1, 1]: sums of a few of them are exact in f32.
double grad_value(const std::string& name, int64_t i, int step, int micro, int rank) {
  return double(int64_t(key(name, i, uint64_t(step * 131 + micro * 17 + rank * 7919)) % 2049) - 1024) / 1024.0;
}
double init_value(const std::string& name, int64_t i) {
  return double(int64_t(key(name, i, 1) % 2001) - 1000) / 4096.0;
}

bool power_of_two(int n) { return n > 0 && (n & (n - 1)) == 0; }

struct Result {
  std::map<std::string, std::vector<uint16_t>> weights;  // bf16 bits of every trainable parameter (rank 0)
  std::vector<double> norms;
};

struct RunSpec {
  int stage = 0;
  int64_t bucket = 0;
  int world = 1;        // ranks whose gradients are summed (the reference adds them up itself)
  int first_step = 1;   // resume: steps before this one were taken by the run that wrote `resume_dir`
  int last_step = 5;
  std::string resume_dir, save_dir;
  const std::map<std::string, std::vector<uint16_t>>* resume_weights = nullptr;
};

// Trains with synthetic gradients: each step kMicro micro-batches whose gradients are written group by group in
// backward order (layers L−1 … 0, then the outer group), as the model does.
Result run(Comm& comm, const RunSpec& spec) {
  MixedHostBackend be;
  ParamStore params(be, config(), lora(), trainable(), spec.stage == 3);
  std::unique_ptr<Zero3Storage> z3;
  if (spec.stage == 3) z3 = std::make_unique<Zero3Storage>(be, params, comm);
  params.write_all([&](Param& p) {
    std::vector<double> v(size_t(p.numel()));
    if (spec.resume_weights && p.trainable) {
      const std::vector<uint16_t>& bits = spec.resume_weights->at(p.name);
      for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_to_f32(bits[i]);
    } else {
      for (size_t i = 0; i < v.size(); ++i) v[i] = init_value(p.name, int64_t(i));
    }
    upload_f64(be, p.value, v);
  });
  DistributedOptimizer opt(be, params, comm, AdamWConfig{0.9, 0.999, 1e-8, 0.01}, spec.stage, z3.get(), spec.bucket);
  EXPECT_TRUE(opt.has_masters());
  if (!spec.resume_dir.empty()) {
    opt.set_steps_taken(spec.first_step - 1);
    opt.load_moments(spec.resume_dir);
  }
  Result res;
  const bool reference = comm.size() == 1 && spec.world > 1;
  for (int step = spec.first_step; step <= spec.last_step; ++step) {
    params.zero_grads();
    for (int micro = 0; micro < kMicro; ++micro) {
      opt.begin_micro_batch(micro + 1 == kMicro);
      for (int g = kLayers - 1; g >= kOuterGroup; --g) {
        params.acquire(g);
        for (Param* p : params.group(g)) {
          if (!p->trainable) continue;
          std::vector<double> cur = download_f64(be, p->grad);  // accumulate, as backward does
          for (size_t i = 0; i < cur.size(); ++i) {
            if (reference) {
              double sum = 0;
              for (int r = 0; r < spec.world; ++r) sum += grad_value(p->name, int64_t(i), step, micro, r);
              cur[i] += sum / spec.world;  // the mean the ranks' optimizer forms
            } else {
              cur[i] += grad_value(p->name, int64_t(i), step, micro, comm.rank());
            }
          }
          upload_f64(be, p->grad, cur);
        }
        params.backward_done(g);
        params.release(g);
      }
    }
    res.norms.push_back(opt.reduce_and_clip(0));
    opt.step(1e-2 / step);
  }
  params.with_readable(/*trainable_only=*/true, [&] {
    for (const Param& p : params.all()) {
      if (!p.trainable) continue;
      std::vector<uint16_t> bits(size_t(p.numel()));
      be.copy_to_host(bits.data(), p.value);
      res.weights[p.name] = std::move(bits);
    }
  });
  if (!spec.save_dir.empty()) {
    if (comm.rank() == 0) {
      fs::remove_all(spec.save_dir);
      make_directories(spec.save_dir);
    }
    comm.barrier();
    opt.save_moments(spec.save_dir);
    comm.barrier();
  }
  return res;
}

std::map<std::string, std::vector<double>> masters(const std::string& dir) {
  MixedHostBackend be;
  ParamStore params(be, config(), lora(), trainable());
  return read_moments(dir, "master", params);
}

struct Case {
  int stage;
  int64_t bucket;
  bool defer;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "stage " << c.stage << ", bucket " << c.bucket << (c.defer ? ", deferred" : "");
}

class ZeroMasters : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/ll_mpi_masters_" + std::to_string(g_comm->size()) + "_" + std::to_string(GetParam().stage) +
           "_" + std::to_string(GetParam().bucket) + (GetParam().defer ? "_defer" : "");
    if (GetParam().defer) setenv("LONGLORA_COMM_DEFER", "1", 1);
  }
  void TearDown() override { unsetenv("LONGLORA_COMM_DEFER"); }
  std::string dir_;
};

TEST_P(ZeroMasters, NRanksReproduceTheSingleRankMixedPrecisionRunBitForBit) {
  const Case c = GetParam();
  const int n = g_comm->size();
  RunSpec spec;
  spec.stage = c.stage;
  spec.bucket = c.bucket;
  spec.world = n;
  spec.save_dir = dir_ + "/ranks";
  const Result ranks = run(*g_comm, spec);
  unsetenv("LONGLORA_COMM_DEFER");  // the single-rank runs below use no collectives anyway
  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    RunSpec ref;
    ref.world = n;
    ref.save_dir = dir_ + "/single";
    const Result single = run(*local, ref);
    ASSERT_EQ(ranks.norms.size(), single.norms.size());
    for (size_t i = 0; i < single.norms.size(); ++i)
      EXPECT_NEAR(ranks.norms[i], single.norms[i], 1e-12 * single.norms[i]) << "step " << i + 1;
    const auto m_ranks = masters(dir_ + "/ranks"), m_single = masters(dir_ + "/single");
    ASSERT_EQ(ranks.weights.size(), single.weights.size());
    for (const auto& [name, bits] : single.weights) {
      if (power_of_two(n)) {
        EXPECT_EQ(ranks.weights.at(name), bits) << name << ": bf16 working weights differ";
        EXPECT_EQ(m_ranks.at(name), m_single.at(name)) << name << ": f32 masters differ";
      } else {  // 1/n is inexact: the mean over ranks rounds differently from the reference's
        const auto& a = m_ranks.at(name);
        const auto& b = m_single.at(name);
        for (size_t i = 0; i < b.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5) << name << "[" << i << "]";
      }
    }
    // The checkpoint's masters (written by n ranks, re-cut for one) resume the single-rank run exactly.
    RunSpec resumed;
    resumed.world = n;
    resumed.first_step = 6;
    resumed.last_step = 7;
    resumed.resume_dir = dir_ + "/ranks";
    resumed.resume_weights = &ranks.weights;
    const Result a = run(*local, resumed);
    RunSpec straight;
    straight.world = n;
    straight.last_step = 7;
    const Result b = run(*local, straight);
    if (power_of_two(n)) {
      for (const auto& [name, bits] : b.weights) EXPECT_EQ(a.weights.at(name), bits) << name << " after resuming";
    }
  }
  g_comm->barrier();
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroMasters,
                         ::testing::Values(Case{0, 0, false}, Case{2, 0, false}, Case{2, 61, false}, Case{2, 61, true},
                                           Case{3, 0, false}, Case{3, 0, true}),
                         [](const auto& info) {
                           return "stage" + std::to_string(info.param.stage) +
                                  (info.param.bucket ? "_buckets" : "") + (info.param.defer ? "_deferred" : "");
                         });

TEST(ZeroMastersCheckpoint, StageZeroWritesMastersAndAResumeWithoutThemWidensTheWeights) {
  if (g_comm->rank() != 0) return;
  const std::string dir = ::testing::TempDir() + "/ll_mpi_masters_stage0_file";
  fs::remove_all(dir);
  make_directories(dir);
  std::unique_ptr<Comm> local = make_local_comm();
  MixedHostBackend be;
  ParamStore params(be, config(), lora(), trainable());
  params.write_all([&](Param& p) {
    std::vector<double> v(size_t(p.numel()));
    for (size_t i = 0; i < v.size(); ++i) v[i] = init_value(p.name, int64_t(i));
    upload_f64(be, p.value, v);
  });
  DistributedOptimizer opt(be, params, *local, {}, 0);
  opt.save_moments(dir);
  bool any_master = false;
  for (const std::string& k : SafetensorsFile(dir + "/optimizer.safetensors").names())
    any_master = any_master || k.rfind("master/", 0) == 0;
  EXPECT_TRUE(any_master);
  // A checkpoint without masters (written before they were saved): the masters become the working weights.
  std::vector<SafetensorsWriteItem> items;
  const SafetensorsFile f(dir + "/optimizer.safetensors");
  std::vector<std::vector<unsigned char>> keep;
  for (const std::string& k : f.names()) {
    if (k.rfind("master/", 0) == 0) continue;
    const SafetensorsEntry& e = f.entry(k);
    keep.emplace_back(static_cast<const unsigned char*>(e.data), static_cast<const unsigned char*>(e.data) + e.nbytes);
    items.push_back({k, e.dtype, e.shape, keep.back().data()});
  }
  const std::string old_dir = dir + "/old";
  make_directories(old_dir);
  write_safetensors(old_dir + "/optimizer.safetensors", items);
  DistributedOptimizer other(be, params, *local, {}, 0);
  other.load_moments(old_dir);
  other.save_moments(old_dir);
  const auto widened = masters(old_dir);
  for (const Param& p : params.all()) {
    if (!p.trainable) continue;
    const std::vector<double> w = download_f64(be, p.value);
    EXPECT_EQ(widened.at(p.name), w) << p.name;
  }
}

}  // namespace
}  // namespace ll
