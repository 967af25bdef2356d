#include "core/profiling_backend.h"

#include <algorithm>
#include <cstdio>

namespace ll {

void ProfilingBackend::record(const char* op, std::chrono::steady_clock::time_point t0) {
  inner_.synchronize();
  Acc& a = acc_[op];
  ++a.calls;
  a.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<ProfilingBackend::OpStat> ProfilingBackend::stats() const {
  std::vector<OpStat> out;
  for (const auto& [op, a] : acc_) out.push_back({op, a.calls, a.seconds});
  std::stable_sort(out.begin(), out.end(), [](const OpStat& x, const OpStat& y) { return x.seconds > y.seconds; });
  return out;
}

std::string ProfilingBackend::table(double total_seconds) const {
  const std::vector<OpStat> s = stats();
  double sum = 0;
  int64_t calls = 0;
  for (const OpStat& o : s) sum += o.seconds, calls += o.calls;
  const double denom = total_seconds > 0 ? total_seconds : sum;
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-20s %8s %12s %10s %7s\n", "op", "calls", "total ms", "ms/call",
                total_seconds > 0 ? "% wall" : "% ops");
  out += line;
  auto row = [&](const std::string& op, int64_t n, double sec) {
    std::snprintf(line, sizeof line, "%-20s %8lld %12.3f %10.4f %7.1f\n", op.c_str(), (long long)n, sec * 1e3,
                  n ? sec * 1e3 / double(n) : 0.0, denom > 0 ? 100.0 * sec / denom : 0.0);
    out += line;
  };
  for (const OpStat& o : s) row(o.op, o.calls, o.seconds);
  row("sum of ops", calls, sum);
  // Time outside the ops (host work, collectives, the profiler's own synchronisation) when a wall time is given.
  if (total_seconds > 0) {
    const double rest = total_seconds - sum;
    std::snprintf(line, sizeof line, "%-20s %8s %12.3f %10s %7.1f\n", "outside ops", "-", rest * 1e3, "-",
                  100.0 * rest / total_seconds);
    out += line;
  }
  return out;
}

nlohmann::json ProfilingBackend::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const OpStat& o : stats()) rows.push_back({{"op", o.op}, {"calls", o.calls}, {"ms", o.seconds * 1e3}});
  return rows;
}

// ---- forwarding ----------------------------------------------------------------------------------------------------
void* ProfilingBackend::allocate(size_t bytes) {
  return timed("allocate", [&] { return inner_.allocate(bytes); });
}
void ProfilingBackend::release(void* ptr) {
  timed("release", [&] { inner_.release(ptr); });
}
void ProfilingBackend::copy_from_host(Tensor dst, const void* host_src) {
  timed("copy_from_host", [&] { inner_.copy_from_host(dst, host_src); });
}
void ProfilingBackend::copy_to_host(void* host_dst, const Tensor& src) {
  timed("copy_to_host", [&] { inner_.copy_to_host(host_dst, src); });
}
void* ProfilingBackend::allocate_host(size_t bytes) {
  return timed("allocate_host", [&] { return inner_.allocate_host(bytes); });
}
void ProfilingBackend::release_host(void* ptr) {
  timed("release_host", [&] { inner_.release_host(ptr); });
}
// While enabled, the synchronisation around each op makes an asynchronous copy's row its whole transfer time (and
// the copy no longer overlaps compute).
void ProfilingBackend::copy_to_host_async(void* host_dst, const Tensor& src) {
  timed("copy_to_host_async", [&] { inner_.copy_to_host_async(host_dst, src); });
}
void ProfilingBackend::copy_from_host_async(Tensor dst, const void* host_src) {
  timed("copy_from_host_async", [&] { inner_.copy_from_host_async(dst, host_src); });
}
void ProfilingBackend::wait_for_copies() {
  timed("wait_for_copies", [&] { inner_.wait_for_copies(); });
}
void ProfilingBackend::copy(Tensor dst, const Tensor& src) {
  timed("copy", [&] { inner_.copy(dst, src); });
}
void ProfilingBackend::convert(Tensor dst, const Tensor& src) {
  timed("convert", [&] { inner_.convert(dst, src); });
}
void ProfilingBackend::zero(Tensor t) {
  timed("zero", [&] { inner_.zero(t); });
}

