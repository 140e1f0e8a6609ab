// DILATRON_JIT_*: read once from the environment (here through an injected getenv), and only line info
// reaches the NVRTC options.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <map>
#include <random>
#include <string>

#include "codegen/compiler.hpp"
#include "codegen/jit_options.hpp"

using namespace dilatron;
using namespace dilatron::codegen;

namespace {

JitOptions read(const std::map<std::string, std::string>& env) {
  return JitOptions::from_environment([&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

bool has(const std::vector<std::string>& options, const std::string& option) {
  return std::find(options.begin(), options.end(), option) != options.end();
}

}  // namespace

TEST(JitOptions, UnsetOrEmptyOrZeroMeansOff) {
  for (const auto& env : std::vector<std::map<std::string, std::string>>{
           {},
           {{"DILATRON_JIT_DUMP", ""}, {"DILATRON_JIT_LINEINFO", ""}, {"DILATRON_JIT_PTXAS_CHECK", ""}},
           {{"DILATRON_JIT_LINEINFO", "0"}, {"DILATRON_JIT_PTXAS_CHECK", "0"}},
           {{"DILATRON_JIT_DUMPS", "/tmp/x"}, {"DILATRON_JIT_LINE_INFO", "1"}}}) {  // near misses are ignored
    const JitOptions o = read(env);
    EXPECT_TRUE(o.dump_dir.empty());
    EXPECT_FALSE(o.lineinfo);
    EXPECT_FALSE(o.ptxas_check);
  }
}

TEST(JitOptions, EachVariableSetsItsOwnSwitch) {
  std::mt19937 rng(41);
  for (int trial = 0; trial < 32; ++trial) {
    const bool dump = rng() & 1, lineinfo = rng() & 1, check = rng() & 1;
    const std::string dir = "/tmp/dump-" + std::to_string(rng());
    std::map<std::string, std::string> env;
    if (dump) env["DILATRON_JIT_DUMP"] = dir;
    env["DILATRON_JIT_LINEINFO"] = lineinfo ? "1" : "0";
    if (check) env["DILATRON_JIT_PTXAS_CHECK"] = "1";
    const JitOptions o = read(env);
    EXPECT_EQ(o.dump_dir, dump ? std::filesystem::path(dir) : std::filesystem::path());
    EXPECT_EQ(o.lineinfo, lineinfo);
    EXPECT_EQ(o.ptxas_check, check);
  }
}

TEST(JitOptions, AFlagThatIsNeitherZeroNorOneIsAnErrorNamingTheVariable) {
  for (const char* variable : {"DILATRON_JIT_LINEINFO", "DILATRON_JIT_PTXAS_CHECK"}) {
    for (const char* value : {"yes", "2", " 1", "true", "10"}) {
      try {
        read({{variable, value}});
        ADD_FAILURE() << variable << "=" << value << " accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(variable), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(value), std::string::npos) << e.what();
      }
    }
  }
}

TEST(JitOptions, OnlyLineInfoChangesTheNvrtcOptions) {
  JitOptions plain, debug;
  debug.dump_dir = "/tmp/somewhere";
  debug.ptxas_check = true;
  EXPECT_EQ(compile_options("sm_90a", plain), compile_options("sm_90a", debug));
  EXPECT_FALSE(has(compile_options("sm_80", plain), "-lineinfo"));
  JitOptions lines;
  lines.lineinfo = true;
  const auto with = compile_options("sm_80", lines);
  EXPECT_TRUE(has(with, "-lineinfo"));
  EXPECT_EQ(with.front(), "--gpu-architecture=sm_80");
  EXPECT_NE(options_text(with), options_text(compile_options("sm_80", plain)));
}

TEST(PtxasCheck, RefusesAnySpillOrStackFrameAndNamesTheFigures) {
  std::mt19937 rng(42);
  for (int trial = 0; trial < 100; ++trial) {
    PtxasReport r;
    r.registers = int(rng() % 255) + 1;
    r.shared_bytes = int(rng() % 100000);
    r.spill_bytes = trial % 3 == 0 ? int(rng() % 512) : 0;
    r.stack_bytes = trial % 4 == 0 ? int(rng() % 512) : 0;
    const std::string why = ptxas_check_failure(r);
    EXPECT_EQ(why.empty(), r.spill_bytes == 0 && r.stack_bytes == 0) << why;
    if (!why.empty()) {
      EXPECT_NE(why.find(std::to_string(r.spill_bytes) + " bytes of spill"), std::string::npos) << why;
      EXPECT_NE(why.find(std::to_string(r.stack_bytes) + "-byte stack frame"), std::string::npos) << why;
    }
  }
}
