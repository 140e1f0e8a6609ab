// Running the built `dilatron` binary as a user would, capturing exit status and both streams.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/support/temp_dir.hpp"

namespace dilatron::test {

struct CliResult {
  int status;
  std::string err, out;
};

inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The binary under test: $DILATRON_CLI (for a build carried to another machine), else the build's own.
inline std::string cli_path() {
  const char* path = std::getenv("DILATRON_CLI");
  return path && *path ? path : DILATRON_CLI;
}

// `args` is shell text; `dir` holds the captured streams while the command runs.
inline CliResult run_cli(const TempDir& dir, const std::string& args, const std::string& env = "") {
  const auto out = dir / ".stdout", err = dir / ".stderr";
  const std::string command = env + " '" + cli_path() + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
  const int raw = std::system(command.c_str());
  CliResult r{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, slurp(err), slurp(out)};
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

}  // namespace dilatron::test
