// The configuration flags shared by `cache warm`, `gen` (and later `tune` and `bench`): one config from
// flags, or a JSON list of them from --config FILE.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "autotune/required_kernels.hpp"

namespace dilatron::cli {

struct WorkloadFlags {
  std::string segments, dilations, mode = "longnet", dtype = "bf16", config_file, arch;
  int head_dim = 128;
  bool causal = false;
};

// with_arch = false for commands that run on this machine's GPU and so take no --arch.
void add_workload_flags(CLI::App* cmd, WorkloadFlags& flags, bool with_arch = true);

// The workloads the flags describe, validated. `arch` defaults to the local GPU's; without one it is
// required (an error saying so).
std::vector<autotune::Workload> workloads(const WorkloadFlags& flags);

// Distinct kernels of all workloads, in order.
std::vector<codegen::KernelSpec> kernels_of(const std::vector<autotune::Workload>& workloads);

}  // namespace dilatron::cli
