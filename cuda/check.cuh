// Checked CUDA runtime calls: a failure throws ll::Error naming the statement, the file:line and the
// CUDA error string.
#pragma once
#include <cuda_runtime.h>

#include "util/error.h"

#define LL_CUDA_CHECK(stmt)                                                                           \
  do {                                                                                                \
    const cudaError_t ll_cuda_status_ = (stmt);                                                       \
    if (ll_cuda_status_ != cudaSuccess)                                                               \
      ::ll::fail("CUDA call `", #stmt, "` failed at ", __FILE__, ":", __LINE__, ": ",                 \
                 cudaGetErrorName(ll_cuda_status_), " (", cudaGetErrorString(ll_cuda_status_), ")");   \
  } while (0)
