// The backend registry: which backends this build has, whether each can run here, and creation by name.
#include <cstdlib>
#include <sstream>

#include "core/backend.h"
#include "cpu/cpu_backend.h"
#include "cuda/device_info.h"
#include "util/error.h"
#ifdef LONGLORA_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace ll {

// The seam's default host staging memory: ordinary aligned heap memory (device backends override it).
void* Backend::allocate_host(size_t bytes) {
  const size_t rounded = (bytes + 255) / 256 * 256;
  void* p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
  if (!p) fail("out of host memory: could not allocate ", bytes, " bytes of host staging memory");
  return p;
}
void Backend::release_host(void* ptr) { std::free(ptr); }

#ifndef LONGLORA_WITH_CUDA
CudaProbe probe_cuda() {
  CudaProbe probe;
  probe.error = "this build has no CUDA (nvcc was not found when it was compiled; rebuild with nvcc on PATH)";
  return probe;
}
#endif

namespace {

// The first device this build's kernels run on, or -1 with the reason in *why.
int usable_cuda_device(const CudaProbe& probe, std::string* why) {
  if (!probe.compiled || probe.devices.empty()) {
    *why = probe.error;
    return -1;
  }
  std::string reasons;
  for (const auto& d : probe.devices) {
    std::string r;
    if (cuda_device_supported(d.compute_major, d.compute_minor, probe.built_archs, &r)) return d.index;
    reasons += (reasons.empty() ? "" : "; ") + d.name + ": " + r;
  }
  *why = reasons;
  return -1;
}

std::string describe_cuda(const CudaProbe& probe) {
  std::string why;
  if (usable_cuda_device(probe, &why) < 0) return why;
  std::ostringstream os;
  os << "bf16 kernels (tensor-core flash attention, cuBLASLt) on ";
  for (const auto& d : probe.devices)
    os << (d.index ? "; " : "") << "device " << d.index << ": " << d.name << " (sm_" << d.compute_major
       << d.compute_minor << ", " << d.multiprocessors << " SMs, " << (d.total_memory >> 20) << " MiB)";
  return os.str();
}

}  // namespace

std::vector<BackendInfo> list_backends() {
  const CudaProbe probe = probe_cuda();
  std::string why;
  const bool cuda_ok = usable_cuda_device(probe, &why) >= 0;
  return {
      {"cpu", true, "fp32 reference backend (OpenBLAS matrix products, OpenMP loops)"},
      {"cpu-f64", true, "fp64 reference backend used by gradient checks"},
      {"cuda", cuda_ok, describe_cuda(probe)},
  };
}

std::string default_device() {
  for (const BackendInfo& b : list_backends())
    if (b.name == "cuda" && b.available) return "cuda";
  return "cpu";
}

std::unique_ptr<Backend> create_backend(const std::string& name, int device_index) {
  LL_CHECK(device_index < 0 || name == "cuda", "backend `", name, "` has no device index (got ", device_index, ")");
  if (name == "cpu") return std::make_unique<CpuBackend<float>>();
  if (name == "cpu-f64") return std::make_unique<CpuBackend<double>>();
#ifdef LONGLORA_WITH_CUDA
  if (name == "cuda") {
    const CudaProbe probe = probe_cuda();
    std::string why;
    if (device_index >= 0) {
      const CudaDeviceInfo* found = nullptr;
      for (const CudaDeviceInfo& d : probe.devices)
        if (d.index == device_index) found = &d;
      LL_CHECK(found != nullptr, "backend `cuda`: device ", device_index, " does not exist (",
               probe.devices.size(), " visible", probe.error.empty() ? "" : ": " + probe.error, ")");
      const CudaDeviceInfo& d = *found;
      LL_CHECK(cuda_device_supported(d.compute_major, d.compute_minor, probe.built_archs, &why), "backend `cuda`: ",
               "device ", device_index, " (", d.name, ") cannot run this build: ", why);
      return std::make_unique<CudaBackend>(device_index);
    }
    const int device = usable_cuda_device(probe, &why);
    if (device >= 0) return std::make_unique<CudaBackend>(device);
  }
#endif
  for (const BackendInfo& info : list_backends())
    if (info.name == name)
      fail("backend `", name, "` cannot be created: ", info.description, "; run on the CPU (--device cpu)");
  fail("unknown backend `", name, "`; known backends: cpu, cpu-f64, cuda");
}

}  // namespace ll
