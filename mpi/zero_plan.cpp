#include "mpi/zero_plan.h"

#include <algorithm>

#include "mpi/comm.h"
#include "util/error.h"

namespace ll {

int backward_position(int group, int num_layers) {
  LL_ASSERT(group >= -1 && group < num_layers, "backward_position: group ", group, " of ", num_layers, " layers");
  return group < 0 ? num_layers : num_layers - 1 - group;
}

Zero2Plan plan_zero2(const std::vector<Zero2Param>& params, int64_t grad_total, int64_t weight_total,
                     int64_t bucket_elems, int world, int rank, int num_layers) {
  LL_ASSERT(world >= 1 && rank >= 0 && rank < world, "plan_zero2: rank ", rank, " of ", world);
  bool identical = grad_total == weight_total;
  for (size_t i = 0; i < params.size(); ++i) {
    const Zero2Param& p = params[i];
    LL_ASSERT(p.numel >= 0 && p.grad_offset >= 0 && p.grad_offset + p.numel <= grad_total && p.weight_offset >= 0 &&
                 p.weight_offset + p.numel <= weight_total,
             "plan_zero2: parameter ", i, " lies outside its arenas");
    if (i > 0)
      LL_ASSERT(p.grad_offset >= params[i - 1].grad_offset + params[i - 1].numel &&
                   p.weight_offset >= params[i - 1].weight_offset + params[i - 1].numel,
               "plan_zero2: parameters must be in arena order without overlap (parameter ", i, ")");
    identical = identical && p.grad_offset == p.weight_offset;
  }

  // Cut points: indices of the parameters that start a bucket.
  std::vector<size_t> starts;
  if (!params.empty()) starts.push_back(0);
  if (bucket_elems > 0) {
    int64_t begin = 0;  // gradient offset where the current bucket starts
    for (size_t i = 1; i < params.size(); ++i) {
      const bool group_kind_changes = (params[i].group < 0) != (params[i - 1].group < 0);
      const bool full = params[i].grad_offset + params[i].numel - begin > bucket_elems;
      if (group_kind_changes || full) {
        starts.push_back(i);
        begin = params[i].grad_offset;
      }
    }
  }

  Zero2Plan plan;
  if (starts.empty()) {  // nothing trains: one empty bucket keeps the schedule uniform
    Zero2Bucket b;
    b.grad_count = grad_total;
    b.weight_count = weight_total;
    b.counts = even_split(grad_total, world);
    b.weight_counts = identical ? b.counts : even_split(weight_total, world);
    b.ready_group = -1;
    plan.buckets.push_back(b);
    plan.shard_elems = b.counts[size_t(rank)];
    return plan;
  }
  for (size_t k = 0; k < starts.size(); ++k) {
    const size_t first = starts[k], last = k + 1 < starts.size() ? starts[k + 1] : params.size();  // [first, last)
    Zero2Bucket b;
    b.grad_begin = k == 0 ? 0 : params[first].grad_offset;
    const int64_t grad_end = k + 1 < starts.size() ? params[last].grad_offset : grad_total;
    b.weight_begin = k == 0 ? 0 : params[first].weight_offset;
    const int64_t weight_end = k + 1 < starts.size() ? params[last].weight_offset : weight_total;
    b.grad_count = grad_end - b.grad_begin;
    b.weight_count = weight_end - b.weight_begin;
    b.counts = even_split(b.grad_count, world);
    int ready = params[first].group;
    for (size_t i = first; i < last; ++i)
      if (backward_position(params[i].group, num_layers) > backward_position(ready, num_layers)) ready = params[i].group;
    b.ready_group = ready;
    if (identical) {
      b.weight_counts = b.counts;
    } else {
      // Gradient offset x → weight offset: inside parameter p, the same element; in the padding after p, the end
      // of p. Monotone, so every rank's parameter elements fall inside its weight range.
      auto map = [&](int64_t x) {
        if (x <= b.grad_begin) return b.weight_begin;
        if (x >= grad_end) return weight_end;
        int64_t w = b.weight_begin;
        for (size_t i = first; i < last && params[i].grad_offset <= x; ++i)
          w = params[i].weight_offset + std::min(x - params[i].grad_offset, params[i].numel);
        return w;
      };
      b.weight_counts.resize(size_t(world));
      for (int r = 0; r < world; ++r)
        b.weight_counts[size_t(r)] =
            map(b.grad_begin + split_offset(b.counts, r + 1)) - map(b.grad_begin + split_offset(b.counts, r));
    }
    b.shard_offset = plan.shard_elems;
    plan.shard_elems += b.counts[size_t(rank)];

    const int64_t lo = b.grad_begin + split_offset(b.counts, rank), hi = lo + b.counts[size_t(rank)];
    for (size_t i = first; i < last; ++i) {
      const Zero2Param& p = params[i];
      const int64_t s = std::max(lo, p.grad_offset), e = std::min(hi, p.grad_offset + p.numel);
      if (s < e)
        plan.pieces.push_back({int(i), s - p.grad_offset, e - s, p.weight_offset + (s - p.grad_offset),
                               b.shard_offset + (s - lo), int(k)});
    }
    plan.buckets.push_back(std::move(b));
  }
  return plan;
}

}  // namespace ll
