// The one list of kernels a configuration needs, in launch order.
#include <gtest/gtest.h>

#include <algorithm>

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

TEST(RequiredKernels, LongnetAccumulatesEveryBranchInFp32AndRoundsOnce) {
  Workload w = longnet();
  w.config.causal = true;
  const auto specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 6u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(specs[i].op, i == 0 ? Op::attention_partial : Op::attention_partial_merge);
    EXPECT_EQ(specs[i].branches[0].w, w.config.segments[i]);
    EXPECT_EQ(specs[i].branches[0].r, w.config.dilations[i]);
    EXPECT_TRUE(specs[i].causal);
    EXPECT_EQ(specs[i].arch, "sm_90a");
    EXPECT_EQ(specs[i].tiles, (codegen::Tiles{128, 32, 4, 3}));
    EXPECT_NO_THROW(specs[i].validate());
  }
  EXPECT_EQ(specs[5].op, Op::finish_output);
  EXPECT_EQ(specs[5].dtype, DType::bf16);
  EXPECT_EQ(required_kernels(w), specs) << "one GPU: exactly the forward launches";
}

TEST(RequiredKernels, WithoutAFullBranchTheAccumulatorIsClearedFirst) {
  Workload w;
  w.config.segments = {512, 1024};
  w.config.dilations = {3, 2};
  w.head_dim = 64;
  const auto specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 4u);
  EXPECT_EQ(specs[0].op, Op::clear_output);
  EXPECT_EQ(specs[0].dtype, DType::f32) << "the accumulator, not O";
  EXPECT_EQ(specs[1].op, Op::attention_partial_merge);
  EXPECT_EQ(specs[1].branches[0].r, 3);
  EXPECT_EQ(specs[2].op, Op::attention_partial_merge);
  EXPECT_EQ(specs[3].op, Op::finish_output);
  EXPECT_EQ(specs[1].tiles, (codegen::Tiles{128, 64, 4, 3}));
}

TEST(RequiredKernels, ASingleBranchWritesTheOutputDirectly) {
  Workload w;
  w.config.segments = {4096};
  w.config.dilations = {1};
  auto specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].op, Op::attention_forward);
  w.config.dilations = {4};
  specs = forward_kernels(w);
  ASSERT_EQ(specs.size(), 2u) << "rows the branch skips are cleared first";
  EXPECT_EQ(specs[0].op, Op::clear_output);
  EXPECT_EQ(specs[0].dtype, DType::bf16);
  EXPECT_EQ(specs[1].op, Op::attention_forward);
}

TEST(RequiredKernels, TilesFollowTheHeadDimAndTheSharedMemoryOfTheArch) {
  Workload w;
  w.config.segments = {4096};
  w.config.dilations = {1};
  const auto tiles = [&](int head_dim, const char* arch) {
    w.head_dim = head_dim;
    w.arch = arch;
    return forward_kernels(w)[0].tiles;
  };
  // 32 rows per warp up to D = 128, 16 at 256; three stages where two CTAs still fit (one at D = 256).
  EXPECT_EQ(tiles(64, "sm_90a"), (codegen::Tiles{128, 64, 4, 3}));
  EXPECT_EQ(tiles(96, "sm_90a"), (codegen::Tiles{128, 32, 4, 3}));
  EXPECT_EQ(tiles(128, "sm_90a"), (codegen::Tiles{128, 32, 4, 3}));
  EXPECT_EQ(tiles(256, "sm_90a"), (codegen::Tiles{64, 64, 4, 3}));
  EXPECT_EQ(tiles(256, "sm_80"), (codegen::Tiles{64, 64, 4, 2}));
  EXPECT_EQ(tiles(256, "sm_86"), (codegen::Tiles{64, 32, 4, 2})) << "99 KiB: the key tile shrinks";
  for (int d : {64, 96, 128, 256}) {
    for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
      w.head_dim = d;
      w.arch = arch;
      EXPECT_NO_THROW(forward_kernels(w)[0].validate()) << d << " " << arch;
    }
  }
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
  EXPECT_EQ(forward_kernels(w).size(), 4u) << "clear, two merges, finish";
  EXPECT_EQ(required_kernels(w).size(), 3u);
}

