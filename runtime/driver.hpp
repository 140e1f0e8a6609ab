// The CUDA driver, opened lazily with dlopen("libcuda.so.1"): the library never links libcuda, so every
// binary starts on machines without a GPU and only GPU calls fail, saying what is missing.
#pragma once

#include <cuda.h>

#include <string>
#include <vector>

#include "common/dynlib.hpp"

namespace dilatron::driver {

// The driver calls the library makes. cuda.h maps some names to versioned symbols (cuDeviceTotalMem ->
// cuDeviceTotalMem_v2); the table stores and looks up the mapped name, so types and symbols agree.
// cuLibrary* and cuKernel* (context-independent loading) need a CUDA 12.0 driver or newer;
// cuMemAllocAsync/cuMemFreeAsync (stream-ordered allocation) need 11.2.
#define DILATRON_DRIVER_CALLS(X) \
  X(cuInit)                      \
  X(cuDriverGetVersion)          \
  X(cuDeviceGetCount)            \
  X(cuDeviceGet)                 \
  X(cuDeviceGetName)             \
  X(cuDeviceGetAttribute)        \
  X(cuDeviceTotalMem)            \
  X(cuGetErrorName)              \
  X(cuGetErrorString)            \
  X(cuCtxGetCurrent)             \
  X(cuCtxSetCurrent)             \
  X(cuCtxSynchronize)            \
  X(cuDevicePrimaryCtxRetain)    \
  X(cuLibraryLoadData)           \
  X(cuLibraryUnload)             \
  X(cuLibraryGetKernel)          \
  X(cuKernelSetAttribute)        \
  X(cuLaunchKernel)              \
  X(cuMemAlloc)                  \
  X(cuMemFree)                   \
  X(cuMemAllocAsync)             \
  X(cuMemFreeAsync)              \
  X(cuMemcpyHtoD)                \
  X(cuMemcpyDtoH)                \
  X(cuMemsetD8Async)             \
  X(cuMemcpyDtoD)                \
  X(cuMemGetInfo)                \
  X(cuCtxGetDevice)              \
  X(cuStreamSynchronize)         \
  X(cuEventCreate)               \
  X(cuEventDestroy)              \
  X(cuEventRecord)               \
  X(cuEventSynchronize)          \
  X(cuEventElapsedTime)          \
  X(cuEventQuery)                \
  X(cuStreamCreate)              \
  X(cuStreamDestroy)             \
  X(cuStreamQuery)               \
  X(cuStreamWaitEvent)           \
  X(cuMemcpyDtoDAsync)           \
  X(cuMemcpy2DAsync)             \
  X(cuCtxPushCurrent)            \
  X(cuCtxPopCurrent)             \
  X(cuPointerGetAttribute)      \
  X(cuMemsetD32Async)

struct Api {
  DILATRON_DRIVER_CALLS(DILATRON_TABLE_MEMBER)
};

// The loaded and initialized driver (cuInit done). Throws dilatron::Error naming what is missing.
const Api& api();

// Throws dilatron::Error(call, code, "NAME: description") when result is not CUDA_SUCCESS.
void check(CUresult result, const char* call);

struct Device {
  int ordinal;
  std::string name;
  int cc_major, cc_minor;
  std::size_t memory_bytes;
};

// What `dilatron info` reports. Never throws: a missing driver or GPU is described in `problem`.
struct Status {
  bool loaded = false;
  std::string library;  // the path that opened
  int version = 0;      // e.g. 13000 for CUDA 13.0
  std::vector<Device> devices;
  std::string problem;
};
Status probe() noexcept;

// The NVRTC target for a compute capability: sm_90 becomes sm_90a (wgmma and TMA exist only there).
std::string arch_name(int cc_major, int cc_minor);

// The caller's current context, or device 0's primary context (retained and made current) when there
// is none, so callers that never touched the driver get a working default. Throws dilatron::Error
// without a driver or GPU.
CUcontext current_context();

// The target of the device behind the current context.
std::string current_arch();

// The name of the device behind the current context, e.g. "NVIDIA H100 80GB HBM3".
std::string current_device_name();

// Throws dilatron::Error naming `what` unless `pointer` is memory a kernel in the current context can
// read: device memory of its device (or pinned host memory, mapped into every context).
void require_device_memory(const void* pointer, const char* what);

}  // namespace dilatron::driver

// Checks a driver call made through the table: DILATRON_CU(cuDeviceGetCount(&n)).
#define DILATRON_CU(call) ::dilatron::driver::check(::dilatron::driver::api().call, #call)
