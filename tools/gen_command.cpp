// `dilatron gen`: print the source NVRTC compiles for each kernel of a configuration.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "codegen/render.hpp"
#include "codegen/templates.hpp"
#include "tools/commands.hpp"
#include "tools/workload_flags.hpp"

namespace dilatron::cli {
namespace {

struct GenOptions {
  WorkloadFlags workload;
  std::string kernel;
  bool headers = false;
};

void gen(const GenOptions& o) {
  std::vector<codegen::KernelSpec> chosen, all = kernels_of(workloads(o.workload));
  for (const codegen::KernelSpec& spec : all) {
    if (spec.label().find(o.kernel) != std::string::npos) chosen.push_back(spec);
  }
  if (chosen.empty()) {
    std::vector<std::string> labels;
    for (const codegen::KernelSpec& spec : all) labels.push_back(spec.label());
    throw UsageError(fmt::format("--kernel '{}' matches none of this configuration's kernels: {}", o.kernel,
                                 fmt::join(labels, "; ")));
  }
  // Expanded as one unit, so each template appears once (before the first kernel that needs it) and the
  // whole output compiles as one file, as each kernel's own unit does.
  std::string units;
  for (const codegen::KernelSpec& spec : chosen) {
    const std::string source = codegen::render(spec).source;
    units += fmt::format("// ===== {} =====\n", spec.label());
    units += o.headers ? fmt::format("{}// embedded templates it includes: {}\n\n", source,
                                     fmt::join(codegen::included_templates(source), ", "))
                       : source + "\n";
  }
  fmt::print("{}", o.headers ? units : codegen::expand_includes(units));
}

}  // namespace

void add_gen(CLI::App& app) {
  auto o = std::make_shared<GenOptions>();
  CLI::App* cmd = app.add_subcommand(
      "gen", "Print the CUDA source NVRTC compiles for every kernel a configuration needs (no GPU needed)");
  add_workload_flags(cmd, o->workload, ArchFlag::sm_90a);
  cmd->add_option("--kernel", o->kernel, "only kernels whose name contains this text, e.g. 'attention_partial_merge'");
  cmd->add_flag("--headers", o->headers,
                "print the short rendered unit and list the template headers it includes, instead of inlining them");
  cmd->callback([o] { gen(*o); });
}

}  // namespace dilatron::cli
