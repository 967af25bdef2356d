// LL_HOST_DEVICE: a function compiled for the host, and also for the device when nvcc compiles the including file
// (the mask rules and the 4-bit code tables are shared by the CPU reference and the CUDA kernels).
#pragma once

#if defined(__CUDACC__)
#define LL_HOST_DEVICE __host__ __device__
#else
#define LL_HOST_DEVICE
#endif
