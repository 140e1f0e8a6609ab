// `dilatron info`: what this machine offers the library, so a user can tell at a glance why a GPU call
// would fail.
#include <dilatron/version.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/cache_dir.hpp"
#include "common/env.hpp"
#include "runtime/tuning_file.hpp"
#include "codegen/nvrtc.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/nccl.hpp"
#include "tools/commands.hpp"
#include "tools/text.hpp"

namespace dilatron::cli {
namespace {

void info(bool json) {
  const nvrtc::Status compiler = nvrtc::probe();
  const driver::Status gpu = driver::probe();
  const nccl::Status ring = nccl::probe();
  const bool compiler_ok = compiler.loaded && compiler.problem.empty();
  const bool ring_ok = ring.loaded && ring.problem.empty();
  const std::string ring_version =
      ring_ok ? fmt::format("{}.{}.{}", ring.version.major, ring.version.minor, ring.version.patch) : "";
  std::string cache_dir, cache_problem;
  try {
    cache_dir = cache::default_cache_dir().string();
  } catch (const std::exception& e) {
    cache_problem = e.what();
  }
  std::string tuning_file, tuning_problem;
  std::size_t tuning_records = 0;
  if (cache_problem.empty()) {
    tuning_file = tuning_path(cache_dir).string();
    try {
      tuning_records = read_tuning(cache_dir).records().size();
    } catch (const Error& e) {
      tuning_problem = e.what();
    }
  }
  if (json) {
    nlohmann::json devices = nlohmann::json::array();
    for (const driver::Device& d : gpu.devices) {
      devices.push_back({{"ordinal", d.ordinal},
                         {"name", d.name},
                         {"arch", driver::arch_name(d.cc_major, d.cc_minor)},
                         {"memory_bytes", d.memory_bytes}});
    }
    const nlohmann::json out = {
        {"version", kVersion},
        {"nvrtc",
         {{"available", compiler_ok},
          {"version", compiler_ok ? fmt::format("{}.{}", compiler.major, compiler.minor) : ""},
          {"library", compiler.library},
          {"problem", compiler.problem}}},
        {"driver",
         {{"available", gpu.loaded},
          {"version", gpu.loaded ? fmt::format("{}.{}", gpu.version / 1000, gpu.version % 1000 / 10) : ""},
          {"library", gpu.library},
          {"problem", gpu.problem}}},
        {"nccl", {{"available", ring_ok}, {"version", ring_version}, {"library", ring.library}, {"problem", ring.problem}}},
        {"devices", devices},
        {"device_in_use", env::emulated_device() ? "emulator" : "gpu"},
        {"cache_dir", cache_dir},
        {"cache_problem", cache_problem},
        {"tuning", {{"file", tuning_file}, {"records", tuning_records}, {"problem", tuning_problem}}}};
    fmt::print("{}\n", json_text(out));
    return;
  }
  fmt::print("dilatron   {}\n", kVersion);
  if (compiler_ok) {
    fmt::print("NVRTC      {}.{} ({})\n", compiler.major, compiler.minor, compiler.library);
  } else {
    fmt::print("NVRTC      unavailable: {}\n", compiler.problem);
  }
  if (gpu.loaded) {
    fmt::print("driver     CUDA {}.{} ({})\n", gpu.version / 1000, gpu.version % 1000 / 10, gpu.library);
  } else {
    fmt::print("driver     not found: {}\n", gpu.problem);
  }
  for (const driver::Device& d : gpu.devices) {
    fmt::print("GPU {}      {} ({}, {:.1f} GiB)\n", d.ordinal, d.name, driver::arch_name(d.cc_major, d.cc_minor),
               double(d.memory_bytes) / (1u << 30));
  }
  if (gpu.loaded && !gpu.problem.empty()) fmt::print("GPUs       none: {}\n", gpu.problem);
  fmt::print("kernels    run on {}\n", env::emulated_device()
                                          ? "the emulated device (DILATRON_DEVICE=emulator): slow, proves correctness only"
                                          : "the GPU (DILATRON_DEVICE=emulator runs them on the emulated device)");
  if (ring_ok) {
    fmt::print("NCCL       {} ({})\n", ring_version, ring.library);
  } else {
    fmt::print("NCCL       unavailable: {}\n", ring.problem);
  }
  fmt::print("cache dir  {}\n", cache_problem.empty() ? cache_dir : cache_problem);
  if (cache_problem.empty()) {
    fmt::print("tuning     {}\n", tuning_problem.empty() ? fmt::format("{} records in {}", tuning_records, tuning_file)
                                                         : printable(tuning_problem));
  }
}

}  // namespace

void add_info(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd =
      app.add_subcommand("info", "Show the library version, NVRTC, the CUDA driver, GPUs, NCCL, the cache directory and its tuning database");
  cmd->add_flag("--json", *json, "machine-readable output");
  cmd->callback([json] { info(*json); });
}

}  // namespace dilatron::cli
