#include "cuda/device_info.h"

#include <cstdio>

#include <cuda_runtime.h>

#include <string>

namespace ll {

namespace {

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

// Why cudaGetDeviceCount failed, in the user's terms: the runtime's "CUDA driver version is insufficient for CUDA
// runtime version" is also what a machine with no driver (hence no visible GPU) gets.
std::string unavailable_reason(cudaError_t status, int driver_version, int runtime_version) {
  const std::string detail = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
  if (status == cudaErrorInsufficientDriver && driver_version == 0)  // the runtime's sentence would mislead here
    return "no CUDA GPU is visible: no NVIDIA driver is loaded on this machine (cudaGetDeviceCount: " +
           std::string(cudaGetErrorName(status)) + ")";
  if (status == cudaErrorInsufficientDriver)
    return "the NVIDIA driver supports CUDA " + version_text(driver_version) + " but this build's runtime is CUDA " +
           version_text(runtime_version) + "; update the driver (" + detail + ")";
  if (status == cudaErrorNoDevice)
    return "no CUDA GPU is visible: the driver reports none (check CUDA_VISIBLE_DEVICES) (" + detail + ")";
  return "no CUDA GPU is usable (" + detail + ")";
}

}  // namespace

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
    probe.error = unavailable_reason(status, probe.driver_version, probe.runtime_version);
    cudaGetLastError();  // clear the sticky error so later probes start clean
    return probe;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    char pci[32];
    std::snprintf(pci, sizeof pci, "%04x:%02x:%02x", prop.pciDomainID, prop.pciBusID, prop.pciDeviceID);
    probe.devices.push_back(
        {i, prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem, pci});
  }
  if (probe.devices.empty()) probe.error = "no CUDA GPU is visible: the CUDA runtime reports no devices";
  return probe;
}

}  // namespace ll
