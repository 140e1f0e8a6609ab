// The GPU ring executor's launch list on the CPU: walking every rank's ring_attend launches the way the
// kernel does (query i = nth_selected(selected_before(q_begin) + i), keys from segment_keys or the
// received part, visible_keys for causality) must attend exactly the (head, query, key) pairs of
// dilated attention, each once; packed parts must tile each block's bytes; and tensors the GPU path
// cannot take fail before any device work.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <tuple>

#include <dilatron/ring.hpp>

#include "common/dtype.hpp"
#include "runtime/ring/device_launches.hpp"
#include "runtime/ring/host_communicator.hpp"
#include "templates/dilatron/index.cuh"
#include "tests/support/expect_error.hpp"
#include "tests/support/ring_case.hpp"

using namespace dilatron;
using namespace dilatron::ring;
namespace ix = dilatron::index;

namespace {

// (head, w, r, query row, key row) -> how many times attended. Branches with equal (w, r) give a head
// the same offset in longnet mode, so counting (rather than a set) keeps both.
using Pairs = std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t>, int>;

Pairs definition(const RingPlan& plan) {
  Pairs pairs;
  const std::int64_t n = plan.shape.seq_len;
  for (int i = 0; i < int(plan.config.branches()); ++i) {
    const std::int64_t w = plan.config.segments[std::size_t(i)], r = plan.config.dilations[std::size_t(i)];
    for (std::int64_t h = 0; h < plan.shape.heads; ++h) {
      const std::int64_t o = head_offset(plan, h, i);
      if (o < 0) continue;
      for (std::int64_t q = 0; q < n; ++q) {
        if (!ix::is_selected(q, w, o, r)) continue;
        for (std::int64_t k = q / w * w; k < std::min(n, (q / w + 1) * w); ++k) {
          if (ix::is_selected(k, w, o, r) && (!plan.config.causal || k <= q)) ++pairs[{h, w, r, q, k}];
        }
      }
    }
  }
  return pairs;
}

void walk(const RingPlan& plan, int rank, const AttendLaunch& l, Pairs& pairs) {
  const RowRange rows = plan.per_rank[std::size_t(rank)].rows;
  ASSERT_LE(rows.begin, l.q_begin);
  ASSERT_LE(l.q_end, rows.end) << "queries outside the shard";
  ASSERT_LT(l.head_begin, l.head_end);
  const std::int64_t before = ix::selected_before(l.q_begin, l.w, l.offset, l.r);
  const std::int64_t queries = ix::selected_in(l.q_begin, l.q_end, l.w, l.offset, l.r).count;
  ASSERT_GT(queries, 0) << "a launch with no queries";
  for (std::int64_t h = l.head_begin; h < l.head_end; ++h) {
    for (std::int64_t i = 0; i < queries; ++i) {
      const std::int64_t q = ix::nth_selected(before + i, l.w, l.offset, l.r);
      const ix::RowRun keys = l.key_count < 0 ? ix::segment_keys(q, l.w, l.offset, l.r, rows.begin, rows.end)
                                              : ix::RowRun{l.key_first, l.key_count};
      const std::int64_t visible = ix::visible_keys(q, keys.first, keys.count, l.r, plan.config.causal);
      for (std::int64_t j = 0; j < visible; ++j) ++pairs[{h, l.w, l.r, q, keys.first + j * l.r}];
    }
  }
}

}  // namespace

TEST(RingLaunches, AttendEveryPairOfTheDefinitionExactlyOnce) {
  std::mt19937_64 rng(7);
  int received = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const test::RingCase c = test::random_ring_case(rng, 90, 6);
    SCOPED_TRACE(fmt::format("trial {}: {}", trial, c.describe()));
    const RingPlan plan = make_ring_plan(c.config, c.shape, c.ranks);
    Pairs got;
    for (int rank = 0; rank < plan.ranks; ++rank) {
      for (const AttendLaunch& l : local_launches(plan, rank)) {
        ASSERT_LT(l.key_count, 0);
        walk(plan, rank, l, got);
      }
      for (const Compute& compute : plan.per_rank[std::size_t(rank)].computes) {
        for (const AttendLaunch& l : block_launches(plan, rank, plan.blocks[std::size_t(compute.block)])) {
          ASSERT_GE(l.key_count, 0);
          walk(plan, rank, l, got);
          ++received;
        }
      }
      if (HasFatalFailure()) return;
    }
    const Pairs want = definition(plan);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [pair, count] : want) {
      const auto it = got.find(pair);
      ASSERT_NE(it, got.end()) << "missing pair h" << std::get<0>(pair) << " q" << std::get<3>(pair) << " k" << std::get<4>(pair);
      ASSERT_EQ(it->second, count) << "h" << std::get<0>(pair) << " q" << std::get<3>(pair) << " k" << std::get<4>(pair);
    }
  }
  EXPECT_GT(received, 100) << "the cases must reach received blocks";
}

TEST(RingLaunches, PartsTileTheBlockInPlanOrder) {
  std::mt19937_64 rng(11);
  int blocks = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const test::RingCase c = test::random_ring_case(rng, 90, 6);
    const RingPlan plan = make_ring_plan(c.config, c.shape, c.ranks);
    for (const Block& block : plan.blocks) {
      const std::vector<std::int64_t> first = part_elements(block, plan.shape);
      ASSERT_EQ(first.size(), block.parts.size());
      std::int64_t element = 0;
      for (std::size_t p = 0; p < block.parts.size(); ++p) {
        ASSERT_EQ(first[p], element);
        element += plan.shape.batch * block.parts[p].rows * 2 * plan.shape.head_dim;
      }
      EXPECT_EQ(element * std::int64_t(dtype_size(plan.shape.dtype)), block.bytes) << c.describe();
      ++blocks;
    }
  }
  EXPECT_GT(blocks, 50);
}

TEST(RingDevice, TensorsTheGpuCannotTakeFailBeforeAnyDeviceWork) {
  Config config;
  config.segments = {8};
  config.dilations = {1};
  ring::HostGroup group(1, std::chrono::milliseconds(2000));
  const std::unique_ptr<ring::Communicator> comm = group.rank(0);
  RingDilatedAttention attention(config, *comm);
  std::vector<float> storage(2 * 16 * 4 * 16);  // never read: every call fails its checks first
  auto run = [&](DType dtype, DType out_dtype, std::int64_t d) {
    const TensorView q = TensorView::contiguous(storage.data(), dtype, {2, 16, 4, d});
    const TensorView kv = TensorView::contiguous(storage.data(), dtype, {2, 16, 2, d});
    attention.forward(16, q, kv, kv, TensorView::contiguous(storage.data(), out_dtype, {2, 16, 4, d}));
  };
  test::expect_error([&] { run(DType::f32, DType::f32, 8); }, {"float16 or bfloat16", "f32"});
  test::expect_error([&] { run(DType::f16, DType::f32, 8); }, {"out is f32", "f16"});
  test::expect_error([&] { run(DType::bf16, DType::bf16, 12); }, {"head dim 12"});
}
