// The CUDA driver calls the runtime makes (runtime/driver.hpp), answered by the emulated device: one sm_90
// device with 227 KiB of shared memory per block, host memory as device memory, and every launch run to
// completion on the CPU when it is made (so streams and events are in order by construction, and event
// times measure the emulator, never a GPU). The runtime binds these instead of libcuda's when
// DILATRON_DEVICE=emulator. Same prototypes as cuda.h, whose macros give some the _v2 names.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dilatron::emulator::cuda {

CUresult cuInit(unsigned int flags);
CUresult cuDriverGetVersion(int* version);
CUresult cuDeviceGetCount(int* count);
CUresult cuDeviceGet(CUdevice* device, int ordinal);
CUresult cuDeviceGetName(char* name, int length, CUdevice device);
CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice device);
CUresult cuDeviceTotalMem(size_t* bytes, CUdevice device);
CUresult cuGetErrorName(CUresult error, const char** text);
CUresult cuGetErrorString(CUresult error, const char** text);
CUresult cuCtxGetCurrent(CUcontext* context);
CUresult cuCtxSetCurrent(CUcontext context);
CUresult cuCtxSynchronize(void);
CUresult cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice device);
CUresult cuLibraryLoadData(CUlibrary* library, const void* code, CUjit_option* jit_options, void** jit_values,
                           unsigned int jit_count, CUlibraryOption* library_options, void** library_values,
                           unsigned int library_count);
CUresult cuLibraryUnload(CUlibrary library);
CUresult cuLibraryGetKernel(CUkernel* kernel, CUlibrary library, const char* name);
CUresult cuKernelSetAttribute(CUfunction_attribute attribute, int value, CUkernel kernel, CUdevice device);
CUresult cuLaunchKernel(CUfunction f, unsigned int grid_x, unsigned int grid_y, unsigned int grid_z, unsigned int block_x,
                        unsigned int block_y, unsigned int block_z, unsigned int shared_bytes, CUstream stream,
                        void** params, void** extra);
CUresult cuMemAlloc(CUdeviceptr* pointer, size_t bytes);
CUresult cuMemFree(CUdeviceptr pointer);
CUresult cuMemAllocAsync(CUdeviceptr* pointer, size_t bytes, CUstream stream);
CUresult cuMemFreeAsync(CUdeviceptr pointer, CUstream stream);
CUresult cuMemcpyHtoD(CUdeviceptr to, const void* from, size_t bytes);
CUresult cuMemcpyDtoH(void* to, CUdeviceptr from, size_t bytes);
CUresult cuMemsetD8Async(CUdeviceptr to, unsigned char value, size_t bytes, CUstream stream);
CUresult cuMemcpyDtoD(CUdeviceptr to, CUdeviceptr from, size_t bytes);
CUresult cuMemGetInfo(size_t* free, size_t* total);
CUresult cuCtxGetDevice(CUdevice* device);
CUresult cuStreamSynchronize(CUstream stream);
CUresult cuEventCreate(CUevent* event, unsigned int flags);
CUresult cuEventDestroy(CUevent event);
CUresult cuEventRecord(CUevent event, CUstream stream);
CUresult cuEventSynchronize(CUevent event);
CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end);
CUresult cuEventQuery(CUevent event);
CUresult cuStreamCreate(CUstream* stream, unsigned int flags);
CUresult cuStreamDestroy(CUstream stream);
CUresult cuStreamQuery(CUstream stream);
CUresult cuStreamWaitEvent(CUstream stream, CUevent event, unsigned int flags);
CUresult cuMemcpyDtoDAsync(CUdeviceptr to, CUdeviceptr from, size_t bytes, CUstream stream);
// Device to device from the first byte of each pitch only (what the library asks of it).
CUresult cuMemcpy2DAsync(const CUDA_MEMCPY2D* copy, CUstream stream);
// Memory type (device, for a byte inside a live allocation) and device ordinal (0); any other pointer
// is CUDA_ERROR_INVALID_VALUE, as the driver answers for unregistered host memory.
CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr pointer);
CUresult cuMemsetD32Async(CUdeviceptr to, unsigned int value, size_t count, CUstream stream);
CUresult cuCtxPushCurrent(CUcontext context);
CUresult cuCtxPopCurrent(CUcontext* context);

// Device memory the calling host thread allocated and has not freed (a free counts against the thread
// that makes it), and the most it held at once since `peak` was last set: what a test compares with the
// memory a plan states.
struct ThreadAllocations {
  std::int64_t live = 0, peak = 0;
};
ThreadAllocations& thread_allocations();

// When set, the label of every kernel the calling thread launches is appended to it: what a test
// compares with another path's launches.
std::vector<std::string>*& thread_launch_log();

// What the emulated device calls itself (`dilatron info`, errors).
inline constexpr const char* kDeviceName = "Dilatron emulated device (sm_90 on the CPU; slow, proves correctness only)";

}  // namespace dilatron::emulator::cuda
