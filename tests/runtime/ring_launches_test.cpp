// The GPU ring executor's launch list on the CPU: walking every rank's step 0 (the tiled kernel's query
// tiles over a view starting at the rank's first row) and its attention_block launches the way the
// kernels index them must attend exactly the (head, query, key) pairs of dilated attention, each once;
// packed parts must tile each block's bytes; and tensors the GPU path cannot take fail before any device
// work.
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

constexpr std::int64_t kBlockM = 16;  // query tile rows: small, so segments take several tiles

// Step 0 as attention_partial_merge walks it: every query tile of the view of the rank's rows (origin =
// its first row), each query against the selected keys of its segment in the view (causal: up to it).
void walk_local(const RingPlan& plan, int rank, Pairs& pairs) {
  const RowRange rows = plan.per_rank[std::size_t(rank)].rows;
  for (int i = 0; i < int(plan.config.branches()); ++i) {
    const std::int64_t w = plan.config.segments[std::size_t(i)], r = plan.config.dilations[std::size_t(i)];
    for (std::int64_t h = 0; h < plan.shape.heads; ++h) {
      const std::int64_t o = head_offset(plan, h, i);
      if (o < 0) continue;
      for (std::int64_t x = 0; x < ix::query_tile_count(rows.size(), w, r, kBlockM, rows.begin); ++x) {
        const ix::QueryTile t = ix::query_tile(x, rows.size(), w, r, o, kBlockM, rows.begin);
        if (!t.active) continue;
        for (std::int64_t qi = t.q_first; qi < std::min(t.count, t.q_first + kBlockM); ++qi) {
          for (std::int64_t kj = 0; kj < t.count && (!plan.config.causal || kj <= qi); ++kj) {
            ++pairs[{h, w, r, rows.begin + t.first_row + qi * r, rows.begin + t.first_row + kj * r}];
          }
        }
      }
    }
  }
}

// A received block as attention_block walks one launch: the grid's query tiles, counted from the block's
// segment (AttendLaunch::segment), each query against every key of the part (all visible).
void walk_block(const RingPlan& plan, int rank, int branch, const AttendLaunch& l, Pairs& pairs) {
  const RowRange rows = plan.per_rank[std::size_t(rank)].rows;
  ASSERT_LE(rows.begin, l.q_begin);
  ASSERT_LE(l.q_end, rows.end) << "queries outside the shard";
  ASSERT_LT(l.head_begin, l.head_end);
  ASSERT_GT(l.key_count, 0);
  const std::int64_t queries = ix::selected_in(l.q_begin, l.q_end, l.w, l.offset, l.r).count;
  ASSERT_GT(queries, 0) << "a launch with no queries";
  const std::int64_t first_tile = l.segment * ix::query_tiles_per_segment(l.w, l.r, kBlockM);
  for (std::int64_t h = l.head_begin; h < l.head_end; ++h) {
    ASSERT_EQ(head_offset(plan, h, branch), l.offset);
    std::int64_t seen = 0;
    for (std::int64_t x = 0; x < ix::ceil_div(queries, kBlockM); ++x) {
      const ix::QueryTile t = ix::query_tile(first_tile + x, rows.size(), l.w, l.r, l.offset, kBlockM, rows.begin);
      ASSERT_TRUE(t.active);
      ASSERT_EQ(t.count, queries) << "the tile's segment is the block's";
      for (std::int64_t qi = t.q_first; qi < std::min(t.count, t.q_first + kBlockM); ++qi, ++seen) {
        const std::int64_t q = rows.begin + t.first_row + qi * l.r;
        ASSERT_TRUE(q >= l.q_begin && q < l.q_end);
        for (std::int64_t j = 0; j < l.key_count; ++j) {
          const std::int64_t k = l.key_first + j * l.r;
          ASSERT_TRUE(!plan.config.causal || k < q) << "a key the query may not see";
          ++pairs[{h, l.w, l.r, q, k}];
        }
      }
    }
    ASSERT_EQ(seen, queries);
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
      walk_local(plan, rank, got);
      for (const Compute& compute : plan.per_rank[std::size_t(rank)].computes) {
        const Block& block = plan.blocks[std::size_t(compute.block)];
        for (const AttendLaunch& l : block_launches(plan, rank, block)) {
          walk_block(plan, rank, block.branch, l, got);
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
