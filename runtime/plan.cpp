#include "runtime/plan.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "common/log.hpp"
#include "runtime/driver.hpp"
#include "runtime/stream_workspace.hpp"
#include "runtime/tuning.hpp"

namespace dilatron {
ForwardPlan::ForwardPlan(const Config& config, const Problem& problem, DType dtype, bool needs_lse_workspace)
    : problem_(problem) {
  autotune::Workload workload;
  workload.config = config;
  workload.dtype = dtype;
  workload.head_dim = int(problem.head_dim);
  workload.arch = driver::current_arch();
  workload.tuned = tuned_for(workload, problem);
  for (const codegen::KernelSpec& spec : autotune::forward_kernels(workload)) {
    log::write(log::Level::info, "plan: {}{}", spec.label(),
               codegen::is_attention(spec.op) && spec.tiles != autotune::default_tiles(spec) ? " (tuned tiles)" : "");
    launches_.push_back(prepare_launch(spec, *cache::KernelCache::global().get(spec).entry, problem));
  }
  if (needs_lse_workspace) {
    lse_offset_ = workspace_bytes_;
    workspace_bytes_ += workspace_region(std::size_t(problem.batch * problem.heads * problem.seq_len) * sizeof(float));
  }
  if (std::any_of(launches_.begin(), launches_.end(), [](const Launch& l) { return l.spec.op == codegen::Op::finish_output; })) {
    accumulator_offset_ = workspace_bytes_;
    workspace_bytes_ += workspace_region(std::size_t(problem.batch * problem.seq_len * problem.heads * problem.head_dim) *
                                     sizeof(float));
  }
}

void ForwardPlan::launch(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         float* lse, void* workspace, CUstream stream, const PackedSequences* packing) const {
  if (workspace_bytes_ > 0 && workspace == nullptr) {
    throw Error(fmt::format("internal: a forward plan needs {} workspace bytes per call but got none", workspace_bytes_));
  }
  const auto region = [&](std::size_t offset) {
    return offset == kNoRegion ? nullptr : reinterpret_cast<float*>(static_cast<char*>(workspace) + offset);
  };
  if (lse_offset_ != kNoRegion) lse = region(lse_offset_);
  const LaunchTensors tensors{q, k, v, out, lse, region(accumulator_offset_), packing};
  for (const Launch& l : launches_) enqueue(l, problem_, tensors, stream);
}

}  // namespace dilatron
