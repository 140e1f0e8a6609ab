// GPU timing as `dilatron bench` and the autotuner both do it: untimed warm-up runs, then timed runs
// between CUDA events, each after a memset over a buffer larger than any L2 so no run finds the
// previous one's data cached, and the median.
#pragma once

#include <cuda.h>

#include <functional>

#include "runtime/device_buffer.hpp"

namespace dilatron {

class GpuTimer {
 public:
  // Allocates the flush buffer in the current context.
  GpuTimer();
  ~GpuTimer();
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;

  // `work` enqueues one run on the null stream. Returns the median of `iters` timed runs, in ms.
  double median_ms(const std::function<void()>& work, int warmup, int iters);

  std::size_t flush_bytes() const noexcept { return flush_.bytes(); }

 private:
  DeviceBuffer flush_;
  CUevent start_ = nullptr, stop_ = nullptr;
};

}  // namespace dilatron
