// Switches for looking inside the JIT, read from the environment once per process:
//   DILATRON_JIT_DUMP=DIR       each kernel NVRTC compiles leaves its source, PTX, NVRTC log and ptxas
//                               report in DIR (see codegen/jit_dump.hpp)
//   DILATRON_JIT_LINEINFO=1     compile with -lineinfo, so profilers map SASS back to template lines
//   DILATRON_JIT_PTXAS_CHECK=1  a kernel that spills or has a stack frame fails to compile
// Only lineinfo changes the binary, so only lineinfo reaches the NVRTC options and the cache key.
#pragma once

#include <filesystem>
#include <functional>

namespace dilatron::codegen {

struct JitOptions {
  std::filesystem::path dump_dir;  // empty: no dump
  bool lineinfo = false;
  bool ptxas_check = false;

  // Reads the variables through `getenv` (tests pass their own). Unset or empty means off; the two
  // flags take 0 or 1, and anything else is a dilatron::Error naming the variable.
  static JitOptions from_environment(const std::function<const char*(const char*)>& getenv);
  static JitOptions from_environment();
};

// JitOptions::from_environment(), read on first use: one process compiles every kernel alike.
const JitOptions& jit_options();

}  // namespace dilatron::codegen
