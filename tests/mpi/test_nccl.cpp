// NCCL on GPU ranks (mpirun -np N, one GPU per rank): the collectives of NcclComm on device buffers, their ordering
// against the backend's compute stream, the abort path, and 10 steps of ZeRO-0/2/3 training on N GPUs against one
// GPU with the same global batch. Every test skips, on every rank alike, printing the reason, unless the build has
// NCCL and each rank has its own GPU; the collectives and the abort path run from one rank (one GPU), training
// needs two.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/backend.h"
#include "cuda/device_info.h"
#include "data/token_file.h"
#include "io/safetensors.h"
#include "mpi_test_env.h"
#include "run_outputs.h"
#include "core/tensor_host.h"
#include "train/trainer.h"
#include "util/files.h"
#include "util/random.h"

namespace fs = std::filesystem;

namespace ll {
namespace {

using test::g_comm;
using test::expect_run_matches;

// Collective: the same answer on every rank (a reason when some rank cannot run GPU tests).
std::string gpu_ranks_missing(int min_ranks) {
  std::string why;
  const CudaProbe probe = probe_cuda();
  if (!built_with_nccl()) why = "this build has no NCCL (needs nvcc, mpicxx and nccl.h at build time)";
  else if (g_comm->size() < min_ranks)
    why = str_cat("needs at least ", min_ranks, " ranks (mpirun -np ", min_ranks, " or more)");
  else if (probe.devices.empty()) why = "no CUDA device: " + probe.error;
  else if (probe.devices.size() != 1 && int(probe.devices.size()) < g_comm->local_size())
    why = std::to_string(g_comm->local_size()) + " ranks on this node but " + std::to_string(probe.devices.size()) +
          " GPUs";
  const double any = g_comm->all_reduce_max(why.empty() ? 0.0 : 1.0);
  if (any > 0 && why.empty()) why = "another rank cannot run GPU tests";
  return why;
}

#define SKIP_WITHOUT_GPU_RANKS(min_ranks)                           \
  do {                                                               \
    const std::string ll_why_ = gpu_ranks_missing(min_ranks);        \
    if (!ll_why_.empty()) GTEST_SKIP() << "NCCL tests: " << ll_why_; \
  } while (0)

struct Gpu {
  Gpu() {
    device = choose_local_device(g_comm->local_rank(), g_comm->local_size(), int(probe_cuda().devices.size()));
    backend = create_backend("cuda", device);
    comm = make_nccl_comm(*g_comm, *backend, device);
    comm->set_timeout(120);
  }
  // Device tensor of `n` elements of `dtype` (owned by `keep`).
  Tensor tensor(DType dtype, int64_t n) {
    keep.push_back(std::shared_ptr<void>(backend->allocate(size_t(std::max<int64_t>(n, 1)) * dtype_size(dtype)),
                                         [this](void* p) { backend->release(p); }));
    return Tensor(keep.back().get(), dtype, Device::CUDA, {n});
  }
  std::unique_ptr<Backend> backend;
  std::vector<std::shared_ptr<void>> keep;  // released before the backend (declared after it)
  std::unique_ptr<Comm> comm;
  int device = 0;
};

TEST(Nccl, AllReduceReduceScatterAllGatherBroadcastOnDeviceBuffers) {
  SKIP_WITHOUT_GPU_RANKS(1);
  Gpu gpu;
  Backend& be = *gpu.backend;
  Comm& c = *gpu.comm;
  const int r = c.rank(), n = c.size();
  EXPECT_EQ(c.name(), "nccl");
  EXPECT_TRUE(c.asynchronous());

  // all-reduce, written by the compute stream just before: the collective must see the upload.
  Tensor v = gpu.tensor(DType::F32, 3);
  upload_f64(be, v, {double(r), 1.0, double(r * r)});
  c.all_reduce_sum(v);
  const std::vector<double> got = download_f64(be, v);
  double sq = 0;
  for (int i = 0; i < n; ++i) sq += i * i;
  EXPECT_EQ(got, (std::vector<double>{double(n * (n - 1) / 2), double(n), sq}));

  // reduce-scatter and all-gather with uneven (grouped reduce / broadcast) and even (ncclReduceScatter /
  // ncclAllGather) splits; bf16 for the gather, as ZeRO moves working weights.
  for (const int64_t total : {int64_t(10 * n + 3), int64_t(8 * n)}) {
    const std::vector<int64_t> counts = even_split(total, n);
    const int64_t off = split_offset(counts, r);
    Tensor full = gpu.tensor(DType::F32, total), shard = gpu.tensor(DType::F32, counts[size_t(r)]);
    std::vector<double> values(static_cast<size_t>(total));
    for (int64_t i = 0; i < total; ++i) values[size_t(i)] = double(i) * (r + 1);
    upload_f64(be, full, values);
    c.reduce_scatter_sum(Tensor(shard.data, DType::F32, Device::CUDA, {counts[size_t(r)]}), full, counts);
    const std::vector<double> s = download_f64(be, Tensor(shard.data, DType::F32, Device::CUDA, {counts[size_t(r)]}));
    for (int64_t i = 0; i < counts[size_t(r)]; ++i)
      EXPECT_EQ(s[size_t(i)], double(off + i) * n * (n + 1) / 2) << "total " << total << ", element " << i;

    Tensor gathered = gpu.tensor(DType::BF16, total);
    std::vector<double> mine(size_t(total), -1.0);
    for (int64_t i = 0; i < counts[size_t(r)]; ++i) mine[size_t(off + i)] = 100.0 * r + double(i);
    upload_f64(be, gathered, mine);
    const CommRequest q = c.start_all_gather_in_place(gathered, counts);
    // Unrelated compute-stream work while the gather runs, then the wait orders the result before the download.
    Tensor other = gpu.tensor(DType::F32, 1000);
    upload_f64(be, other, std::vector<double>(1000, 2.0));
    be.scale(other, 0.5);
    c.wait(q);
    const std::vector<double> all = download_f64(be, gathered);
    for (int p = 0; p < n; ++p)
      for (int64_t i = 0; i < counts[size_t(p)]; ++i)
        EXPECT_EQ(all[size_t(split_offset(counts, p) + i)], 100.0 * p + double(i)) << "total " << total;
    EXPECT_EQ(download_f64(be, other), std::vector<double>(1000, 1.0));
  }

  Tensor b = gpu.tensor(DType::I32, 3);
  const std::vector<int32_t> ids = {r, r, r};
  upload_i32(be, b, ids.data());
  c.broadcast(b, n - 1);
  std::vector<int32_t> back(3);
  be.copy_to_host(back.data(), b);
  for (int32_t x : back) EXPECT_EQ(x, n - 1);

  // Scalars and host buffers go through MPI.
  EXPECT_EQ(c.all_reduce_sum(double(r + 1)), double(n * (n + 1) / 2));
  std::vector<float> host = {1.0f};
  c.all_reduce_sum(Tensor(host.data(), DType::F32, Device::CPU, {1}));
  EXPECT_EQ(host[0], float(n));
  c.barrier();
}

// An exception unwinding past the communicator with a collective started and not waited for takes the abort path
// (ncclCommAbort: the destructor neither hangs nor throws, the compute stream drains); the backend still computes,
// and a new communicator over the same ranks works. Every rank throws alike (a rank-local error ends the job
// through MPI_Abort instead, which the fault cases of run_mpi_tests.sh check on CPU ranks).
TEST(Nccl, UnwindingWithACollectiveInFlightAbortsTheCommunicator) {
  SKIP_WITHOUT_GPU_RANKS(1);
  Gpu gpu;
  Backend& be = *gpu.backend;
  const int n = g_comm->size();
  Tensor v = gpu.tensor(DType::F32, 1 << 20);
  upload_f64(be, v, std::vector<double>(size_t(1) << 20, 1.0));
  std::string caught;
  try {
    std::unique_ptr<Comm> doomed = std::move(gpu.comm);
    doomed->start_all_reduce_sum(v);
    fail("injected while a collective is in flight");
  } catch (const Error& e) {
    caught = e.what();
  }
  EXPECT_EQ(caught, "injected while a collective is in flight");
  be.scale(v, 1.0);  // the compute stream still runs (what v holds after the aborted reduction is unspecified)
  const double first = download_f64(be, v)[0];
  if (n == 1) {
    EXPECT_EQ(first, 1.0);  // one rank: the all-reduce is the identity, run or not
  }
  std::unique_ptr<Comm> fresh = make_nccl_comm(*g_comm, be, gpu.device);
  fresh->set_timeout(120);
  Tensor w = gpu.tensor(DType::F32, 4);
  upload_f64(be, w, {1.0, 2.0, 3.0, 4.0});
  fresh->all_reduce_sum(w);
  EXPECT_EQ(download_f64(be, w), (std::vector<double>{1.0 * n, 2.0 * n, 3.0 * n, 4.0 * n}));
}

const char* kGpuConfig = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
  "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 2, "num_hidden_layers": 2,
  "vocab_size": 64, "rms_norm_eps": 1e-5, "max_position_embeddings": 32, "rope_theta": 10000.0})";

