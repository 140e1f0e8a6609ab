#include "tools/workload_flags.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"

namespace dilatron::cli {
namespace {

std::string local_arch() {
  const driver::Status status = driver::probe();
  if (status.devices.empty()) {
    throw Error(fmt::format("--arch is required on a machine without a GPU (for example --arch sm_90a for H100/H200, "
                            "sm_80 for A100): {}",
                            status.problem));
  }
  return driver::arch_name(status.devices.front().cc_major, status.devices.front().cc_minor);
}

autotune::Workload from_json(const nlohmann::json& j, const std::string& where, const std::string& arch) {
  try {
    autotune::Workload w;
    w.config.segments = j.at("segments").get<std::vector<std::int64_t>>();
    w.config.dilations = j.at("dilations").get<std::vector<std::int64_t>>();
    w.config.mode = parse_mode(j.value("mode", "longnet"));
    w.config.causal = j.value("causal", false);
    w.head_dim = j.value("head_dim", 128);
    w.dtype = parse_dtype(j.value("dtype", "bf16"));
    w.arch = arch;
    return w;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
}

}  // namespace

void add_workload_flags(CLI::App* cmd, WorkloadFlags& f, bool with_arch) {
  cmd->add_option("--segments", f.segments, "segment length per branch, e.g. 2048,4096");
  cmd->add_option("--dilations", f.dilations, "dilation rate per branch, e.g. 1,2");
  cmd->add_option("--head-dim", f.head_dim, "head dimension D")->capture_default_str();
  cmd->add_option("--dtype", f.dtype, "bf16 or fp16")->capture_default_str();
  cmd->add_flag("--causal", f.causal, "causal masking");
  cmd->add_option("--mode", f.mode, "longnet or head_groups")->capture_default_str();
  cmd->add_option("--config", f.config_file,
                  "JSON file: a config object or a list of them, e.g. "
                  "[{\"segments\":[2048,4096],\"dilations\":[1,2],\"head_dim\":128,\"dtype\":\"bf16\"}] "
                  "(instead of the flags above)");
  if (with_arch) {
    cmd->add_option("--arch", f.arch, "target GPU architecture, e.g. sm_90a or sm_80 (default: this machine's GPU)");
  }
}

std::vector<autotune::Workload> workloads(const WorkloadFlags& f) {
  const std::string arch = f.arch.empty() ? local_arch() : f.arch;
  codegen::arch_number(arch);  // reject a malformed --arch before any work
  std::vector<autotune::Workload> out;
  if (!f.config_file.empty()) {
    if (!f.segments.empty() || !f.dilations.empty()) throw Error("give either --config or --segments/--dilations, not both");
    std::ifstream in(f.config_file);
    if (!in) throw Error(fmt::format("{}: cannot open", f.config_file));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("{}: not valid JSON: {}", f.config_file, e.what()));
    }
    if (!j.is_array()) j = nlohmann::json::array({j});
    for (std::size_t i = 0; i < j.size(); ++i) {
      out.push_back(from_json(j[i], fmt::format("{} [{}]", f.config_file, i), arch));
    }
  } else {
    if (f.segments.empty() || f.dilations.empty()) throw Error("give --segments and --dilations (or --config FILE)");
    autotune::Workload w;
    w.config.segments = parse_int_list("--segments", f.segments);
    w.config.dilations = parse_int_list("--dilations", f.dilations);
    w.config.mode = parse_mode(f.mode);
    w.config.causal = f.causal;
    w.head_dim = f.head_dim;
    w.dtype = parse_dtype(f.dtype);
    w.arch = arch;
    out.push_back(std::move(w));
  }
  for (const autotune::Workload& w : out) validate_config(w.config);
  return out;
}

std::vector<codegen::KernelSpec> kernels_of(const std::vector<autotune::Workload>& workloads) {
  std::vector<codegen::KernelSpec> specs;
  for (const autotune::Workload& w : workloads) {
    for (codegen::KernelSpec& spec : autotune::required_kernels(w)) {
      if (std::find(specs.begin(), specs.end(), spec) == specs.end()) specs.push_back(std::move(spec));
    }
  }
  return specs;
}

}  // namespace dilatron::cli
