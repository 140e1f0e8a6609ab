// Per-call device scratch, ordered on the call's stream: allocated with cuMemAllocAsync from the current
// memory pool of the stream's device, freed with cuMemFreeAsync on the same stream when the value goes
// out of scope, i.e. after every launch the call enqueued. Each call owns its own bytes, so calls on
// several threads or streams never share scratch, and the pool recycles it without a device sync.
#pragma once

#include <cuda.h>

#include <cstddef>

namespace dilatron {

// One workspace holds several regions; each starts on a 256-byte boundary, the alignment device
// allocations get, so a region is as aligned as if it had been allocated alone. Returns `bytes`
// rounded up to that boundary.
inline std::size_t workspace_region(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

class StreamWorkspace {
 public:
  // Zero bytes allocates nothing (get() is null). Throws dilatron::Error when the driver refuses, e.g.
  // on a device without memory pools (CUDA_ERROR_NOT_SUPPORTED).
  StreamWorkspace(std::size_t bytes, CUstream stream);
  ~StreamWorkspace();
  StreamWorkspace(const StreamWorkspace&) = delete;
  StreamWorkspace& operator=(const StreamWorkspace&) = delete;

  void* get() const noexcept { return reinterpret_cast<void*>(pointer_); }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  CUdeviceptr pointer_ = 0;
  std::size_t bytes_;
  CUstream stream_;
};

}  // namespace dilatron
