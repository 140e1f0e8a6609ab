#include "tools/workload_flags.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <limits>

#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"

namespace dilatron::cli {
namespace {

constexpr const char* kConfigKeys[] = {"segments", "dilations", "head_dim", "dtype", "causal", "mode"};

std::string local_arch() {
  const driver::Status status = driver::probe();
  if (status.devices.empty()) {
    throw UsageError(fmt::format(
        "--arch is required on a machine without a GPU (for example --arch sm_90a for H100/H200, sm_80 for A100): {}",
        status.problem));
  }
  return driver::arch_name(status.devices.front().cc_major, status.devices.front().cc_minor);
}

std::string resolve_arch(const WorkloadFlags& f) {
  std::string arch = f.arch;
  if (arch.empty()) arch = f.arch_flag == ArchFlag::local_gpu ? local_arch() : "sm_90a";
  try {
    codegen::arch_number(arch);
  } catch (const Error& e) {
    throw UsageError(fmt::format("--arch: {}", e.what()));
  }
  return arch;
}

// A JSON number that is an integer as written ("64", not "64.0", "64.9" or "1e300") within [1, max];
// errors quote the value as the file gives it.
std::int64_t json_integer(const nlohmann::json& value, const std::string& what, std::int64_t max) {
  if (!value.is_number_integer()) throw Error(fmt::format("{} = {}: not an integer", what, value.dump()));
  if (value.is_number_unsigned() ? value.get<std::uint64_t>() > std::uint64_t(max) : value.get<std::int64_t>() > max) {
    throw Error(fmt::format("{} = {}: out of range (at most {})", what, value.dump(), max));
  }
  return value.get<std::int64_t>();  // below 1: validate_config names it
}

std::vector<std::int64_t> json_integers(const nlohmann::json& value, const std::string& what) {
  if (!value.is_array()) throw Error(fmt::format("{} = {}: expected a list of integers", what, value.dump()));
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < value.size(); ++i) {
    out.push_back(json_integer(value[i], fmt::format("{}[{}]", what, i), std::numeric_limits<std::int64_t>::max()));
  }
  return out;
}

autotune::Workload from_json(const nlohmann::json& j, const std::string& where, const std::string& arch) {
  try {
    if (!j.is_object()) throw Error("expected an object such as {\"segments\": [2048], \"dilations\": [1]}");
    // A misspelt key ("casual") would otherwise be ignored and the wrong kernels built.
    for (const auto& [key, value] : j.items()) {
      if (std::find(std::begin(kConfigKeys), std::end(kConfigKeys), key) == std::end(kConfigKeys)) {
        throw Error(fmt::format("unknown key \"{}\" (accepted: {})", key, fmt::join(kConfigKeys, ", ")));
      }
    }
    autotune::Workload w;
    w.config.segments = json_integers(j.at("segments"), "segments");
    w.config.dilations = json_integers(j.at("dilations"), "dilations");
    w.config.mode = parse_mode(j.value("mode", "longnet"));
    w.config.causal = j.value("causal", false);
    if (j.contains("head_dim")) w.head_dim = int(json_integer(j["head_dim"], "head_dim", std::numeric_limits<int>::max()));
    w.dtype = parse_gpu_dtype(j.value("dtype", "bf16"));
    w.arch = arch;
    validate_config(w.config);
    autotune::required_kernels(w);
    return w;
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", where, e.what()));
  }
}

std::vector<autotune::Workload> from_file(const std::string& file, const std::string& arch, int ranks, bool backward,
                                          bool decode) {
  std::ifstream in(file);
  if (!in) throw Error(fmt::format("{}: cannot open", file));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", file, e.what()));
  }
  if (!j.is_array()) j = nlohmann::json::array({j});
  if (j.empty()) throw Error(fmt::format("{}: an empty list names no configuration", file));
  std::vector<autotune::Workload> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    out.push_back(from_json(j[i], fmt::format("{} [{}]", file, i), arch));
    out.back().ranks = ranks;
    out.back().backward = backward;
    out.back().decode = decode;
  }
  return out;
}

}  // namespace

void add_workload_flags(CLI::App* cmd, WorkloadFlags& f, ArchFlag arch_flag, bool ranks_flag) {
  f.arch_flag = arch_flag;
  add_int_list(cmd, "--segments", f.segments, "segment length per branch, e.g. 2048,4096");
  add_int_list(cmd, "--dilations", f.dilations, "dilation rate per branch, e.g. 1,2");
  cmd->add_option("--head-dim", f.head_dim, "head dimension D (the GPU kernels take 64, 96, 128 or 256)")
      ->capture_default_str()
      ->transform(positive_integer(std::numeric_limits<int>::max()));
  add_gpu_dtype(cmd, f.dtype);
  cmd->add_flag("--causal", f.causal, "causal masking");
  add_mode(cmd, f.mode);
  if (arch_flag != ArchFlag::none && ranks_flag) {
    cmd->add_option("--ranks", f.ranks, "with P > 1, also the kernels of the ring across P ranks")
        ->capture_default_str()
        ->transform(positive_integer(std::numeric_limits<int>::max()));
    cmd->add_flag("--backward", f.backward, "also the backward pass's kernels (head dims 64, 96 and 128)");
    cmd->add_flag("--decode", f.decode,
                  "also the kernels of a KV cache's decode step on the GPU (generation; head dims multiples of 32)");
  }
  cmd->add_option("--config", f.config_file,
                  "JSON file: a config object or a list of them, instead of the flags above, e.g. "
                  "[{\"segments\":[2048,4096],\"dilations\":[1,2],\"head_dim\":128,\"dtype\":\"bf16\","
                  "\"causal\":false,\"mode\":\"longnet\"}]")
      ->check(CLI::ExistingFile);
  if (arch_flag == ArchFlag::local_gpu) {
    cmd->add_option("--arch", f.arch, "target GPU architecture, e.g. sm_90a or sm_80 (default: this machine's GPU)");
  } else if (arch_flag == ArchFlag::sm_90a) {
    cmd->add_option("--arch", f.arch, "target GPU architecture, e.g. sm_80 (default: sm_90a)");
  }
}

std::vector<autotune::Workload> workloads(const WorkloadFlags& f) {
  const bool flags_given = !f.segments.empty() || !f.dilations.empty();
  if (!f.config_file.empty() && flags_given) throw UsageError("give either --config or --segments/--dilations, not both");
  if (f.config_file.empty() && !flags_given) throw UsageError("give --segments and --dilations (or --config FILE)");
  const std::string arch = resolve_arch(f);
  if (!f.config_file.empty()) return from_file(f.config_file, arch, f.ranks, f.backward, f.decode);

  autotune::Workload w;
  w.config.segments = f.segments;
  w.config.dilations = f.dilations;
  w.config.mode = f.mode;
  w.config.causal = f.causal;
  w.head_dim = f.head_dim;
  w.dtype = f.dtype;
  w.arch = arch;
  w.ranks = f.ranks;
  w.backward = f.backward;
  w.decode = f.decode;
  check_config_flags(w.config);
  try {
    autotune::required_kernels(w);  // an unsupported head dim or shared-memory need, named now
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  return {std::move(w)};
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
