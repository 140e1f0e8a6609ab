// A DilatedKVCache on the GPU: the cache's blocks (cache_layout.hpp) in device memory, the decode step's
// kernels (templates/dilatron/decode.cuh, autotune::decode_kernels) and the batch rows' positions, kept
// on the device in two buffers the steps alternate between, so that resets, forks and rewinds are
// stream-ordered writes and no step reads a position back to the host.
#pragma once

#include <cuda.h>

#include <dilatron/config.hpp>
#include <dilatron/kv_cache.hpp>
#include <dilatron/tensor.hpp>

#include <memory>
#include <vector>

#include "runtime/decode/cache_layout.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/launch.hpp"

namespace dilatron::decode {

class DeviceDecode {
 public:
  // Loads the kernels into the current context and allocates the cache (zero positions).
  DeviceDecode(const Config& config, const KVCacheShape& shape, const CacheLayout& layout);

  // One validated step on `stream`: q [B, n, H, D], k, v [B, n, Hkv, D], out [B, n, H, D], lse
  // [B, H, n, 1] or none, all device memory. A cache's calls must be in one stream order.
  void step(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, const TensorView* lse,
            CUstream stream);
  // The same step when every batch row is at position 0 (a prompt from scratch): the causal forward over
  // the new rows, on the tensor-core kernels (DilatedAttention), then the append. Head dims 64, 96, 128
  // and 256 (prefills_on_forward).
  void prefill(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const TensorView* lse, CUstream stream);
  bool prefills_on_forward() const noexcept;
  void set_position(std::int64_t row, std::int64_t position, CUstream stream);
  void clear_positions(CUstream stream);
  void copy_row(std::int64_t from, std::int64_t to, CUstream stream);
  std::size_t bytes() const noexcept { return cache_.bytes(); }

 private:
  Config config_;
  KVCacheShape shape_;
  std::size_t row_bytes_;
  std::vector<Launch> partials_;  // one decode_partial per branch
  std::vector<int> splits_;       // per branch: key splits of KEYS keys each
  int total_splits_ = 0;
  Launch combine_, append_;
  DilatedAttention forward_;  // the causal forward, for prompts from position 0
  DeviceBuffer cache_;
  std::unique_ptr<DeviceBuffer> table_;    // decode_append's: per block {w, r, offset, kv head, K and V byte offsets}
  std::unique_ptr<DeviceBuffer> offsets_;  // decode_partial's: per branch [kv head * r + offset] -> K byte offset
  std::int64_t blocks_ = 0;
  std::vector<std::size_t> offsets_at_;    // where each branch's part of offsets_ begins (elements)
  DeviceBuffer positions_[2];
  int current_ = 0;  // the buffer holding the positions now

  void append(const TensorView& k, const TensorView& v, CUstream stream);
};

}  // namespace dilatron::decode
