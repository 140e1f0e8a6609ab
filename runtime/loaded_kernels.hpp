// The last step of the JIT pipeline: cached CUBINs loaded with cuLibraryLoadData, the driver's
// context-independent loading. One CUlibrary per cache key, loaded once and kept for the process; its
// CUkernel launches in whichever context the stream (or, for the null stream, the calling thread) has.
// A handle therefore never outlives the context it was made for: a caller may destroy a context and
// create another, even at the same address, and the kernels still launch.
#pragma once

#include <cuda.h>

#include <mutex>
#include <string>
#include <unordered_map>

#include "cache/entry.hpp"

namespace dilatron {

class LoadedKernels {
 public:
  // Loads the entry's CUBIN on first use. Throws dilatron::Error without a driver or when the driver
  // refuses the binary.
  CUkernel kernel(const cache::Entry& entry);

  static LoadedKernels& global();

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, CUkernel> kernels_;  // by cache key
};

// cuLaunchKernel takes a CUkernel cast to CUfunction (cuda.h, cuLaunchKernel).
inline CUfunction launchable(CUkernel kernel) { return reinterpret_cast<CUfunction>(kernel); }

// Lets launches on the current context's device use `bytes` of dynamic shared memory (above the
// default 48 KiB). The limit belongs to a (kernel, device) pair, so each context's device is raised.
void allow_dynamic_shared(CUkernel kernel, int bytes);

}  // namespace dilatron
