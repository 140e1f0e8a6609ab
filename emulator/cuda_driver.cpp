#include "emulator/cuda_driver.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "common/log.hpp"
#include "emulator/emulated_kernel.hpp"
#include "emulator/memcheck.hpp"

namespace dilatron::emulator::cuda {
namespace {

constexpr std::size_t kMemoryBytes = std::size_t(16) << 30;  // what cuMemGetInfo and cuDeviceTotalMem report

int context_tag = 0;
CUcontext the_context() { return reinterpret_cast<CUcontext>(&context_tag); }
thread_local std::vector<CUcontext> context_stack;

// The reason of the last failed call on this thread, for cuGetErrorString (a hazard's report).
thread_local std::string last_error;

CUresult fail(CUresult code, std::string why) {
  last_error = std::move(why);
  return code;
}

// The bytes allocated, against the emulated device's total (the memory itself: emulator/memcheck.hpp).
struct Allocations {
  std::mutex mutex;
  std::size_t bytes = 0;
};
Allocations& allocations() {
  static Allocations a;
  return a;
}

struct Event {
  std::chrono::steady_clock::time_point at{};
  bool recorded = false;
};

// The shared object inside a cuLibraryLoadData image: an ELF file of the host's machine, its size from
// the section headers at its end (the call passes no size).
CUresult host_object(const void* code, std::vector<char>& object) {
  const auto* bytes = static_cast<const unsigned char*>(code);
  if (!bytes || std::memcmp(bytes, "\x7f" "ELF", 4) != 0 || bytes[4] != 2) {
    return fail(CUDA_ERROR_INVALID_IMAGE, "not a 64-bit ELF image");
  }
  std::uint16_t machine, entry_size, entries;
  std::uint64_t section_headers;
  std::memcpy(&machine, bytes + 0x12, 2);
  std::memcpy(&section_headers, bytes + 0x28, 8);
  std::memcpy(&entry_size, bytes + 0x3a, 2);
  std::memcpy(&entries, bytes + 0x3c, 2);
  if (machine != 62 /* EM_X86_64 */) {
    return fail(CUDA_ERROR_INVALID_IMAGE, "a GPU binary (CUBIN) cannot run on the emulated device: compile with "
                                          "DILATRON_DEVICE=emulator so the cache holds host objects");
  }
  const std::size_t size = section_headers + std::size_t(entries) * entry_size;
  object.assign(reinterpret_cast<const char*>(bytes), reinterpret_cast<const char*>(bytes) + size);
  return CUDA_SUCCESS;
}

}  // namespace

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* version) {
  *version = CUDA_VERSION;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetCount(int* count) {
  *count = 1;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (ordinal != 0) return fail(CUDA_ERROR_INVALID_DEVICE, fmt::format("device {}: the emulated device is device 0", ordinal));
  *device = 0;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int length, CUdevice) {
  if (length > 0) std::snprintf(name, std::size_t(length), "%s", kDeviceName);
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice) {
  switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = 132; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = 48 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *value = 227 * 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
    default:
      return fail(CUDA_ERROR_NOT_SUPPORTED, fmt::format("device attribute {} is not emulated", int(attribute)));
  }
  return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem(size_t* bytes, CUdevice) {
  *bytes = kMemoryBytes;
  return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char** text) {
  switch (error) {
    case CUDA_SUCCESS: *text = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *text = "CUDA_ERROR_INVALID_VALUE"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *text = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_INVALID_DEVICE: *text = "CUDA_ERROR_INVALID_DEVICE"; break;
    case CUDA_ERROR_INVALID_IMAGE: *text = "CUDA_ERROR_INVALID_IMAGE"; break;
    case CUDA_ERROR_NOT_FOUND: *text = "CUDA_ERROR_NOT_FOUND"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *text = "CUDA_ERROR_LAUNCH_FAILED"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *text = "CUDA_ERROR_NOT_SUPPORTED"; break;
    case CUDA_ERROR_INVALID_HANDLE: *text = "CUDA_ERROR_INVALID_HANDLE"; break;
    default: *text = "CUDA_ERROR_UNKNOWN";
  }
  return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult error, const char** text) {
  if (error != CUDA_SUCCESS && !last_error.empty()) {
    *text = last_error.c_str();
    return CUDA_SUCCESS;
  }
  *text = error == CUDA_SUCCESS ? "no error" : "the emulated device refused the call";
  return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* context) {
  *context = context_stack.empty() ? nullptr : context_stack.back();
  return CUDA_SUCCESS;
}
CUresult cuCtxSetCurrent(CUcontext context) {
  if (context_stack.empty()) context_stack.push_back(context);
  else context_stack.back() = context;
  return CUDA_SUCCESS;
}
CUresult cuCtxPushCurrent(CUcontext context) {
  context_stack.push_back(context);
  return CUDA_SUCCESS;
}
CUresult cuCtxPopCurrent(CUcontext* context) {
  if (context_stack.empty()) return fail(CUDA_ERROR_INVALID_VALUE, "no context to pop");
  if (context) *context = context_stack.back();
  context_stack.pop_back();
  return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }  // every launch has already run
CUresult cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice) {
  *context = the_context();
  return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* device) {
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult cuLibraryLoadData(CUlibrary* library, const void* code, CUjit_option*, void**, unsigned int, CUlibraryOption*,
                           void**, unsigned int) {
  std::vector<char> object;
  if (const CUresult r = host_object(code, object); r != CUDA_SUCCESS) return r;
  try {
    *library = reinterpret_cast<CUlibrary>(new EmulatedKernel(object, "emulated kernel"));
  } catch (const std::exception& e) {
    return fail(CUDA_ERROR_INVALID_IMAGE, e.what());
  }
  return CUDA_SUCCESS;
}
CUresult cuLibraryUnload(CUlibrary library) {
  delete reinterpret_cast<EmulatedKernel*>(library);
  return CUDA_SUCCESS;
}
// One kernel per object: its entry, whatever the instantiation is called.
CUresult cuLibraryGetKernel(CUkernel* kernel, CUlibrary library, const char*) {
  *kernel = reinterpret_cast<CUkernel>(library);
  return CUDA_SUCCESS;
}
CUresult cuKernelSetAttribute(CUfunction_attribute, int, CUkernel, CUdevice) { return CUDA_SUCCESS; }

CUresult cuLaunchKernel(CUfunction f, unsigned int grid_x, unsigned int grid_y, unsigned int grid_z, unsigned int block_x,
                        unsigned int block_y, unsigned int block_z, unsigned int shared_bytes, CUstream, void** params,
                        void** extra) {
  if (!f || !params || extra) return fail(CUDA_ERROR_INVALID_VALUE, "a launch needs a kernel and kernelParams (no extra)");
  try {
    const auto* kernel = reinterpret_cast<const EmulatedKernel*>(f);
    if (std::vector<std::string>* log = thread_launch_log()) log->push_back(kernel->label());
    kernel->launch(params[0], {{grid_x, grid_y, grid_z}, {block_x, block_y, block_z}, shared_bytes});
  } catch (const std::exception& e) {
    log::write(log::Level::warn, "{}", e.what());
    return fail(CUDA_ERROR_LAUNCH_FAILED, e.what());
  }
  return CUDA_SUCCESS;
}

ThreadAllocations& thread_allocations() {
  thread_local ThreadAllocations mine;
  return mine;
}

std::vector<std::string>*& thread_launch_log() {
  thread_local std::vector<std::string>* log = nullptr;
  return log;
}

CUresult cuMemAlloc(CUdeviceptr* pointer, size_t bytes) {
  Allocations& a = allocations();
  const std::lock_guard lock(a.mutex);
  if (bytes == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes");
  if (a.bytes + bytes > kMemoryBytes) {
    return fail(CUDA_ERROR_OUT_OF_MEMORY, fmt::format("{} bytes asked, {} of the emulated {} in use", bytes, a.bytes, kMemoryBytes));
  }
  void* block = memcheck::allocate(bytes);
  if (!block) return fail(CUDA_ERROR_OUT_OF_MEMORY, "the host has no memory for it");
  a.bytes += bytes;
  ThreadAllocations& mine = thread_allocations();
  mine.live += std::int64_t(bytes);
  mine.peak = std::max(mine.peak, mine.live);
  *pointer = CUdeviceptr(block);
  return CUDA_SUCCESS;
}
CUresult cuMemFree(CUdeviceptr pointer) {
  Allocations& a = allocations();
  const std::lock_guard lock(a.mutex);
  const std::size_t bytes = memcheck::size_of(reinterpret_cast<void*>(pointer));
  if (!memcheck::release(reinterpret_cast<void*>(pointer))) {
    return fail(CUDA_ERROR_INVALID_VALUE, fmt::format("cuMemFree of 0x{:x}, which is not an allocation", pointer));
  }
  a.bytes -= bytes;
  thread_allocations().live -= std::int64_t(bytes);
  return CUDA_SUCCESS;
}
CUresult cuMemAllocAsync(CUdeviceptr* pointer, size_t bytes, CUstream) { return cuMemAlloc(pointer, bytes); }
CUresult cuMemFreeAsync(CUdeviceptr pointer, CUstream) { return cuMemFree(pointer); }
CUresult cuMemGetInfo(size_t* free, size_t* total) {
  Allocations& a = allocations();
  const std::lock_guard lock(a.mutex);
  *total = kMemoryBytes;
  *free = kMemoryBytes - a.bytes;
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD(CUdeviceptr to, const void* from, size_t bytes) {
  std::memcpy(reinterpret_cast<void*>(to), from, bytes);
  return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoH(void* to, CUdeviceptr from, size_t bytes) {
  std::memcpy(to, reinterpret_cast<const void*>(from), bytes);
  return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoD(CUdeviceptr to, CUdeviceptr from, size_t bytes) {
  std::memmove(reinterpret_cast<void*>(to), reinterpret_cast<const void*>(from), bytes);
  return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoDAsync(CUdeviceptr to, CUdeviceptr from, size_t bytes, CUstream) { return cuMemcpyDtoD(to, from, bytes); }
CUresult cuMemcpy2DAsync(const CUDA_MEMCPY2D* c, CUstream) {
  if (c->srcMemoryType != CU_MEMORYTYPE_DEVICE || c->dstMemoryType != CU_MEMORYTYPE_DEVICE || c->srcXInBytes ||
      c->srcY || c->dstXInBytes || c->dstY) {
    return fail(CUDA_ERROR_NOT_SUPPORTED, "the emulated device copies 2D device to device from offset 0 only");
  }
  if (c->srcPitch < c->WidthInBytes || c->dstPitch < c->WidthInBytes) {
    return fail(CUDA_ERROR_INVALID_VALUE, "a 2D copy's pitch is narrower than its rows");
  }
  for (size_t row = 0; row < c->Height; ++row) {
    std::memmove(reinterpret_cast<char*>(c->dstDevice) + row * c->dstPitch,
                 reinterpret_cast<const char*>(c->srcDevice) + row * c->srcPitch, c->WidthInBytes);
  }
  return CUDA_SUCCESS;
}
CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr pointer) {
  if (!memcheck::is_live(reinterpret_cast<const void*>(pointer))) {
    return fail(CUDA_ERROR_INVALID_VALUE, fmt::format("0x{:x} is not in an emulated allocation", pointer));
  }
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *static_cast<unsigned*>(data) = CU_MEMORYTYPE_DEVICE; return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *static_cast<int*>(data) = 0; return CUDA_SUCCESS;
    default: return fail(CUDA_ERROR_NOT_SUPPORTED, "the emulated device answers memory type and device ordinal only");
  }
}
CUresult cuMemsetD32Async(CUdeviceptr to, unsigned int value, size_t count, CUstream) {
  std::fill_n(reinterpret_cast<unsigned*>(to), count, value);
  return CUDA_SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr to, unsigned char value, size_t bytes, CUstream) {
  std::memset(reinterpret_cast<void*>(to), value, bytes);
  return CUDA_SUCCESS;
}

CUresult cuStreamCreate(CUstream* stream, unsigned int) {
  *stream = reinterpret_cast<CUstream>(new int(0));
  return CUDA_SUCCESS;
}
CUresult cuStreamDestroy(CUstream stream) {
  delete reinterpret_cast<int*>(stream);
  return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamQuery(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { return CUDA_SUCCESS; }

CUresult cuEventCreate(CUevent* event, unsigned int) {
  *event = reinterpret_cast<CUevent>(new Event);
  return CUDA_SUCCESS;
}
CUresult cuEventDestroy(CUevent event) {
  delete reinterpret_cast<Event*>(event);
  return CUDA_SUCCESS;
}
CUresult cuEventRecord(CUevent event, CUstream) {
  auto* e = reinterpret_cast<Event*>(event);
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  return CUDA_SUCCESS;
}
CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
  const auto *a = reinterpret_cast<const Event*>(start), *b = reinterpret_cast<const Event*>(end);
  if (!a->recorded || !b->recorded) return fail(CUDA_ERROR_INVALID_HANDLE, "an event that was never recorded");
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return CUDA_SUCCESS;
}

}  // namespace dilatron::emulator::cuda