TEST(RequiredKernels, TheRingAddsItsKernelsWhateverTheRows) {
  Workload w = longnet();
  w.config.causal = true;
  const std::vector<codegen::KernelSpec> forward = required_kernels(w);
  w.ranks = 4;
  const auto specs = required_kernels(w);
  const std::size_t branches = w.config.branches();
  const auto in = [](const std::vector<codegen::KernelSpec>& list, const codegen::KernelSpec& spec) {
    return std::find(list.begin(), list.end(), spec) != list.end();
  };
  // Row kernels whatever the plan, then per branch the rank's own rows and a received block's.
  const auto ring = ring_kernels(w);
  ASSERT_EQ(ring.size(), 3 + 2 * branches);
  EXPECT_EQ(ring[0].op, Op::ring_pack);
  EXPECT_EQ(ring[1].op, Op::finish_output);
  EXPECT_EQ(ring[2].op, Op::clear_output);
  EXPECT_EQ(ring[2].dtype, DType::f32) << "the ring accumulates in fp32";
  std::size_t new_local = 0;
  for (std::size_t i = 0; i < branches; ++i) {
    const codegen::KernelSpec &local = ring[3 + i], &block = ring[3 + branches + i];
    const codegen::BranchSpec branch{w.config.segments[i], w.config.dilations[i]};
    EXPECT_EQ(local.op, Op::attention_partial_merge);
    EXPECT_EQ(block.op, Op::attention_block);
    EXPECT_EQ(local.branches, std::vector{branch});
    EXPECT_EQ(block.branches, std::vector{branch});
    EXPECT_TRUE(local.causal) << "a rank's own rows follow the config";
    EXPECT_FALSE(block.causal) << "a block received is all visible";
    new_local += !in(forward, local);
  }
  EXPECT_EQ(new_local, 1u) << "the r = 1 branch writes the accumulator on one GPU, merges into it on the ring";
  std::size_t added = 0;
  for (const auto& spec : ring) {
    EXPECT_TRUE(in(specs, spec)) << spec.label();
    added += !in(forward, spec);
  }
  // finish_output is shared with the multi-branch forward pass: listed once, the forward's first.
  EXPECT_EQ(specs.size(), forward.size() + added);
  EXPECT_EQ(std::vector<codegen::KernelSpec>(specs.begin(), specs.begin() + long(forward.size())), forward);

  // The backward on the ring adds its own, only with --backward.
  const auto ring_backward = ring_backward_kernels(w);
  ASSERT_EQ(ring_backward.size(), 2 + 2 * branches);
  EXPECT_EQ(ring_backward[0].op, Op::gradient_prepare);
  EXPECT_EQ(ring_backward[1].op, Op::ring_unpack_add);
  EXPECT_EQ(ring_backward[1].dtype, DType::f32) << "partials come back in fp32";
  for (std::size_t i = 0; i < branches; ++i) {
    EXPECT_EQ(ring_backward[2 + i].op, Op::attention_backward);
    EXPECT_TRUE(ring_backward[2 + i].causal);
    EXPECT_EQ(ring_backward[2 + branches + i].op, Op::attention_block_backward);
    EXPECT_FALSE(ring_backward[2 + branches + i].causal);
    EXPECT_FALSE(in(specs, ring_backward[2 + branches + i]));
  }
  w.backward = true;
  const auto with_backward = required_kernels(w);
  for (const auto& spec : ring_backward) EXPECT_TRUE(in(with_backward, spec)) << spec.label();
}

TEST(RequiredKernels, RejectsWhatCannotBeBuilt) {
  Workload w;
  w.config.segments = {64};
  w.config.dilations = {1};
  w.head_dim = 32;
  EXPECT_THROW(required_kernels(w), Error);
  w.head_dim = 64;
  w.arch = "sm_75";
  EXPECT_THROW(required_kernels(w), Error);
}
