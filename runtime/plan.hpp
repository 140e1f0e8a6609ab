// A forward plan: for one shape signature in one context, the kernels to launch (from
// autotune::forward_kernels, loaded through the cache), their grids, and an LSE workspace when the
// caller gives no LSE tensor. Built once, then launch() only fills arguments.
#pragma once

#include <cuda.h>

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <memory>
#include <vector>

#include "codegen/kernel_spec.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/problem.hpp"

namespace dilatron {

struct Launch {
  codegen::KernelSpec spec;
  CUkernel kernel;
  unsigned grid[3];
  unsigned threads;
  unsigned shared_bytes;
  long long head_begin;
};

class ForwardPlan {
 public:
  ForwardPlan(const Config& config, const Problem& problem, DType dtype, bool needs_lse_workspace);

  void launch(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, float* lse,
              CUstream stream) const;
  float* lse_workspace() const noexcept { return workspace_ ? static_cast<float*>(workspace_->get()) : nullptr; }

 private:
  Problem problem_;
  std::vector<Launch> launches_;
  std::unique_ptr<DeviceBuffer> workspace_;
};

}  // namespace dilatron
