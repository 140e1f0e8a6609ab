#include "codegen/jit_options.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <cstdlib>

#include "common/env.hpp"
#include <string_view>

namespace dilatron::codegen {
namespace {

bool flag(const std::function<const char*(const char*)>& getenv, const char* name) {
  const char* value = getenv(name);
  return env::parse_switch(name, value ? value : "");
}

}  // namespace

JitOptions JitOptions::from_environment(const std::function<const char*(const char*)>& getenv) {
  JitOptions o;
  if (const char* dir = getenv("DILATRON_JIT_DUMP"); dir && *dir) o.dump_dir = dir;
  o.lineinfo = flag(getenv, "DILATRON_JIT_LINEINFO");
  o.ptxas_check = flag(getenv, "DILATRON_JIT_PTXAS_CHECK");
  return o;
}

JitOptions JitOptions::from_environment() {
  return from_environment([](const char* name) -> const char* { return std::getenv(name); });
}

const JitOptions& jit_options() {
  static const JitOptions options = JitOptions::from_environment();
  return options;
}

}  // namespace dilatron::codegen
