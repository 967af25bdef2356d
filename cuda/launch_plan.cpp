#include "cuda/launch_plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/error.h"

namespace ll::cuda_plan {

ColumnReducePlan plan_column_reduce(int64_t rows) {
  if (rows <= 0) return {kColumnReduceMinRows, 0};
  int64_t per = (rows + kColumnReduceMaxChunks - 1) / kColumnReduceMaxChunks;
  per = std::max(per, kColumnReduceMinRows);
  return {per, (rows + per - 1) / per};
}

SumSquaresPlan plan_sum_squares(int64_t n) {
  if (n <= 0) return {kSumSquaresBlockElems, 0};
  return {kSumSquaresBlockElems, (n + kSumSquaresBlockElems - 1) / kSumSquaresBlockElems};
}

EmbeddingBackwardPlan plan_embedding_backward(const int32_t* ids, int64_t rows, int64_t vocab) {
  LL_CHECK(rows < (int64_t(1) << 31), "embedding_backward: ", rows, " rows exceed the int32 plan");
  for (int64_t i = 0; i < rows; ++i)
    LL_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding_backward: token id ", ids[i], " at row ", i,
             " is outside the vocabulary [0, ", vocab, ")");
  EmbeddingBackwardPlan p;
  p.order.resize(size_t(rows));
  std::iota(p.order.begin(), p.order.end(), 0);
  std::stable_sort(p.order.begin(), p.order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  for (int64_t i = 0; i < rows; ++i)
    if (i == 0 || ids[p.order[i]] != ids[p.order[i - 1]]) {
      p.run_start.push_back(int32_t(i));
      p.run_id.push_back(ids[p.order[i]]);
    }
  p.run_start.push_back(int32_t(rows));
  return p;
}

AdamWArgs make_adamw_args(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  LL_ASSERT(step >= 1, "adamw: step must be >= 1, got ", step);
  const double bc1 = 1.0 - std::pow(beta1, double(step)), bc2 = 1.0 - std::pow(beta2, double(step));
  AdamWArgs a;
  a.lr_decay = float(1.0 - lr * weight_decay);
  a.beta1 = float(beta1);
  a.beta2 = float(beta2);
  a.one_minus_beta1 = float(1.0 - beta1);
  a.one_minus_beta2 = float(1.0 - beta2);
  a.step_size = float(lr / bc1);
  a.bc2_sqrt = float(std::sqrt(bc2));
  a.eps = float(eps);
  return a;
}

int64_t elementwise_blocks(int64_t n, int threads, int64_t max_blocks) {
  if (n <= 0) return 1;
  return std::clamp<int64_t>((n + threads - 1) / threads, 1, max_blocks);
}

std::vector<float> rope_angle_rates(double theta, double factor, int64_t rotary_dims, const RopeLlama3& llama3) {
  const std::vector<double> inv_freq = rope_inv_freq(theta, rotary_dims, llama3);
  std::vector<float> f(inv_freq.size());
  for (size_t i = 0; i < f.size(); ++i) f[i] = float(inv_freq[i] / factor);
  return f;
}

AttentionWgmma parse_attention_wgmma(const std::string& spec, bool available, const std::string& what) {
  if (spec.empty() || spec == "auto") return available ? AttentionWgmma{true, true, true} : AttentionWgmma{};
  if (spec == "none") return AttentionWgmma{};
  AttentionWgmma w;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string pass = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (pass == "fwd")
      w.forward = true;
    else if (pass == "dq")
      w.dq = true;
    else if (pass == "dkdv")
      w.dkdv = true;
    else
      fail(what, ": `", spec, "` is not auto, none or a comma-separated list of fwd, dq, dkdv (bad item `", pass, "`)");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  LL_CHECK(available, what, ": `", spec, "` asks for the wgmma kernels, which need a compute capability 9.0 device and "
           "a build with CUDA_ARCH containing 90 (sm_90a machine code)");
  return w;
}

std::string to_string(const AttentionWgmma& w) {
  std::string s;
  for (const auto& [on, name] : {std::pair{w.forward, "fwd"}, std::pair{w.dq, "dq"}, std::pair{w.dkdv, "dkdv"}})
    if (on) s += (s.empty() ? "" : ",") + std::string(name);
  return s.empty() ? "none" : s;
}

}  // namespace ll::cuda_plan
