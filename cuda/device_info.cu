#include "cuda/device_info.h"

#include <cuda_runtime.h>

namespace ll {

CudaProbe probe_cuda() {
  CudaProbe probe;
  probe.compiled = true;
#ifdef __CUDA_ARCH_LIST__
  for (int a : {__CUDA_ARCH_LIST__}) probe.built_archs.push_back(a / 10);  // 800 -> 80
#endif
  cudaDriverGetVersion(&probe.driver_version);
  cudaRuntimeGetVersion(&probe.runtime_version);
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    probe.error = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    cudaGetLastError();  // clear the sticky error so later probes start clean
    return probe;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    probe.devices.push_back({i, prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem});
  }
  if (probe.devices.empty()) probe.error = "the CUDA runtime reports no devices";
  return probe;
}

}  // namespace ll
