// The backend registry: which backends this build has, whether each can run here, and creation by name.
#include <sstream>

#include "backend.h"
#include "cpu/cpu_backend.h"
#include "cuda/device_info.h"

namespace ll {

#ifndef LONGLORA_WITH_CUDA
CudaProbe probe_cuda() {
  CudaProbe probe;
  probe.error = "this build has no CUDA support (nvcc was not found when it was compiled)";
  return probe;
}
#endif

namespace {

std::string describe_cuda(const CudaProbe& probe) {
  if (!probe.compiled || probe.devices.empty()) return "unavailable: " + probe.error;
  std::ostringstream os;
  for (const auto& d : probe.devices)
    os << (d.index ? "; " : "") << "device " << d.index << ": " << d.name << " (sm_" << d.compute_major
       << d.compute_minor << ", " << d.multiprocessors << " SMs, " << (d.total_memory >> 20) << " MiB)";
  return os.str();
}

}  // namespace

std::vector<BackendInfo> list_backends() {
  const CudaProbe probe = probe_cuda();
  // The CUDA op kernels arrive with the CUDA backend issue; until then the entry reports devices only.
  return {
      {"cpu", true, "fp32 reference backend (OpenBLAS matrix products, OpenMP loops)"},
      {"cpu-f64", true, "fp64 reference backend used by gradient checks"},
      {"cuda", false,
       describe_cuda(probe) + " — the CUDA op kernels are not implemented in this build yet (device discovery only)"},
  };
}

std::unique_ptr<Backend> create_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend<float>>();
  if (name == "cpu-f64") return std::make_unique<CpuBackend<double>>();
  for (const BackendInfo& info : list_backends())
    if (info.name == name) fail("backend `", name, "` cannot be created: ", info.description);
  fail("unknown backend `", name, "`; known backends: cpu, cpu-f64, cuda");
}

}  // namespace ll
