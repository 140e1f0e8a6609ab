#include "runtime/loaded_kernels.hpp"

#include "runtime/driver.hpp"

namespace dilatron {

CUkernel LoadedKernels::kernel(const cache::Entry& entry) {
  std::lock_guard lock(mutex_);
  if (auto it = kernels_.find(entry.key()); it != kernels_.end()) return it->second;
  const std::string name = entry.meta.lowered_name;
  CUlibrary library;
  DILATRON_CU(cuLibraryLoadData(&library, entry.cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  CUkernel kernel;
  if (const CUresult r = driver::api().cuLibraryGetKernel(&kernel, library, name.c_str()); r != CUDA_SUCCESS) {
    driver::api().cuLibraryUnload(library);  // best effort: the lookup's failure is what to report
    driver::check(r, ("cuLibraryGetKernel(" + name + ")").c_str());
  }
  kernels_.emplace(entry.key(), kernel);
  return kernel;
}

LoadedKernels& LoadedKernels::global() {
  static LoadedKernels kernels;
  return kernels;
}

void allow_dynamic_shared(CUkernel kernel, int bytes) {
  // cuKernelSetAttribute is device-wide and unordered between threads; plans built at once may race
  // here, but a kernel's spec fixes its shared memory, so they all set the same value.
  CUdevice device;
  DILATRON_CU(cuCtxGetDevice(&device));
  DILATRON_CU(cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes, kernel, device));
}

}  // namespace dilatron
