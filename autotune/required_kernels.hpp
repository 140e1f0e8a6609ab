// The one answer to "which kernels does this configuration need": the runtime builds its launch plan
// from it and `dilatron cache warm` pre-compiles it, so a warmed cache holds exactly what a run loads.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <string>
#include <vector>

#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

struct Workload {
  Config config;
  DType dtype = DType::bf16;
  int head_dim = 128;
  std::string arch = "sm_90a";
  int ranks = 1;  // > 1: the ring's kernels too
};

// The forward pass's launches in order, tiles chosen by the policy:
// - longnet: a branch with r = 1 selects every row, so it runs first and writes O and LSE; every other
//   branch merges into them. Without such a branch, clear_output first and every branch merges.
// - head_groups: clear_output when some group leaves rows unselected, then one launch per group.
std::vector<codegen::KernelSpec> forward_kernels(const Workload& workload);

// The GPU ring executor's kernels, whatever the plan (branch, offsets and rows are launch arguments):
// ring_pack, ring_attend, ring_finish, and clear_output on its fp32 accumulator.
std::vector<codegen::KernelSpec> ring_kernels(DType dtype, int head_dim, const std::string& arch);

// Distinct specs: the forward kernels, then (ranks > 1) the ring's. Throws dilatron::Error for a spec
// that cannot be built.
std::vector<codegen::KernelSpec> required_kernels(const Workload& workload);

}  // namespace dilatron::autotune
