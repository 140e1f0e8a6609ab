// The one answer to "which kernels does this configuration need": used by the runtime to build plans
// and by `dilatron cache warm` to pre-compile, so a warmed cache holds exactly what a run will load.
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
};

// Distinct specs in launch order, tiles chosen by the policy. Today: per branch, pack_rows and
// unpack_rows (the ring's send and the backward's scatter); then merge_partials. The attention kernels
// join this list as they land. Throws dilatron::Error for a spec that cannot be built.
std::vector<codegen::KernelSpec> required_kernels(const Workload& workload);

}  // namespace dilatron::autotune
