// A backward plan: for one shape signature in one context, the launches of autotune::backward_kernels
// and the layout of the per-call workspace (delta, and fp32 accumulators of dQ, dK and dV, zeroed by
// the call). Immutable once built, like ForwardPlan, so concurrent calls share it.
#pragma once

#include <cuda.h>

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <cstddef>
#include <vector>

#include "runtime/launch.hpp"
#include "runtime/problem.hpp"

namespace dilatron {

// The tensors of one backward call (device memory, validated).
struct BackwardTensors {
  TensorView q, k, v, out, dout, dq, dk, dv;
  const float* lse;  // the forward pass's [B, H, N]
};

class BackwardPlan {
 public:
  BackwardPlan(const Config& config, const Problem& problem, DType dtype);

  // B*H*N floats of delta, B*N*H*D of dQ and twice B*N*Hkv*D of dK and dV accumulators.
  std::size_t workspace_bytes() const noexcept { return workspace_bytes_; }

  // Enqueues the zeroing of the accumulators and the launches on `stream`; `workspace` holds
  // workspace_bytes() for this call alone, in stream order until the launches have run.
  // `packing`: the tensors are a packed batch of the plan's rows (B = 1), validated.
  void launch(const BackwardTensors& t, void* workspace, CUstream stream, const PackedSequences* packing = nullptr) const;

 private:
  Problem problem_;
  std::vector<Launch> launches_;
  std::size_t workspace_bytes_ = 0;
  std::size_t dq_offset_ = 0, dk_offset_ = 0, dv_offset_ = 0;  // delta lies at 0
};

}  // namespace dilatron
