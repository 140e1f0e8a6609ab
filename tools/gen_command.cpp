// `dilatron gen`: print the source NVRTC compiles for each kernel of a configuration.
#include <fmt/format.h>

#include "codegen/render.hpp"
#include "tools/commands.hpp"
#include "tools/workload_flags.hpp"

namespace dilatron::cli {

void add_gen(CLI::App& app) {
  auto flags = std::make_shared<WorkloadFlags>();
  auto filter = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("gen", "Print the generated CUDA source of every kernel a configuration needs");
  add_workload_flags(cmd, *flags);
  cmd->add_option("--kernel", *filter, "only kernels whose name contains this text, e.g. pack_rows");
  cmd->callback([=] {
    WorkloadFlags f = *flags;
    if (f.arch.empty()) f.arch = "sm_90a";  // printing source needs no GPU
    for (const codegen::KernelSpec& spec : kernels_of(workloads(f))) {
      if (spec.label().find(*filter) == std::string::npos) continue;
      fmt::print("// ===== {} =====\n{}\n", spec.label(), codegen::render(spec).source);
    }
  });
}

}  // namespace dilatron::cli
