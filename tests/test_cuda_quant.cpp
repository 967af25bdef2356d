// 4-bit weights on the CUDA backend against the CPU reference: linear forward (the dequantize + cuBLASLt path, and
// the fused matrix-vector kernel at one row), its dx backward, and LoRA on a 4-bit base. Skips, printing the reason,
// without CUDA or a usable GPU. The weight is the same 4-bit bytes on both; the GPU rounds the dequantized weight
// and the outputs to bf16, so the comparison is relative (‖gpu − cpu‖ / ‖cpu‖ < 1e-2).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/backend.h"
#include "core/quantize.h"
#include "core/tensor_host.h"
#include "cpu/cpu_backend.h"
#include "test_util.h"

#ifdef LONGLORA_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace ll {
namespace {

#ifndef LONGLORA_WITH_CUDA
TEST(CudaQuant, SkippedWithoutCuda) { GTEST_SKIP() << "this build has no CUDA support (nvcc was not found)"; }
#else

double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / den);
}

class CudaQuant : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    for (const BackendInfo& info : list_backends())
      if (info.name == "cuda" && !info.available) GTEST_SKIP() << "no usable CUDA device: " << info.description;
    gpu_ = std::make_unique<CudaBackend>(0);
  }
  // A device tensor of `dt`, freed with the test.
  Tensor dev(DType dt, std::vector<int64_t> dims) {
    Tensor t(nullptr, dt, Device::CUDA, dims);
    t.data = gpu_->allocate(t.nbytes());
    owned_.push_back(t.data);
    return t;
  }
  void TearDown() override {
    for (void* p : owned_) gpu_->release(p);
  }
  // Values uploaded to the GPU (bf16) and the same rounded values on the host as a CPU tensor.
  std::vector<float> put(const Tensor& t, Rng& rng) {
    upload_f64(*gpu_, t, test::random_vector(rng, t.numel()));
    const std::vector<double> back = download_f64(*gpu_, t);
    return std::vector<float>(back.begin(), back.end());
  }
  std::unique_ptr<CudaBackend> gpu_;
  CpuBackend<float> cpu_;
  std::vector<void*> owned_;
};

TEST_P(CudaQuant, LinearForwardDxAndLoraMatchTheCpu) {
  const DType format = GetParam();
  const int64_t K = 200, N = 96, R = 4;  // 19200 elements: blocks straddle rows (200 is not a multiple of 64)
  Rng rng(7);
  const std::vector<double> wd = test::random_vector(rng, N * K);
  const std::vector<float> wf(wd.begin(), wd.end());
  std::vector<uint8_t> packed(storage_bytes(format, N * K));
  quantize_4bit(format, wf.data(), N * K, packed.data());
  const Tensor w_gpu = dev(format, {N, K});
  gpu_->copy_from_host(w_gpu, packed.data());
  const Tensor w_cpu(packed.data(), format, Device::CPU, {N, K});

  for (int64_t T : {1, 5}) {  // 1: the fused matrix-vector kernel; 5: dequantize + cuBLASLt
    SCOPED_TRACE("rows " + std::to_string(T));
    const Tensor x = dev(DType::BF16, {T, K}), y = dev(DType::BF16, {T, N});
    std::vector<float> xh = put(x, rng), yh(size_t(T * N));
    gpu_->linear_forward(y, x, w_gpu, false);
    cpu_.linear_forward(Tensor(yh.data(), DType::F32, Device::CPU, {T, N}),
                        Tensor(xh.data(), DType::F32, Device::CPU, {T, K}), w_cpu, false);
    EXPECT_LT(rel_diff(download_f64(*gpu_, y), std::vector<double>(yh.begin(), yh.end())), 1e-2);

    const Tensor dy = dev(DType::BF16, {T, N}), dx = dev(DType::BF16, {T, K});
    std::vector<float> dyh = put(dy, rng), dxh(size_t(T * K));
    gpu_->linear_backward(dx, Tensor(), dy, x, w_gpu, false);
    cpu_.linear_backward(Tensor(dxh.data(), DType::F32, Device::CPU, {T, K}), Tensor(),
                         Tensor(dyh.data(), DType::F32, Device::CPU, {T, N}),
                         Tensor(xh.data(), DType::F32, Device::CPU, {T, K}), w_cpu, false);
    EXPECT_LT(rel_diff(download_f64(*gpu_, dx), std::vector<double>(dxh.begin(), dxh.end())), 1e-2);

    const Tensor a = dev(DType::BF16, {R, K}), b = dev(DType::BF16, {N, R}), xa = dev(DType::BF16, {T, R});
    std::vector<float> ah = put(a, rng), bh = put(b, rng), xah(size_t(T * R));
    gpu_->lora_forward(y, xa, x, x, w_gpu, a, b, 2.0);
    const Tensor xc(xh.data(), DType::F32, Device::CPU, {T, K});
    cpu_.lora_forward(Tensor(yh.data(), DType::F32, Device::CPU, {T, N}),
                      Tensor(xah.data(), DType::F32, Device::CPU, {T, R}), xc, xc, w_cpu,
                      Tensor(ah.data(), DType::F32, Device::CPU, {R, K}),
                      Tensor(bh.data(), DType::F32, Device::CPU, {N, R}), 2.0);
    EXPECT_LT(rel_diff(download_f64(*gpu_, y), std::vector<double>(yh.begin(), yh.end())), 1e-2);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaQuant, ::testing::Values(DType::NF4, DType::NF4DQ, DType::FP4, DType::FP4DQ));

#endif

}  // namespace
}  // namespace ll
