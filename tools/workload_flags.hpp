// The configuration flags shared by `cache warm`, `gen`, `bench` and `tune`: one config from flags, or a JSON
// list of them from --config FILE.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "autotune/required_kernels.hpp"

namespace dilatron::cli {

// What an omitted --arch means for a command.
enum class ArchFlag {
  none,       // no --arch: the command runs on this machine's GPU (bench)
  local_gpu,  // default: this machine's GPU; required without one (cache warm)
  sm_90a,     // default: sm_90a, no GPU needed (gen)
};

struct WorkloadFlags {
  std::vector<std::int64_t> segments, dilations;
  Mode mode = Mode::longnet;
  DType dtype = DType::bf16;
  int head_dim = 128;
  int ranks = 1;
  bool causal = false, backward = false, decode = false;
  std::string config_file, arch;
  ArchFlag arch_flag = ArchFlag::local_gpu;
};

// --ranks comes with every arch flag but none, unless `ranks_flag` is false (kernels of one GPU only).
void add_workload_flags(CLI::App* cmd, WorkloadFlags& flags, ArchFlag arch_flag, bool ranks_flag = true);

// The workloads the flags describe, validated (each kernel spec too). Flag problems are UsageErrors;
// a config file that cannot be read or holds bad values is an Error naming the file and the entry.
std::vector<autotune::Workload> workloads(const WorkloadFlags& flags);

// Distinct kernels of all workloads, in order.
std::vector<codegen::KernelSpec> kernels_of(const std::vector<autotune::Workload>& workloads);

}  // namespace dilatron::cli