class NcclTraining : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/ll_nccl_" + std::to_string(g_comm->size()) + "_stage" + std::to_string(GetParam());
    if (g_comm->rank() == 0) {
      fs::remove_all(dir_);
      make_directories(dir_);
      write_file_atomic(dir_ + "/config.json", kGpuConfig);
      Rng rng(5);
      TokenFileWriter w(dir_ + "/train.bin", TokenFormat::Raw16);
      for (int i = 0; i < 20000; ++i) w.append({int32_t(rng.uniform() < 0.85 ? (i * 11) % 64 : rng.below(64))});
      w.finish();
    }
    g_comm->barrier();
  }
  TrainOptions options(const std::string& out, int64_t per_device_batch) const {
    TrainOptions o;
    o.device = "cuda";
    o.model_config = dir_ + "/config.json";
    o.data_path = dir_ + "/train.bin";
    o.output_dir = dir_ + "/" + out;
    o.model_max_length = 64;
    o.lora_r = 8;
    o.learning_rate = 5e-3;
    o.per_device_train_batch_size = per_device_batch;
    o.gradient_accumulation_steps = 2;
    o.max_steps = 10;
    o.save_steps = 0;
    o.warmup_steps = 2;
    o.lr_scheduler_type = "linear";
    o.weight_decay = 0.01;
    o.zero_stage = GetParam();
    o.reduce_bucket_size = 4096;  // several buckets, reduced during backward
    o.comm_timeout_sec = 120;
    return o;
  }
  std::string dir_;
};

