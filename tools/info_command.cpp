// `dilatron info`: what this machine offers the library, so a user can tell at a glance why a GPU call
// would fail.
#include <dilatron/version.hpp>

#include <fmt/format.h>

#include "cache/cache_dir.hpp"
#include "codegen/nvrtc.hpp"
#include "runtime/driver.hpp"
#include "tools/commands.hpp"

namespace dilatron::cli {

void add_info(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("info", "Show the library version, NVRTC, the CUDA driver, GPUs and the cache directory");
  cmd->callback([] {
    fmt::print("dilatron   {}\n", kVersion);
    const nvrtc::Status compiler = nvrtc::probe();
    if (compiler.loaded && compiler.problem.empty()) {
      fmt::print("NVRTC      {}.{} ({})\n", compiler.major, compiler.minor, compiler.library);
    } else {
      fmt::print("NVRTC      unavailable: {}\n", compiler.problem);
    }
    const driver::Status gpu = driver::probe();
    if (gpu.loaded) {
      fmt::print("driver     CUDA {}.{} ({})\n", gpu.version / 1000, gpu.version % 1000 / 10, gpu.library);
    } else {
      fmt::print("driver     not found: {}\n", gpu.problem);
    }
    for (const driver::Device& d : gpu.devices) {
      fmt::print("GPU {}      {} (sm_{}{}, {:.1f} GiB)\n", d.ordinal, d.name, d.cc_major, d.cc_minor,
                 double(d.memory_bytes) / (1u << 30));
    }
    if (gpu.loaded && !gpu.problem.empty()) fmt::print("GPUs       none: {}\n", gpu.problem);
    fmt::print("cache dir  {}\n", cache::default_cache_dir().string());
  });
}

}  // namespace dilatron::cli
