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

TEST(RequiredKernels, TheRingAddsItsFourKernelsWhateverTheBranches) {
  Workload w = longnet();
  const std::size_t forward = required_kernels(w).size();
  w.ranks = 4;
  const auto specs = required_kernels(w);
  ASSERT_EQ(specs.size(), forward + 4);
  EXPECT_EQ(specs[forward].op, Op::ring_pack);
  EXPECT_EQ(specs[forward + 1].op, Op::ring_attend);
  EXPECT_EQ(specs[forward + 2].op, Op::ring_finish);
  EXPECT_EQ(specs[forward + 3].op, Op::clear_output);
  EXPECT_EQ(specs[forward + 3].dtype, DType::f32) << "the ring accumulates in fp32";
  for (std::size_t i = forward; i < specs.size(); ++i) {
    EXPECT_TRUE(specs[i].branches.empty() && !specs[i].causal) << "plan details are launch arguments: " << specs[i].label();
  }
  w.config.segments.push_back(1 << 16);
  w.config.dilations.push_back(16);
  EXPECT_EQ(required_kernels(w).size(), required_kernels([&] { Workload one = w; one.ranks = 1; return one; }()).size() + 4);
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
