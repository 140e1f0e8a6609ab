// `dilatron tune` as an operator meets it: the dry run on a machine without a GPU, and bad command lines.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/driver.hpp"
#include "tests/support/cli.hpp"

using namespace dilatron::test;

namespace {

std::string in(const TempDir& tmp) { return " --cache-dir '" + (tmp / "cache").string() + "'"; }

const nlohmann::json* candidate(const nlohmann::json& kernel, const std::string& tiles) {
  for (const auto& c : kernel["candidates"]) {
    if (c["tiles"] == tiles) return &c;
  }
  return nullptr;
}

}  // namespace

TEST(AutotuneCli, ADryRunListsPrunesAndCompilesWithoutTimingOrStoring) {
  TempDir tmp;
  const std::string config = " --arch sm_90a --segments 2048,4096 --dilations 1,2 --head-dim 128 --causal";
  const CliResult r = run_cli(tmp, "tune --dry-run --json --tiles 64x64x4x2,128x128x4x2,128x64x4x3" + config + in(tmp));
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  EXPECT_TRUE(out["dry_run"].get<bool>());
  EXPECT_EQ(out["arch"], "sm_90a");
  ASSERT_EQ(out["kernels"].size(), 2u) << "one per attention kernel (finish_output has no tiles to tune)";
  int compiled = 0;
  for (const auto& kernel : out["kernels"]) {
    SCOPED_TRACE(kernel["kernel"].get<std::string>());
    EXPECT_NE(kernel["spec"].get<std::string>().find("tiles=0x0"), std::string::npos);
    EXPECT_FALSE(kernel.contains("winner")) << "a dry run times nothing";
    ASSERT_EQ(kernel["candidates"].size(), 4u) << "the default and the three asked for";
    const auto& first = kernel["candidates"][0];
    EXPECT_TRUE(first["default"].get<bool>());
    EXPECT_EQ(first["tiles"], kernel["default"]);
    EXPECT_EQ(first["status"], "compiled, default");
    EXPECT_GT(first["registers"].get<int>(), 0);
    const nlohmann::json* too_wide = candidate(kernel, "128x128x4x2");
    ASSERT_NE(too_wide, nullptr);
    EXPECT_NE((*too_wide)["status"].get<std::string>().find("pruned: 32 rows per warp"), std::string::npos);
    EXPECT_FALSE(too_wide->contains("registers")) << "pruned before compiling";
    for (const char* tiles : {"64x64x4x2", "128x64x4x3"}) {
      const nlohmann::json* c = candidate(kernel, tiles);
      ASSERT_NE(c, nullptr) << tiles;
      ASSERT_TRUE(c->contains("spill_bytes")) << tiles;
      // Whatever ptxas decides, a candidate that spills is never timed.
      const std::string status = (*c)["status"];
      EXPECT_EQ((*c)["spill_bytes"].get<int>() > 0, status.starts_with("pruned: ptxas")) << tiles << ": " << status;
      EXPECT_FALSE(c->contains("median_us"));
    }
    for (const auto& c : kernel["candidates"]) compiled += c.contains("registers");
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "cache" / "tuning.json")) << "a dry run stores nothing";
  std::size_t entries = 0;
  for (const auto& item : std::filesystem::directory_iterator(tmp / "cache")) entries += item.path().extension() == ".kernel";
  EXPECT_EQ(entries, std::size_t(compiled)) << "compiled through the cache: a later tune finds them there";

  const CliResult table = run_cli(tmp, "tune --dry-run --tiles 64x64x4x2" + config + in(tmp));
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("candidate"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("attention_partial_merge bf16 d128 w4096 r2 causal tile 128x32 4w 3s sm_90a"), std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("dry run: nothing timed or stored (2 kernels for sm_90a)"), std::string::npos) << table.out;
}

TEST(AutotuneCli, BadCommandLinesAndAMissingGpuAreNamedBeforeAnyWork) {
  TempDir tmp;
  const std::string config = " --segments 2048 --dilations 1" + in(tmp);
  struct Case {
    const char* args;
    const char* says;
  };
  for (const Case& c : {Case{"--dry-run --arch sm_90a --tiles 128x64", "--tiles: tiles '128x64'"},
                        Case{"--dry-run --arch sm_90a --iters 5", "--iters"},
                        Case{"--dry-run --arch sm_90a --heads 16 --kv-heads 3", "--kv-heads 3 does not divide --heads 16"},
                        Case{"--dry-run --arch sm_90a --ranks 2", "--ranks"},
                        Case{"--dry-run --arch sm_90a --head-dim 80", "head_dim 80"},
                        Case{"--dry-run --arch hopper", "'hopper'"}}) {
    const CliResult r = run_cli(tmp, std::string("tune ") + c.args + config);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.args << ": " << r.err;
  }
  const CliResult groups = run_cli(tmp, "tune --dry-run --arch sm_90a --mode head_groups --heads 1 --segments 64,64 --dilations 1,2");
  EXPECT_EQ(groups.status, 2);
  EXPECT_NE(groups.err.find("at least one head per branch"), std::string::npos) << groups.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "cache")) << "nothing is created for a command line that cannot run";
  if (!dilatron::driver::probe().devices.empty()) return;
  const CliResult no_gpu = run_cli(tmp, "tune" + config);
  EXPECT_EQ(no_gpu.status, 1) << no_gpu.err;
  EXPECT_NE(no_gpu.err.find("tune times candidates on a GPU and this machine has none"), std::string::npos) << no_gpu.err;
  EXPECT_NE(no_gpu.err.find("--dry-run"), std::string::npos) << no_gpu.err;
  const CliResult no_arch = run_cli(tmp, "tune --dry-run" + config);
  EXPECT_EQ(no_arch.status, 2);
  EXPECT_NE(no_arch.err.find("--arch is required"), std::string::npos) << no_arch.err;
}
