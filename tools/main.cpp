#include <dilatron/error.hpp>
#include <dilatron/version.hpp>

#include <fmt/format.h>

#include <cstdio>

#include "tools/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{fmt::format("dilatron {}: LongNet-style dilated attention, JIT-compiled for NVIDIA GPUs", dilatron::kVersion),
               "dilatron"};
  app.require_subcommand(1);
  app.set_version_flag("--version", dilatron::kVersion);
  app.failure_message([](const CLI::App*, const CLI::Error& e) { return fmt::format("dilatron: error: {}\n", e.what()); });
  dilatron::cli::add_run(app);
  dilatron::cli::add_demo(app);
  dilatron::cli::add_cache(app);
  dilatron::cli::add_gen(app);
  dilatron::cli::add_bench(app);
  dilatron::cli::add_info(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    fmt::print(stderr, "dilatron: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