// bf16 activations: N GPUs and one GPU multiply matrices of different row counts (other cuBLASLt algorithms) and
// sum gradients in another order, so the runs agree to bf16-level tolerances, not bit for bit.
TEST_P(NcclTraining, TenStepsOnNGpusMatchOneGpuWithTheSameGlobalBatch) {
  SKIP_WITHOUT_GPU_RANKS(2);
  const int n = g_comm->size();
  run_training(options("ranks", 2), {}, g_comm);
  if (g_comm->rank() == 0) {
    std::unique_ptr<Comm> local = make_local_comm();
    TrainOptions single = options("single", 2 * n);
    single.zero_stage = 0;
    run_training(single, {}, local.get());
    expect_run_matches(dir_ + "/ranks", dir_ + "/single", 10, 1e-2, 2e-2);
  }
  g_comm->barrier();
}

// The f32 masters are checkpointed: interrupting and resuming on the same GPUs continues the same run.
TEST_P(NcclTraining, ResumeOnTheSameGpusContinuesTheRun) {
  SKIP_WITHOUT_GPU_RANKS(2);
  TrainOptions interrupted = options("interrupted", 2);
  interrupted.interrupt_at_step = 4;
  EXPECT_TRUE(run_training(interrupted, {}, g_comm).interrupted);
  TrainOptions resumed = options("interrupted", 2);
  resumed.resume_from_checkpoint = "auto";
  run_training(resumed, {}, g_comm);
  run_training(options("straight", 2), {}, g_comm);
  if (g_comm->rank() == 0) {
    expect_run_matches(dir_ + "/interrupted", dir_ + "/straight", 10, 1e-6, 1e-6);
  }
  g_comm->barrier();
}

INSTANTIATE_TEST_SUITE_P(ZeroStages, NcclTraining, ::testing::Values(0, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

}  // namespace
}  // namespace ll