void ProfilingBackend::embedding_forward(Tensor out, const Tensor& ids, const Tensor& table) {
  timed("embedding_forward", [&] { inner_.embedding_forward(out, ids, table); });
}
void ProfilingBackend::embedding_backward(Tensor dtable, const Tensor& ids, const Tensor& dout) {
  timed("embedding_backward", [&] { inner_.embedding_backward(dtable, ids, dout); });
}
void ProfilingBackend::rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& w, double eps) {
  timed("rmsnorm_forward", [&] { inner_.rmsnorm_forward(out, rstd, x, w, eps); });
}
void ProfilingBackend::rmsnorm_backward(Tensor dx, Tensor dw, const Tensor& dout, const Tensor& x, const Tensor& w,
                                        const Tensor& rstd, bool accumulate_dx) {
  timed("rmsnorm_backward", [&] { inner_.rmsnorm_backward(dx, dw, dout, x, w, rstd, accumulate_dx); });
}
void ProfilingBackend::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, const Tensor& x, const Tensor& w,
                                         const Tensor& b, double eps) {
  timed("layernorm_forward", [&] { inner_.layernorm_forward(out, mean, rstd, x, w, b, eps); });
}
void ProfilingBackend::layernorm_backward(Tensor dx, Tensor dw, Tensor db, const Tensor& dout, const Tensor& x,
                                          const Tensor& w, const Tensor& mean, const Tensor& rstd,
                                          bool accumulate_dx) {
  timed("layernorm_backward", [&] { inner_.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, accumulate_dx); });
}
void ProfilingBackend::linear_forward(Tensor y, const Tensor& x, const Tensor& w, bool accumulate) {
  timed("linear_forward", [&] { inner_.linear_forward(y, x, w, accumulate); });
}
void ProfilingBackend::linear_backward(Tensor dx, Tensor dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                                       bool accumulate_dx) {
  timed("linear_backward", [&] { inner_.linear_backward(dx, dw, dy, x, w, accumulate_dx); });
}
void ProfilingBackend::add_bias(Tensor y, const Tensor& b) {
  timed("add_bias", [&] { inner_.add_bias(y, b); });
}
void ProfilingBackend::bias_backward(Tensor db, const Tensor& dy) {
  timed("bias_backward", [&] { inner_.bias_backward(db, dy); });
}
void ProfilingBackend::lora_forward(Tensor y, Tensor xa, const Tensor& x, const Tensor& x_lora, const Tensor& w,
                                    const Tensor& a, const Tensor& b, double scale) {
  timed("lora_forward", [&] { inner_.lora_forward(y, xa, x, x_lora, w, a, b, scale); });
}
void ProfilingBackend::lora_backward(Tensor dx, Tensor dx_lora, Tensor dw, Tensor da, Tensor db, Tensor dxa,
                                     const Tensor& dy, const Tensor& x, const Tensor& x_lora, const Tensor& xa,
                                     const Tensor& w, const Tensor& a, const Tensor& b, double scale,
                                     bool accumulate_dx) {
  timed("lora_backward",
        [&] { inner_.lora_backward(dx, dx_lora, dw, da, db, dxa, dy, x, x_lora, xa, w, a, b, scale, accumulate_dx); });
}
void ProfilingBackend::dropout(Tensor out, const Tensor& x, double p, uint64_t seed) {
  timed("dropout", [&] { inner_.dropout(out, x, p, seed); });
}
void ProfilingBackend::rope_forward(Tensor x, const Tensor& positions, const RopeParams& p) {
  timed("rope_forward", [&] { inner_.rope_forward(x, positions, p); });
}
void ProfilingBackend::rope_backward(Tensor dx, const Tensor& positions, const RopeParams& p) {
  timed("rope_backward", [&] { inner_.rope_backward(dx, positions, p); });
}
void ProfilingBackend::attention_forward(Tensor out, Tensor lse, const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionMask& mask) {
  timed("attention_forward", [&] { inner_.attention_forward(out, lse, q, k, v, mask); });
}
void ProfilingBackend::attention_backward(Tensor dq, Tensor dk, Tensor dv, const Tensor& dout, const Tensor& q,
                                          const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                                          const AttentionMask& mask) {
  timed("attention_backward", [&] { inner_.attention_backward(dq, dk, dv, dout, q, k, v, out, lse, mask); });
}
void ProfilingBackend::swiglu_forward(Tensor out, const Tensor& gate, const Tensor& up) {
  timed("swiglu_forward", [&] { inner_.swiglu_forward(out, gate, up); });
}
void ProfilingBackend::swiglu_backward(Tensor dgate, Tensor dup, const Tensor& dout, const Tensor& gate,
                                       const Tensor& up) {
  timed("swiglu_backward", [&] { inner_.swiglu_backward(dgate, dup, dout, gate, up); });
}
void ProfilingBackend::split_qkv(Tensor q, Tensor k, Tensor v, const Tensor& qkv) {
  timed("split_qkv", [&] { inner_.split_qkv(q, k, v, qkv); });
}
void ProfilingBackend::merge_qkv(Tensor qkv, const Tensor& q, const Tensor& k, const Tensor& v) {
  timed("merge_qkv", [&] { inner_.merge_qkv(qkv, q, k, v); });
}
void ProfilingBackend::gelu_forward(Tensor out, const Tensor& x) {
  timed("gelu_forward", [&] { inner_.gelu_forward(out, x); });
}
void ProfilingBackend::gelu_backward(Tensor dx, const Tensor& dout, const Tensor& x) {
  timed("gelu_backward", [&] { inner_.gelu_backward(dx, dout, x); });
}
void ProfilingBackend::add(Tensor out, const Tensor& a, const Tensor& b) {
  timed("add", [&] { inner_.add(out, a, b); });
}
void ProfilingBackend::cross_entropy(Tensor logits, Tensor losses, const Tensor& targets, double grad_scale,
                                     bool compute_grad) {
  timed("cross_entropy", [&] { inner_.cross_entropy(logits, losses, targets, grad_scale, compute_grad); });
}
void ProfilingBackend::argmax_rows(Tensor out, const Tensor& logits) {
  timed("argmax_rows", [&] { inner_.argmax_rows(out, logits); });
}
double ProfilingBackend::sum_squares(const Tensor& x) {
  return timed("sum_squares", [&] { return inner_.sum_squares(x); });
}
void ProfilingBackend::scale(Tensor x, double s) {
  timed("scale", [&] { inner_.scale(x, s); });
}
void ProfilingBackend::adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v,
                                  const AdamWStep& step) {
  timed("adamw_step", [&] { inner_.adamw_step(param, master, grad, m, v, step); });
}

}  // namespace ll
