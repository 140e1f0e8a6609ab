// A forward plan: for one shape signature in one context, the kernels to launch (from
// autotune::forward_kernels with the tuning database's tiles, loaded through the cache), their grids, and the layout of the per-call
// workspace. Built once and never changed after, so calls on any thread or stream share it; launch()
// only fills arguments. The plan owns no device scratch: each call brings its own workspace
// (runtime/stream_workspace.hpp) of workspace_bytes(), so concurrent calls never share one.
#pragma once

#include <cuda.h>

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <cstddef>
#include <vector>

#include "runtime/launch.hpp"
#include "runtime/problem.hpp"

namespace dilatron {

class ForwardPlan {
 public:
  ForwardPlan(const Config& config, const Problem& problem, DType dtype, bool needs_lse_workspace);

  // The device bytes one call needs as scratch (0: none): an LSE of B*H*N floats when the caller gives
  // none, and with several longnet branches the fp32 O accumulator of B*N*H*D floats.
  std::size_t workspace_bytes() const noexcept { return workspace_bytes_; }

  // Enqueues the launches on `stream`. `lse` is the caller's LSE, or null when the plan was built
  // without one; `workspace` holds workspace_bytes() bytes for this call alone (null when that is 0)
  // and must stay allocated, in stream order, until the launches have run.
  // `packing`: the tensors are a packed batch of the plan's rows (B = 1), validated.
  void launch(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out, float* lse,
              void* workspace, CUstream stream, const PackedSequences* packing = nullptr) const;

 private:
  static constexpr std::size_t kNoRegion = std::size_t(-1);

  Problem problem_;
  std::vector<Launch> launches_;
  std::size_t workspace_bytes_ = 0;
  std::size_t lse_offset_ = kNoRegion;          // where the LSE lies in the workspace, when the caller gives none
  std::size_t accumulator_offset_ = kNoRegion;  // where the fp32 O accumulator lies, when branches merge
};

}  // namespace dilatron
