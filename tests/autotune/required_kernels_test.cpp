// The one list of kernels a configuration needs.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include "autotune/required_kernels.hpp"

using namespace dilatron;
using namespace dilatron::autotune;
using codegen::Op;

TEST(RequiredKernels, LongnetNeedsPackAndUnpackPerBranchAndOneMerge) {
  Workload w;
  w.config.segments = {2048, 4096, 8192, 16384, 32768};
  w.config.dilations = {1, 2, 4, 6, 12};
  const auto specs = required_kernels(w);
  ASSERT_EQ(specs.size(), 11u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(specs[2 * i].op, Op::pack_rows);
    EXPECT_EQ(specs[2 * i + 1].op, Op::unpack_rows);
    EXPECT_EQ(specs[2 * i].branches[0].w, w.config.segments[i]);
    EXPECT_EQ(specs[2 * i].branches[0].r, w.config.dilations[i]);
  }
  EXPECT_EQ(specs.back().op, Op::merge_partials);
  for (const auto& s : specs) {
    EXPECT_EQ(s.arch, "sm_90a");
    EXPECT_EQ(s.dtype, DType::bf16);
    EXPECT_EQ(s.head_dim, 128);
    EXPECT_NO_THROW(s.validate());
  }
}

TEST(RequiredKernels, LongnetSharesKernelsBetweenEqualBranchesButHeadGroupsDoNot) {
  Workload w;
  w.config.segments = {64, 64};
  w.config.dilations = {2, 2};
  EXPECT_EQ(required_kernels(w).size(), 3u) << "longnet offsets do not depend on the branch index";
  w.config.mode = Mode::head_groups;
  const auto specs = required_kernels(w);
  ASSERT_EQ(specs.size(), 5u) << "each head group selects different heads";
  EXPECT_EQ(specs[0].group, 0);
  EXPECT_EQ(specs[2].group, 1);
  EXPECT_EQ(specs[2].groups, 2);
}

TEST(RequiredKernels, RejectsWhatCannotBeBuilt) {
  Workload w;
  w.config.segments = {64};
  w.config.dilations = {1};
  w.head_dim = 100;
  EXPECT_THROW(required_kernels(w), Error);
  w.head_dim = 64;
  w.arch = "sm_75";
  EXPECT_THROW(required_kernels(w), Error);
}
