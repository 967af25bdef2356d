// An op-level profiler without nsys: a Backend that forwards every call to an inner backend and, while enabled,
// brackets each op with inner.synchronize() so the wall time it records is the op's own device time (plus launch
// and the synchronisation round trip). Results are unchanged: every call is forwarded as is.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/backend.h"

namespace ll {

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : inner_(inner) {}
  Backend& inner() { return inner_; }

  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  void reset() { acc_.clear(); }

  struct OpStat {
    std::string op;
    int64_t calls;
    double seconds;
  };
  std::vector<OpStat> stats() const;  // sorted by seconds, descending (ties by name)
  // Text table: op, calls, total ms, ms/call, % of total_seconds (when > 0, e.g. the step's wall time) else of the sum.
  std::string table(double total_seconds = 0) const;
  // [{op, calls, ms}] in stats() order.
  nlohmann::json to_json() const;

  std::string name() const override { return inner_.name(); }
  Device device() const override { return inner_.device(); }
  DTypePolicy dtypes() const override { return inner_.dtypes(); }

  void* allocate(size_t bytes) override;
  void release(void* ptr) override;
  void copy_from_host(Tensor dst, const void* host_src) override;
  void copy_to_host(void* host_dst, const Tensor& src) override;
  void* allocate_host(size_t bytes) override;
  void release_host(void* ptr) override;
  void copy_to_host_async(void* host_dst, const Tensor& src) override;
  void copy_from_host_async(Tensor dst, const void* host_src) override;
  void wait_for_copies() override;
  void copy(Tensor dst, const Tensor& src) override;
  void convert(Tensor dst, const Tensor& src) override;
  void zero(Tensor t) override;
  void synchronize() override { inner_.synchronize(); }
  bool device_memory(DeviceMemoryState* state) const override { return inner_.device_memory(state); }

  void embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) override;
  void embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) override;
  void rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        bool accumulate_dx) override;
  void layernorm_forward(Tensor out, Tensor mean, Tensor rstd, const Tensor& x, const Tensor& w, const Tensor& b,
                         double eps) override;
  void layernorm_backward(Tensor dx, Tensor dw, Tensor db, const Tensor& dout, const Tensor& x, const Tensor& w,
                          const Tensor& mean, const Tensor& rstd, bool accumulate_dx) override;
  void linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) override;
  void linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                       bool accumulate_dx) override;
  void add_bias(Tensor y, const Tensor& b) override;
  void bias_backward(Tensor db, const Tensor& dy) override;
  void lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w, const Tensor& a,
                    const Tensor& b, double scale) override;
  void lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa, const Tensor& dy,
                     const Tensor& x, const Tensor& x_lora, const Tensor& xa, const Tensor& w, const Tensor& a,
                     const Tensor& b, double scale, bool accumulate_dx) override;
  void dropout(Tensor out, const Tensor& x, double p, uint64_t seed) override;
  void rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) override;
  void rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) override;
  void attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionMask& mask) override;
  void attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                          const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionMask& mask) override;
  void swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate, const Tensor& up) override;
  void split_qkv(Tensor q, Tensor k, Tensor v, const Tensor& qkv) override;
  void merge_qkv(Tensor qkv, const Tensor& q, const Tensor& k, const Tensor& v) override;
  void gelu_forward(Tensor out, const Tensor& x) override;
  void gelu_backward(Tensor dx, const Tensor& dout, const Tensor& x) override;
  void add(Tensor out, const Tensor& a, const Tensor& b) override;
  void cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                     bool compute_grad) override;
  void argmax_rows(Tensor out, const Tensor& logits) override;
  double sum_squares(const Tensor& x) override;
  void scale(Tensor x, double s) override;
  void adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v,
                  const AdamWStep& step) override;

 private:
  struct Acc {
    int64_t calls = 0;
    double seconds = 0;
  };
  // Runs f; while enabled, synchronizes first (so earlier queued work is not billed to this op) and after (so an
  // asynchronous backend's op has finished), and adds the time in between to `op`. A throwing op is not recorded.
  template <typename F>
  auto timed(const char* op, F&& f) -> decltype(f()) {
    if (!enabled_) return f();
    inner_.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      record(op, t0);
    } else {
      auto r = f();
      record(op, t0);
      return r;
    }
  }
  void record(const char* op, std::chrono::steady_clock::time_point t0);  // synchronizes, then adds the time

  Backend& inner_;
  bool enabled_ = false;
  std::map<std::string, Acc> acc_;
};

}  // namespace ll
