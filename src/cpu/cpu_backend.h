// The CPU reference backend: fp32 (name "cpu"), or fp64 ("cpu-f64", used by gradient checks).
#pragma once
#include <vector>

#include "core/backend.h"

namespace ll {

template <typename T>
class CpuBackend : public Backend {
 public:
  std::string name() const override;
  Device device() const override { return Device::CPU; }
  DTypePolicy dtypes() const override;

  void* allocate(size_t bytes) override;
  void release(void* ptr) override;
  void copy_from_host(Tensor dst, const void* host_src) override;
  void copy_to_host(void* host_dst, const Tensor& src) override;
  void copy(Tensor dst, const Tensor& src) override;
  void convert(Tensor dst, const Tensor& src) override;
  void zero(Tensor t) override;

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
  // A linear layer's weight as T values: its own data when dense; a 4-bit weight (core/dtype.h) dequantized into
  // `dequantized_`, reused by every call (valid until the next call that dequantizes).
  const T* dense_weight(const Tensor& w);
  std::vector<T> dequantized_;
  // RoPE's cos/sin table for the last positions and parameters (rope_table), reused while they repeat: a training
  // step rotates q and k of every layer, forward and backward, at the same positions. Keyed on the parameters
  // themselves, so that a hit computes no frequencies.
  struct RopeCache {
    bool filled = false;
    std::vector<int32_t> positions;
    double theta = 0, factor = 0;
    int64_t rotary_dims = 0;  // resolved (never 0)
    RopeLlama3 llama3;
    std::vector<T> cos_t, sin_t;
  };
  const RopeCache& rope_cache(const Tensor& positions, const RopeParams& p, int64_t rows, int64_t rotary_dims);
  RopeCache rope_cache_;
};

extern template class CpuBackend<float>;
extern template class CpuBackend<double>;

}  // namespace ll
