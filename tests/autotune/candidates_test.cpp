// The autotuner's candidate space and its pruning rules.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "autotune/candidates.hpp"
#include "autotune/policy.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::autotune;
using codegen::Tiles;

namespace {

codegen::KernelSpec attention(int head_dim, const char* arch, Tiles tiles) {
  codegen::KernelSpec s;
  s.op = codegen::Op::attention_forward;
  s.head_dim = head_dim;
  s.arch = arch;
  s.branches = {{4096, 2}};
  s.tiles = tiles;
  return s;
}

}  // namespace

TEST(AutotuneCandidates, TilesTextRoundTripsAndRejectsMalformedText) {
  std::mt19937 rng(3);
  for (int i = 0; i < 50; ++i) {
    const Tiles t{int(rng() % 512) + 1, int(rng() % 256) + 1, int(rng() % 16) + 1, int(rng() % 4) + 1};
    EXPECT_EQ(parse_tiles(tiles_text(t)), t) << tiles_text(t);
  }
  EXPECT_EQ(tiles_text({128, 64, 4, 3}), "128x64x4x3");
  for (const char* bad : {"", "128x64x4", "128x64x4x3x1", "128x64x4x", "x64x4x3", "128x-64x4x3", "128x0x4x3", "128*64*4*3",
                          "128x64x4x3 ", "abc"}) {
    test::expect_error([&] { parse_tiles(bad); }, {"expected BLOCK_MxBLOCK_NxWARPSxSTAGES"});
  }
}

TEST(AutotuneCandidates, TheSpaceHoldsEveryShapeOnceAndTheDefaults) {
  const std::vector<Tiles> space = candidate_tiles();
  EXPECT_EQ(space.size(), 36u);
  std::set<std::string> distinct;
  for (const Tiles& t : space) distinct.insert(tiles_text(t));
  EXPECT_EQ(distinct.size(), space.size());
  for (int d : {64, 96, 128, 256}) {
    for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
      const Tiles chosen = default_tiles(attention(d, arch, {}));
      EXPECT_NE(std::find(space.begin(), space.end(), chosen), space.end()) << d << " " << arch << " " << tiles_text(chosen);
      EXPECT_EQ(static_pruning(attention(d, arch, chosen)), "") << "the heuristic passes its own rules: " << d << arch;
    }
  }
}

TEST(AutotuneCandidates, StaticPruningNamesTheRuleACandidateBreaks) {
  // The register rule: 32 rows per warp cannot hold D = 128 plus 128 scores per row.
  EXPECT_NE(static_pruning(attention(128, "sm_90a", {128, 128, 4, 2})).find("more registers than a thread has"),
            std::string::npos);
  // Shared memory: 64 + 2 * 3 * 128 rows of D = 256 are 416 KiB.
  EXPECT_NE(static_pruning(attention(256, "sm_90a", {64, 128, 4, 3})).find("bytes of shared memory"), std::string::npos);
  // Fits one block, but one 2-warp CTA per SM leaves schedulers idle.
  const std::string occupancy = static_pruning(attention(128, "sm_90a", {32, 128, 2, 3}));
  EXPECT_NE(occupancy.find("2 warps per SM by shared memory"), std::string::npos) << occupancy;
  EXPECT_EQ(occupancy.find("invalid kernel spec"), std::string::npos) << "the label is the table's job: " << occupancy;
  EXPECT_EQ(static_pruning(attention(128, "sm_90a", {128, 32, 4, 3})), "");
  // The same tiles are fine on one arch and too big on another.
  EXPECT_EQ(static_pruning(attention(128, "sm_90a", {128, 64, 4, 3})), "");
  EXPECT_NE(static_pruning(attention(128, "sm_86", {128, 64, 4, 3})), "");
}

TEST(AutotuneCandidates, OccupancyCountsSharedMemoryRegistersAndThreads) {
  // 128x32, 3 stages, D = 128: 80 KiB per CTA, two per SM on sm_90a (228 KiB), one on sm_86 (100 KiB).
  EXPECT_EQ(ctas_per_sm(attention(128, "sm_90a", {128, 32, 4, 3})), 2);
  EXPECT_EQ(ctas_per_sm(attention(128, "sm_86", {128, 32, 4, 3})), 1);
  // 237 registers: 7680 per warp, 8 warps per SM, two 4-warp CTAs.
  EXPECT_EQ(ctas_per_sm(attention(128, "sm_90a", {128, 32, 4, 3}), 237), 2);
  // A small tile: 21 KiB of shared memory with the system's share allow 10 CTAs; 64 registers (32 warps)
  // do not limit them, 255 registers (8 warps) leave 4 CTAs of 2 warps.
  EXPECT_EQ(ctas_per_sm(attention(64, "sm_90a", {32, 32, 2, 2}), 64), 10);
  EXPECT_EQ(ctas_per_sm(attention(64, "sm_90a", {32, 32, 2, 2}), 255), 4);
  // Kernels without shared memory are bounded by threads.
  codegen::KernelSpec clear;
  clear.op = codegen::Op::clear_output;
  clear.tiles = {0, 0, 4, 0};
  EXPECT_EQ(ctas_per_sm(clear), 16);
}

TEST(AutotuneCandidates, PtxasPruningRefusesLocalMemory) {
  const codegen::KernelSpec spec = attention(128, "sm_90a", {128, 64, 4, 3});
  EXPECT_EQ(ptxas_pruning(spec, {200, 0, 0, 0}), "");
  EXPECT_NE(ptxas_pruning(spec, {255, 40, 0, 16}).find("40 bytes of spill"), std::string::npos);
  EXPECT_NE(ptxas_pruning(spec, {255, 0, 0, 8}).find("8-byte stack frame"), std::string::npos);
}
