// A host stand-in for the CUDA backend's precision policy: bf16 weights and activations, f32 statistics and
// gradients, and AdamW on an f32 master whose bf16 rounding becomes the working weight (what cuda/optimizer.cu
// does). It implements only what the optimizer and the ZeRO storage use (memory, copies, convert, zero, scale,
// sum_squares, adamw_step), so the mixed-precision ZeRO-2/3 code — master shards, bf16 gathers, the weight-arena
// mapping, gradient seeding — runs on CPU ranks. Model ops throw.
#pragma once
#include <cstdlib>
#include <cstring>

#include "core/backend.h"
#include "cpu/kernels.h"
#include "core/tensor_host.h"
#include "util/error.h"

namespace ll::test {

class MixedHostBackend final : public Backend {
 public:
  std::string name() const override { return "mixed-host"; }
  Device device() const override { return Device::CPU; }
  DTypePolicy dtypes() const override { return {DType::BF16, DType::BF16, DType::F32, DType::F32}; }

  void* allocate(size_t bytes) override {
    const size_t rounded = (bytes + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
    LL_CHECK(p != nullptr, "mixed-host: out of memory");
    return p;
  }
  void release(void* ptr) override { std::free(ptr); }
  void copy_from_host(Tensor dst, const void* src) override {
    if (dst.nbytes()) std::memcpy(dst.data, src, dst.nbytes());
  }
  void copy_to_host(void* dst, const Tensor& src) override {
    if (src.nbytes()) std::memcpy(dst, src.data, src.nbytes());
  }
  void copy(Tensor dst, const Tensor& src) override {
    LL_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(), "mixed-host copy: ", dtype_name(dst.dtype), "[",
             dst.numel(), "] from ", dtype_name(src.dtype), "[", src.numel(), "]");
    if (dst.nbytes() && dst.data != src.data) std::memmove(dst.data, src.data, dst.nbytes());
  }
  void convert(Tensor dst, const Tensor& src) override {
    LL_CHECK(dst.numel() == src.numel(), "mixed-host convert: element counts differ");
    convert_values(src.data, src.dtype, dst.data, dst.dtype, size_t(src.numel()));
  }
  void zero(Tensor t) override {
    if (t.nbytes()) std::memset(t.data, 0, t.nbytes());
  }
  double sum_squares(const Tensor& x) override {
    f32(x, "sum_squares");
    return cpu::sum_squares(x.ptr<float>(), x.numel());
  }
  void scale(Tensor x, double s) override {
    f32(x, "scale");
    cpu::scale(x.ptr<float>(), x.numel(), s);
  }
  void adamw_step(Tensor param, Tensor master, const Tensor& grad, Tensor m, Tensor v, const AdamWStep& st) override {
    LL_CHECK(param.dtype == DType::BF16 && !master.empty(), "mixed-host adamw_step: needs a bf16 param and its master");
    for (const Tensor* t : {static_cast<const Tensor*>(&master), &grad, static_cast<const Tensor*>(&m),
                            static_cast<const Tensor*>(&v)})
      f32(*t, "adamw_step");
    LL_CHECK(master.numel() == param.numel() && grad.numel() == param.numel() && m.numel() == param.numel() &&
                 v.numel() == param.numel(),
             "mixed-host adamw_step: sizes differ");
    cpu::adamw_step(master.ptr<float>(), grad.ptr<float>(), m.ptr<float>(), v.ptr<float>(), param.numel(), st.lr,
                    st.beta1, st.beta2, st.eps, st.weight_decay, st.step);
    convert(param, master);
  }

  void embedding_forward(Tensor, const Tensor&, const Tensor&) override { none(); }
  void embedding_backward(Tensor, const Tensor&, const Tensor&) override { none(); }
  void rmsnorm_forward(Tensor, Tensor, const Tensor&, const Tensor&, double) override { none(); }
  void rmsnorm_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool) override {
    none();
  }
  void layernorm_forward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, double) override {
    none();
  }
  void layernorm_backward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, bool) override {
    none();
  }
  void add_bias(Tensor, const Tensor&) override { none(); }
  void bias_backward(Tensor, const Tensor&) override { none(); }
  void gelu_forward(Tensor, const Tensor&) override { none(); }
  void gelu_backward(Tensor, const Tensor&, const Tensor&) override { none(); }
  void linear_forward(Tensor, const Tensor&, const Tensor&, bool) override { none(); }
  void linear_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, bool) override { none(); }
  void lora_forward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                    double) override {
    none();
  }
  void lora_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&,
                     const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, bool) override {
    none();
  }
  void dropout(Tensor, const Tensor&, double, uint64_t) override { none(); }
  void rope_forward(Tensor, const Tensor&, const RopeParams&) override { none(); }
  void rope_backward(Tensor, const Tensor&, const RopeParams&) override { none(); }
  void attention_forward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const AttentionMask&) override {
    none();
  }
  void attention_backward(Tensor, Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const Tensor&, const Tensor&, const AttentionMask&) override {
    none();
  }
  void split_qkv(Tensor, Tensor, Tensor, const Tensor&) override { none(); }
  void merge_qkv(Tensor, const Tensor&, const Tensor&, const Tensor&) override { none(); }
  void swiglu_forward(Tensor, const Tensor&, const Tensor&) override { none(); }
  void swiglu_backward(Tensor, Tensor, const Tensor&, const Tensor&, const Tensor&) override { none(); }
  void add(Tensor, const Tensor&, const Tensor&) override { none(); }  // bf16-only on CUDA: ZeRO-3 must not need it
  void cross_entropy(Tensor, Tensor, const Tensor&, double, bool) override { none(); }
  void argmax_rows(Tensor, const Tensor&) override { none(); }

 private:
  static void f32(const Tensor& t, const char* op) {
    LL_CHECK(t.dtype == DType::F32, "mixed-host ", op, ": expected f32, got ", dtype_name(t.dtype));
  }
  [[noreturn]] static void none() { fail("mixed-host: model ops are not implemented (optimizer tests only)"); }
};

}  // namespace ll::test
