// Host-side planning of the multi-GPU path (no GPU, no MPI needed): which GPU a rank takes, and ZeRO-2's buckets,
// rank splits and the mapping between the f32 gradient arena and a bf16 weight arena with different padding.
#include <gtest/gtest.h>

#include <map>

#include "cpu/cpu_backend.h"
#include "model/param_select.h"
#include "model/params.h"
#include "mpi/comm.h"
#include "mpi/zero_plan.h"
#include "util/error.h"

namespace ll {
namespace {

template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing `" << needle << "`";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ChooseLocalDevice, LocalRankModuloVisibleDevices) {
  EXPECT_EQ(choose_local_device(0, 1, 1), 0);
  EXPECT_EQ(choose_local_device(3, 8, 8), 3);
  EXPECT_EQ(choose_local_device(1, 2, 4), 1);  // more GPUs than ranks: the first ones
  // Every rank sees exactly one GPU: the launcher bound them (CUDA_VISIBLE_DEVICES per rank), or they share it.
  EXPECT_EQ(choose_local_device(5, 8, 1), 0);
  // Fewer GPUs than ranks: shared round-robin (train's --comm mpi, eval), never an error here.
  for (int r = 0; r < 8; ++r) EXPECT_EQ(choose_local_device(r, 8, 3), r % 3) << r;
}

TEST(ChooseLocalDevice, NoGpuOrABadLocalRankIsAnErrorNamingTheNumbers) {
  expect_error([] { choose_local_device(0, 2, 0); }, "rank 0 of the 2 ranks on this node sees no CUDA device");
  expect_error([] { choose_local_device(2, 2, 2); }, "local rank 2 of 2");
}

TEST(BackwardPosition, LayersFromTheLastThenTheOuterGroup) {
  EXPECT_EQ(backward_position(3, 4), 0);
  EXPECT_EQ(backward_position(0, 4), 3);
  EXPECT_EQ(backward_position(kOuterGroup, 4), 4);
}

// A trainable layout like ParamStore's: embedding (outer), per layer [norm, lora A, lora B, norm], final norm and
// LM head (outer); offsets aligned to 256 bytes for f32 gradients and for `weight_bytes`-sized weights.
std::vector<Zero2Param> layout(int layers, size_t weight_bytes, int64_t* grad_total, int64_t* weight_total) {
  std::vector<std::pair<int64_t, int>> sizes = {{50 * 32, kOuterGroup}};
  for (int l = 0; l < layers; ++l)
    for (int64_t n : {int64_t(32), int64_t(4 * 32), int64_t(32 * 4), int64_t(32)}) sizes.push_back({n, l});
  sizes.push_back({32, kOuterGroup});
  sizes.push_back({50 * 32, kOuterGroup});
  std::vector<Zero2Param> out;
  int64_t g = 0, w = 0;
  auto align = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  for (const auto& [n, group] : sizes) {
    out.push_back({g / 4, w / int64_t(weight_bytes), n, group});
    g = align(g + n * 4);
    w = align(w + n * int64_t(weight_bytes));
  }
  *grad_total = g / 4;
  *weight_total = w / int64_t(weight_bytes);
  return out;
}

// Checks a plan for every rank: pieces cover every parameter element exactly once, inside the owner's gradient
// range and weight range of the bucket, at consistent shard offsets.
void check_plan(const std::vector<Zero2Param>& params, int64_t gt, int64_t wt, int64_t bucket, int world,
                int layers) {
  std::map<std::pair<int, int64_t>, int> owner;  // (param, element) → rank
  std::vector<Zero2Plan> plans;
  for (int r = 0; r < world; ++r) plans.push_back(plan_zero2(params, gt, wt, bucket, world, r, layers));
  const std::vector<Zero2Bucket>& buckets = plans[0].buckets;
  int64_t gsum = 0, wsum = 0;
  for (size_t k = 0; k < buckets.size(); ++k) {
    const Zero2Bucket& b = buckets[k];
    EXPECT_EQ(b.grad_begin, gsum);
    EXPECT_EQ(b.weight_begin, wsum);
    gsum += b.grad_count;
    wsum += b.weight_count;
    int64_t c = 0, w = 0;
    for (int r = 0; r < world; ++r) c += b.counts[size_t(r)], w += b.weight_counts[size_t(r)];
    EXPECT_EQ(c, b.grad_count);
    EXPECT_EQ(w, b.weight_count);
    for (int r = 1; r < world; ++r) EXPECT_EQ(plans[size_t(r)].buckets[k].weight_counts, b.weight_counts);
    // The ready group completes every parameter of the bucket.
    for (const Zero2Param& p : params) {
      if (p.grad_offset >= b.grad_begin && p.grad_offset < b.grad_begin + b.grad_count) {
        EXPECT_LE(backward_position(p.group, layers), backward_position(b.ready_group, layers));
      }
    }
  }
  EXPECT_EQ(gsum, gt);
  EXPECT_EQ(wsum, wt);
  for (int r = 0; r < world; ++r) {
    const Zero2Plan& plan = plans[size_t(r)];
    int64_t shard = 0;
    for (const Zero2Bucket& b : plan.buckets) {
      EXPECT_EQ(b.shard_offset, shard);
      shard += b.counts[size_t(r)];
    }
    EXPECT_EQ(plan.shard_elems, shard);
    for (const Zero2Piece& z : plan.pieces) {
      const Zero2Param& p = params[size_t(z.param)];
      const Zero2Bucket& b = plan.buckets[size_t(z.bucket)];
      const int64_t glo = b.grad_begin + split_offset(b.counts, r);
      const int64_t wlo = b.weight_begin + split_offset(b.weight_counts, r);
      EXPECT_GE(p.grad_offset + z.param_begin, glo);
      EXPECT_LE(p.grad_offset + z.param_begin + z.count, glo + b.counts[size_t(r)]);
      EXPECT_EQ(z.shard_offset, b.shard_offset + (p.grad_offset + z.param_begin - glo));
      EXPECT_EQ(z.weight_offset, p.weight_offset + z.param_begin);
      EXPECT_GE(z.weight_offset, wlo) << "rank " << r << " piece of param " << z.param;
      EXPECT_LE(z.weight_offset + z.count, wlo + b.weight_counts[size_t(r)]) << "rank " << r;
      for (int64_t i = 0; i < z.count; ++i) EXPECT_TRUE(owner.emplace(std::make_pair(z.param, z.param_begin + i), r).second);
    }
  }
  int64_t elems = 0;
  for (const Zero2Param& p : params) elems += p.numel;
  EXPECT_EQ(int64_t(owner.size()), elems);
}

TEST(PlanZero2, OneBucketWithIdenticalLayoutsIsTheEvenSplitOfTheArena) {
  int64_t gt = 0, wt = 0;
  const std::vector<Zero2Param> params = layout(3, 4, &gt, &wt);
  ASSERT_EQ(gt, wt);
  for (int world : {1, 2, 3, 4, 8}) {
    for (int r = 0; r < world; ++r) {
      const Zero2Plan plan = plan_zero2(params, gt, wt, 0, world, r, 3);
      ASSERT_EQ(plan.buckets.size(), 1u);
      EXPECT_EQ(plan.buckets[0].counts, even_split(gt, world));
      EXPECT_EQ(plan.buckets[0].weight_counts, plan.buckets[0].counts);
      EXPECT_EQ(plan.buckets[0].ready_group, kOuterGroup);
      EXPECT_EQ(plan.shard_elems, even_split(gt, world)[size_t(r)]);
    }
    check_plan(params, gt, wt, 0, world, 3);
  }
}

TEST(PlanZero2, Bf16WeightsMapToTheSameElementsAsTheF32Gradients) {
  int64_t gt = 0, wt = 0;
  const std::vector<Zero2Param> params = layout(3, 2, &gt, &wt);
  EXPECT_NE(gt, wt);  // the 32-element norms pad to 64 f32 but 128 bf16 elements
  for (int world : {1, 2, 3, 4, 7})
    for (int64_t bucket : {int64_t(0), int64_t(97), int64_t(300), int64_t(5000)}) check_plan(params, gt, wt, bucket, world, 3);
}

TEST(PlanZero2, BucketsCloseAtTheLimitAndNeverMixTheOuterGroupWithLayers) {
  int64_t gt = 0, wt = 0;
  const std::vector<Zero2Param> params = layout(4, 2, &gt, &wt);
  const int64_t limit = 300;
  const Zero2Plan plan = plan_zero2(params, gt, wt, limit, 2, 0, 4);
  ASSERT_GE(plan.buckets.size(), 6u);
  // The embedding (first in the arena) and the final norm + LM head (last) are outer buckets of their own; the
  // layer buckets in between become ready from the last layer to the first, as backward proceeds.
  EXPECT_EQ(plan.buckets.front().ready_group, kOuterGroup);
  EXPECT_EQ(plan.buckets.back().ready_group, kOuterGroup);
  for (size_t k = 0; k < plan.buckets.size(); ++k) {
    const Zero2Bucket& b = plan.buckets[k];
    std::vector<const Zero2Param*> in;
    for (const Zero2Param& p : params)
      if (p.grad_offset >= b.grad_begin && p.grad_offset < b.grad_begin + b.grad_count) in.push_back(&p);
    ASSERT_FALSE(in.empty());
    for (const Zero2Param* p : in) EXPECT_EQ(p->group < 0, b.ready_group < 0) << "bucket " << k;
    const int64_t extent = in.back()->grad_offset + in.back()->numel - in.front()->grad_offset;
    EXPECT_TRUE(in.size() == 1 || extent <= limit) << "bucket " << k << " spans " << extent;
    if (k > 0 && b.ready_group >= 0 && plan.buckets[k - 1].ready_group >= 0) {
      EXPECT_GE(b.ready_group, plan.buckets[k - 1].ready_group);
    }
  }
  check_plan(params, gt, wt, limit, 2, 4);
}

TEST(PlanZero2, MatchesTheArenasOfARealParamStore) {
  // Offsets from ParamStore's arenas on the CPU backend (f32 both): identical layouts, one bucket = old split.
  CpuBackend<float> backend;
  ModelConfig c;
  c.hidden_size = 32, c.intermediate_size = 48, c.num_attention_heads = 4, c.num_key_value_heads = 2;
  c.num_hidden_layers = 2, c.vocab_size = 50;
  LoraConfig lora;
  lora.rank = 4;
  lora.targets = parse_lora_targets("q_proj,v_proj", c);
  ParamStore store(backend, c, lora, TrainableConfig::parse("embed,norm"));
  std::vector<Zero2Param> params;
  for (Param& p : store.all())
    if (p.trainable) params.push_back({store.grad_offset(p), store.trainable_offset(p), p.numel(), p.layer});
  check_plan(params, store.flat_grads().numel(), store.flat_trainable().numel(), 100, 3, 2);
  const Zero2Plan one = plan_zero2(params, store.flat_grads().numel(), store.flat_trainable().numel(), 0, 3, 1, 2);
  EXPECT_EQ(one.buckets[0].counts, even_split(store.flat_grads().numel(), 3));
}

}  // namespace
}  // namespace ll
