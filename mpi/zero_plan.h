// Host-side planning of ZeRO-2 sharding (plain C++, unit-tested on CPU): gradient buckets, who owns what, and
// where each owned element lives in the flat gradient arena, the rank's reduced-gradient shard and the flat weight
// arena.
//
// The gradient arena (f32) and the trainable-weight arena (the backend's weight dtype: bf16 on CUDA) hold the same
// parameters in the same order, but every tensor starts on a 256-byte boundary, so with different dtypes their
// element offsets differ. Buckets and rank splits are cut in the gradient arena; the weight arena is split at the
// matching points (weight_counts), so the all-gather after the update moves exactly the elements each rank updated.
// With identical layouts (fp32 weights) the weight splits are the gradient splits.
//
// Buckets: contiguous ranges of the gradient arena, closed at parameter boundaries once they reach bucket_elems,
// and never mixing the outer group (embedding, final norm, LM head) with decoder layers. Backward finishes the layers
// from the last to the first, then the outer group; a bucket is complete after backward_done(ready_group) — the
// latest of its parameters' groups in that order — so its reduce-scatter can start while backward continues.
// bucket_elems <= 0: one bucket over the whole arena (the CPU default, the schedule of the unbucketed code).
#pragma once
#include <cstdint>
#include <vector>

namespace ll {

// One trainable parameter, in arena order.
struct Zero2Param {
  int64_t grad_offset = 0;    // element offset in the flat gradient arena
  int64_t weight_offset = 0;  // element offset in the flat trainable-weight arena
  int64_t numel = 0;
  int group = 0;  // kOuterGroup (−1) or its decoder layer
};

struct Zero2Bucket {
  int64_t grad_begin = 0, grad_count = 0;      // range of the gradient arena
  int64_t weight_begin = 0, weight_count = 0;  // the matching range of the weight arena
  std::vector<int64_t> counts;                 // split of the gradient range over ranks (even)
  std::vector<int64_t> weight_counts;          // split of the weight range holding the same parameter elements
  int ready_group = 0;                         // complete after backward_done(ready_group)
  int64_t shard_offset = 0;                    // where this rank's part starts in its reduced-gradient shard
};

// A contiguous part of one parameter updated by this rank.
struct Zero2Piece {
  int param = 0;               // index into the Zero2Param list
  int64_t param_begin = 0;     // first element within the parameter
  int64_t count = 0;
  int64_t weight_offset = 0;   // in the flat weight arena
  int64_t shard_offset = 0;    // in this rank's reduced-gradient shard
  int bucket = 0;
};

struct Zero2Plan {
  std::vector<Zero2Bucket> buckets;
  std::vector<Zero2Piece> pieces;  // this rank's, bucket by bucket, in arena order
  int64_t shard_elems = 0;         // Σ over buckets of this rank's count
};

// Position of a group in the order backward completes them: layers L−1 … 0, then the outer group.
int backward_position(int group, int num_layers);

// `params` in arena order (strictly increasing offsets, non-overlapping, inside the totals).
Zero2Plan plan_zero2(const std::vector<Zero2Param>& params, int64_t grad_total, int64_t weight_total,
                     int64_t bucket_elems, int world, int rank, int num_layers);

}  // namespace ll
