// The one list of kernels a configuration needs, in launch order.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include "autotune/required_kernels.hpp"

using namespace dilatron;
using namespace dilatron::autotune;
using codegen::Op;

namespace {

Workload longnet() {
  Workload w;
  w.config.segments = {2048, 4096, 8192, 16384, 32768};
  w.config.dilations = {1, 2, 4, 6, 12};
  return w;
}

}  // namespace

TEST(RequiredKernels, LongnetRunsTheFullBranchFirstThenMergesTheOthers) {
  Workload w = longnet();
  w.config.causal = true;
  const auto specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(specs[i].op, i == 0 ? Op::attention_forward : Op::attention_forward_merge);
    EXPECT_EQ(specs[i].branches[0].w, w.config.segments[i]);
    EXPECT_EQ(specs[i].branches[0].r, w.config.dilations[i]);
    EXPECT_TRUE(specs[i].causal);
    EXPECT_EQ(specs[i].arch, "sm_90a");
    EXPECT_EQ(specs[i].tiles, (codegen::Tiles{64, 64, 4, 2}));
    EXPECT_NO_THROW(specs[i].validate());
  }
  EXPECT_EQ(required_kernels(w), specs) << "one GPU: exactly the forward launches";
}

TEST(RequiredKernels, WithoutAFullBranchTheOutputIsClearedFirst) {
  Workload w;
  w.config.segments = {512, 1024};
  w.config.dilations = {2, 3};
  w.head_dim = 64;
  const auto specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 3u);
  EXPECT_EQ(specs[0].op, Op::clear_output);
  EXPECT_EQ(specs[1].op, Op::attention_forward_merge);
  EXPECT_EQ(specs[2].op, Op::attention_forward_merge);
  EXPECT_EQ(specs[1].tiles, (codegen::Tiles{64, 64, 4, 3}));
}

TEST(RequiredKernels, HeadGroupsLaunchOncePerGroup) {
  Workload w;
  w.config.segments = {64, 64};
  w.config.dilations = {1, 2};
  w.config.mode = Mode::head_groups;
  const auto specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 3u) << "clear (group 1 skips rows), then one launch per group";
  EXPECT_EQ(specs[0].op, Op::clear_output);
  EXPECT_EQ(specs[1].group, 0);
  EXPECT_EQ(specs[2].group, 1);
  EXPECT_EQ(specs[2].groups, 2);
  EXPECT_EQ(specs[2].op, Op::attention_forward);
  w.config.dilations = {1, 1};
  EXPECT_EQ(forward_kernels(w).size(), 2u) << "every row selected: nothing to clear";
}

TEST(RequiredKernels, EqualLongnetBranchesLaunchTwiceButCompileOnce) {
  Workload w;
  w.config.segments = {64, 64};
  w.config.dilations = {2, 2};
  EXPECT_EQ(forward_kernels(w).size(), 3u);
  EXPECT_EQ(required_kernels(w).size(), 2u);
}

TEST(RequiredKernels, TheRingAddsRowMovesAndTheMerge) {
  Workload w = longnet();
  w.ranks = 4;
  const auto specs = required_kernels(w);
  ASSERT_EQ(specs.size(), 16u);
  EXPECT_EQ(specs[5].op, Op::pack_rows);
  EXPECT_EQ(specs[6].op, Op::unpack_rows);
  EXPECT_FALSE(specs[5].causal) << "causal belongs to attention kernels only";
  EXPECT_EQ(specs.back().op, Op::merge_partials);
}

TEST(RequiredKernels, RejectsWhatCannotBeBuilt) {
  Workload w;
  w.config.segments = {64};
  w.config.dilations = {1};
  w.head_dim = 96;
  EXPECT_THROW(required_kernels(w), Error);
  w.head_dim = 64;
  w.arch = "sm_75";
  EXPECT_THROW(required_kernels(w), Error);
}
