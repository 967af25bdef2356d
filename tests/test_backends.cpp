// The backend registry and CUDA device discovery. GPU checks skip, with the reason, on machines without one.
#include <gtest/gtest.h>

#include "core/backend.h"
#include "cuda/device_info.h"
#include "train/demo.h"
#include "util/error.h"

namespace ll {
namespace {

TEST(BackendRegistry, ListsEveryBackendWithAReason) {
  const std::vector<BackendInfo> list = list_backends();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].name, "cpu");
  EXPECT_TRUE(list[0].available);
  EXPECT_EQ(list[1].name, "cpu-f64");
  EXPECT_EQ(list[2].name, "cuda");
  EXPECT_FALSE(list[2].description.empty());
}

TEST(BackendRegistry, CreatesCpuBackendsAndRefusesOthersClearly) {
  EXPECT_EQ(create_backend("cpu")->dtypes().act, DType::F32);
  EXPECT_EQ(create_backend("cpu-f64")->dtypes().act, DType::F64);
  try {
    create_backend("tpu");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown backend `tpu`"), std::string::npos) << e.what();
  }
  // "cuda" is created exactly when the registry lists it as available; otherwise the error names the reason.
  bool cuda_available = false;
  std::string cuda_reason;
  for (const BackendInfo& info : list_backends())
    if (info.name == "cuda") cuda_available = info.available, cuda_reason = info.description;
  if (cuda_available) {
    const std::unique_ptr<Backend> cuda = create_backend("cuda");
    EXPECT_EQ(cuda->name(), "cuda");
    EXPECT_EQ(cuda->device(), Device::CUDA);
    EXPECT_EQ(cuda->dtypes().weight, DType::BF16);
    EXPECT_EQ(cuda->dtypes().grad, DType::F32);
  } else {
    try {
      create_backend("cuda");
      FAIL() << "the registry lists cuda as unavailable, so creating it must fail";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("backend `cuda` cannot be created: " + cuda_reason), std::string::npos)
          << e.what();
    }
  }
}

// Without a GPU the CUDA runtime's own words ("CUDA driver version is insufficient for CUDA runtime version") point
// at the driver version; what the user needs to hear is that no GPU is visible (or that the build has no CUDA).
TEST(BackendRegistry, CudaWithoutAGpuSaysNoGpuIsVisible) {
  const CudaProbe probe = probe_cuda();
  if (!probe.devices.empty()) GTEST_SKIP() << "a CUDA device is visible here; the message for its absence is not shown";
  std::string message = "(no error)";
  try {
    create_backend("cuda");
  } catch (const Error& e) {
    message = e.what();
  }
  const std::string expected = probe.compiled ? "no CUDA GPU is visible" : "this build has no CUDA";
  EXPECT_NE(message.find("backend `cuda` cannot be created: " + expected), std::string::npos) << message;
  EXPECT_NE(message.find("--device cpu"), std::string::npos) << message;
  if (probe.compiled && probe.driver_version == 0) {  // no driver at all: nothing about its version
    EXPECT_EQ(message.find("insufficient"), std::string::npos) << message;
  }
  for (const BackendInfo& info : list_backends()) {
    if (info.name == "cuda") {
      EXPECT_EQ(info.description.rfind(expected, 0), 0u) << info.description;
    }
  }
}

TEST(BackendRegistry, DefaultDeviceIsTheGpuExactlyWhenOneIsUsable) {
  bool cuda_available = false;
  for (const BackendInfo& b : list_backends()) cuda_available |= b.name == "cuda" && b.available;
  EXPECT_EQ(default_device(), cuda_available ? "cuda" : "cpu");
  EXPECT_NO_THROW(create_backend(default_device()));
}

TEST(Demo, RejectsAnUnknownDeviceBeforeDoingAnything) {
  DemoOptions d;
  d.device = "tpu";
  d.output_dir = ::testing::TempDir() + "/ll_demo_bad_device";
  try {
    run_demo(d);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must be cpu or cuda, got `tpu`"), std::string::npos) << e.what();
  }
}

TEST(CudaDevices, ProbeNeverThrowsAndExplainsAnEmptyList) {
  const CudaProbe probe = probe_cuda();
  if (probe.devices.empty()) {
    EXPECT_FALSE(probe.error.empty());
  }
#ifdef LONGLORA_WITH_CUDA
  EXPECT_TRUE(probe.compiled);
#else
  EXPECT_FALSE(probe.compiled);
#endif
}

TEST(CudaDevices, ReportsRealDeviceProperties) {
  const CudaProbe probe = probe_cuda();
  if (probe.devices.empty()) GTEST_SKIP() << "no CUDA device on this machine: " << probe.error;
  for (const CudaDeviceInfo& d : probe.devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.compute_major, 7) << d.name;
    EXPECT_GT(d.multiprocessors, 0) << d.name;
    EXPECT_GT(d.total_memory, size_t(1) << 30) << d.name;
  }
  EXPECT_GT(probe.driver_version, 0);
  EXPECT_GT(probe.runtime_version, 0);
}

}  // namespace
}  // namespace ll
