// One forward kernel timed alone, as the autotuner needs it: random inputs of the call's size, its
// outputs, LSE and fp32 accumulator allocated once and shared by every candidate.
#pragma once

#include <dilatron/tensor.hpp>

#include "cache/entry.hpp"
#include "codegen/kernel_spec.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/gpu_timer.hpp"
#include "runtime/problem.hpp"

namespace dilatron {

struct TimingOptions {
  int warmup = 5, iters = 20;
};

// Fills a buffer of 16-bit values with standard normal samples (an 8 MiB random block, repeated).
void fill_random(DeviceBuffer& buffer, DType dtype, unsigned seed);

class KernelBench {
 public:
  // Allocates and fills the problem's tensors in the current context (q, k, v, out: dtype; LSE and
  // accumulator: float32). Throws dilatron::Error when the memory is not there.
  KernelBench(const Problem& problem, DType dtype);

  // The median of `spec`'s launches (its binary: `entry`), in microseconds.
  double median_us(const codegen::KernelSpec& spec, const cache::Entry& entry, const TimingOptions& options);

 private:
  Problem problem_;
  DType dtype_;
  DeviceBuffer q_, k_, v_, out_, lse_, accumulator_;
  GpuTimer timer_;
};

}  // namespace dilatron
