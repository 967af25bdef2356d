// Where parameter memory comes from when it is not the ParamStore's own arenas. ZeRO-3 (mpi/zero3.h) keeps only
// 1/N of every parameter per rank and implements this interface; the model brackets every use of a group of
// parameters with acquire/release so the weights can be gathered just in time.
//
// Groups: kOuterGroup (embedding, final norm, LM head) and one per decoder layer (0 … layers−1).
#pragma once

namespace ll {

constexpr int kOuterGroup = -1;

class ParamStorage {
 public:
  virtual ~ParamStorage() = default;
  // The group's weights are valid and its gradients writable (zeroed) until release().
  virtual void acquire(int group) = 0;
  virtual void release(int group) = 0;
  // A hint: `group` is acquired next (after the current one). The storage may start gathering it now, on a
  // communication stream, while the current group computes. Every rank gives the same hints.
  virtual void prefetch(int group) { (void)group; }
  // The group's gradients of this micro-batch are complete: reduce them into their owners' shards.
  virtual void backward_done(int group) = 0;
  // The acquired group's weights were written (initialisation, loading): keep this rank's part of them.
  virtual void commit(int group) = 0;
  // Every parameter (or every trainable one) readable at once, e.g. to save or export, until dematerialize().
  virtual void materialize(bool trainable_only) = 0;
  virtual void dematerialize() = 0;
  virtual void zero_grads() = 0;
};

}  // namespace ll
