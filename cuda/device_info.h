// CUDA device discovery. Declared in plain C++ so host code can call it without nvcc; implemented in
// cuda/device_info.cu when the build has CUDA, and in src/core/backend_registry.cpp otherwise.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace ll {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0;  // bytes
  std::string pci_id;       // domain:bus:device, the same for every process that sees this GPU (--comm auto)
};

struct CudaProbe {
  bool compiled = false;     // this binary was built with CUDA
  std::vector<int> built_archs;  // SM versions the kernels were compiled for, e.g. {80, 90}
  int driver_version = 0;    // e.g. 12040; 0 when no driver is installed
  int runtime_version = 0;
  std::vector<CudaDeviceInfo> devices;
  std::string error;         // why no device is usable, when devices is empty
};

// Never throws: a machine without a GPU or driver gives an empty device list and a reason.
CudaProbe probe_cuda();

// Whether kernels compiled (as SASS only, no PTX) for `built_archs` run on a device of compute capability
// major.minor: a cubin for sm_XY runs on devices XY' with the same major version and minor >= Y; and the
// backend needs sm_80+ (bf16 tensor cores). `why` receives the reason when not.
inline bool cuda_device_supported(int major, int minor, const std::vector<int>& built_archs, std::string* why) {
  if (major < 8) {
    if (why) *why = "compute capability " + std::to_string(major) + "." + std::to_string(minor) +
                    " is below 8.0 (bf16 tensor cores are needed)";
    return false;
  }
  std::string list;
  for (int a : built_archs) {
    if (a / 10 == major && a % 10 <= minor) return true;
    list += (list.empty() ? "sm_" : ", sm_") + std::to_string(a);
  }
  if (why) *why = "no kernels for compute capability " + std::to_string(major) + "." + std::to_string(minor) +
                  " in this build (compiled for " + (list.empty() ? std::string("nothing") : list) +
                  "); rebuild with CUDA_ARCH=\"" + std::to_string(major) + std::to_string(minor) + "\"";
  return false;
}

}  // namespace ll
