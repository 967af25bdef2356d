// CUDA device discovery. Declared in plain C++ so host code can call it without nvcc; implemented in
// cuda/device_info.cu when the build has CUDA, and in src/backend_registry.cpp otherwise.
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
};

struct CudaProbe {
  bool compiled = false;     // this binary was built with CUDA
  int driver_version = 0;    // e.g. 12040; 0 when no driver is installed
  int runtime_version = 0;
  std::vector<CudaDeviceInfo> devices;
  std::string error;         // why no device is usable, when devices is empty
};

// Never throws: a machine without a GPU or driver gives an empty device list and a reason.
CudaProbe probe_cuda();

}  // namespace ll
