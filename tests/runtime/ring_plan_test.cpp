// The ring's partition and plan against enumeration from the definition (docs/SEMANTICS.md): rows,
// segments, offsets and attended pairs are walked one by one here, sharing no code with the plan.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/ring/plan.hpp"
#include "tests/support/expect_error.hpp"
#include "tests/support/ring_case.hpp"

using namespace dilatron;
using namespace dilatron::ring;
using namespace dilatron::test;
using i64 = std::int64_t;

namespace {

// Rank p's first row: N / P rows each, the first N % P ranks one more.
std::vector<i64> starts_of(i64 n, int ranks) {
  std::vector<i64> starts{0};
  for (int p = 0; p < ranks; ++p) starts.push_back(starts.back() + n / ranks + (p < n % ranks ? 1 : 0));
  return starts;
}

int owner_of(i64 row, const std::vector<i64>& starts) {
  int p = 0;
  while (starts[std::size_t(p) + 1] <= row) ++p;
  return p;
}

// Head h's offset in branch i, or -1 when it does not take part (SEMANTICS.md, written out again).
i64 offset_of(const Config& c, i64 h, i64 heads, std::size_t i) {
  const i64 r = c.dilations[i];
  if (c.mode == Mode::longnet) return h / ((heads + r - 1) / r);
  const i64 groups = i64(c.branches());
  i64 begin = 0;
  for (i64 g = 0; g < groups; ++g) {
    const i64 size = heads / groups + (g < heads % groups ? 1 : 0);
    if (h >= begin && h < begin + size) return g == i64(i) ? i64(i) % r : -1;
    begin += size;
  }
  return -1;
}

// A message as the definition needs it: the rows of (branch, segment) that `from` holds go to `to`.
using Message = std::tuple<int, i64, int, int, int>;  // branch, segment, from, to, step
using PartTuple = std::tuple<i64, i64, i64, i64>;     // kv head, offset, first row, rows
struct Expected {
  std::map<std::tuple<int, i64, int>, std::vector<PartTuple>> blocks;  // (branch, segment, owner) -> parts
  std::map<std::tuple<int, i64, int>, RowRange> held;
  std::set<Message> messages;
  int steps = 0;
};

Expected enumerate(const RingCase& c) {
  const i64 n = c.shape.seq_len, heads = c.shape.heads, group_heads = heads / c.shape.kv_heads;
  const auto starts = starts_of(n, c.ranks);
  Expected e;
  for (std::size_t i = 0; i < c.config.branches(); ++i) {
    const i64 w = c.config.segments[i], r = c.config.dilations[i];
    auto selected = [&](i64 row, i64 seg_begin, i64 o) { return row - seg_begin >= o && (row - seg_begin - o) % r == 0; };
    for (i64 s = 0; s * w < n; ++s) {
      const i64 begin = s * w, end = std::min(begin + w, n);
      const int first = owner_of(begin, starts), last = owner_of(end - 1, starts);
      if (first == last) continue;
      e.steps = std::max(e.steps, last - first);
      std::set<std::pair<i64, i64>> pairs;
      for (i64 h = 0; h < heads; ++h) {
        if (const i64 o = offset_of(c.config, h, heads, i); o >= 0) pairs.insert({h / group_heads, o});
      }
      for (int m = first; m <= last; ++m) {
        auto& parts = e.blocks[{int(i), s, m}];
        e.held[{int(i), s, m}] = {std::max(begin, starts[std::size_t(m)]), std::min(end, starts[std::size_t(m) + 1])};
        for (const auto& [kv, o] : pairs) {
          i64 first_row = -1, rows = 0;
          for (i64 row = begin; row < end; ++row) {
            if (owner_of(row, starts) != m || !selected(row, begin, o)) continue;
            if (rows++ == 0) first_row = row;
          }
          if (rows > 0) parts.emplace_back(kv, o, first_row, rows);
        }
      }
      for (int a = first; a <= last; ++a) {
        for (int b = first; b <= last; ++b) {
          bool attends = false;
          for (i64 h = 0; h < heads && !attends; ++h) {
            const i64 o = offset_of(c.config, h, heads, i);
            for (i64 q = begin; q < end && o >= 0 && !attends; ++q) {
              for (i64 k = begin; k < end && !attends; ++k) {
                attends = owner_of(q, starts) == b && owner_of(k, starts) == a && selected(q, begin, o) &&
                          selected(k, begin, o) && (!c.config.causal || k <= q);
              }
            }
          }
          const int g = last - first + 1;
          if (a != b && attends) e.messages.insert({int(i), s, a, b, ((b - a) % g + g) % g});
        }
      }
    }
  }
  return e;
}

i64 element_size(DType d) { return d == DType::f32 ? 4 : 2; }

Config config(std::vector<i64> w, std::vector<i64> r, bool causal = false) {
  Config c;
  c.segments = std::move(w);
  c.dilations = std::move(r);
  c.causal = causal;
  return c;
}

i64 total_transfers(const RingPlan& plan) {
  i64 n = 0;
  for (const RankPlan& rp : plan.per_rank) n += i64(rp.sends.size());
  return n;
}

}  // namespace

TEST(Partition, ShardsDifferByAtMostOneRowAndTheFirstRanksAreLarger) {
  std::mt19937_64 rng(7);
  std::vector<std::pair<i64, int>> cases;
  for (i64 n = 1; n <= 70; ++n) {
    for (int p = 1; p <= n; ++p) cases.emplace_back(n, p);
  }
  for (int k = 0; k < 200; ++k) {
    const i64 n = std::uniform_int_distribution<i64>(1, i64(1) << 40)(rng);
    cases.emplace_back(n, int(std::uniform_int_distribution<i64>(1, std::min<i64>(n, 4096))(rng)));
  }
  for (const auto& [n, ranks] : cases) {
    const i64 base = n / ranks, extra = n % ranks;
    i64 next = 0;
    for (int p = 0; p < ranks; ++p) {
      const RowRange s = shard(n, ranks, p);
      ASSERT_EQ(s.begin, next) << n << " rows, " << ranks << " ranks, rank " << p;
      ASSERT_EQ(s.size(), p < extra ? base + 1 : base) << n << " rows, " << ranks << " ranks, rank " << p;
      next = s.end;
    }
    ASSERT_EQ(next, n);
  }
}

TEST(Partition, OwnerInvertsShard) {
  for (i64 n = 1; n <= 60; ++n) {
    for (int ranks = 1; ranks <= n; ++ranks) {
      const auto starts = starts_of(n, ranks);
      for (i64 row = 0; row < n; ++row) ASSERT_EQ(owner(row, n, ranks), owner_of(row, starts)) << n << " " << ranks << " " << row;
    }
  }
  std::mt19937_64 rng(8);
  for (int k = 0; k < 500; ++k) {
    const i64 n = std::uniform_int_distribution<i64>(1, i64(1) << 42)(rng);
    const int ranks = int(std::uniform_int_distribution<i64>(1, std::min<i64>(n, 100000))(rng));
    const int p = int(std::uniform_int_distribution<i64>(0, ranks - 1)(rng));
    const RowRange s = shard(n, ranks, p);
    ASSERT_EQ(owner(s.begin, n, ranks), p);
    ASSERT_EQ(owner(s.end - 1, n, ranks), p);
    if (p > 0) {
      ASSERT_EQ(owner(s.begin - 1, n, ranks), p - 1);
    }
  }
}

// Blocks, parts, bytes, messages, steps and memory of random small plans, each against the definition.
TEST(RingPlan, AgreesWithEnumerationFromTheDefinition) {
  std::mt19937_64 rng(2024);
  int spanning = 0;
  for (int trial = 0; trial < 400; ++trial) {
    RingCase c = random_ring_case(rng, 48, 7);
    if (trial % 3 == 0) c.shape.dtype = DType::f32;
    SCOPED_TRACE(c.describe());
    const RingPlan plan = make_ring_plan(c.config, c.shape, c.ranks);
    const Expected e = enumerate(c);
    const i64 row_bytes = c.shape.batch * 2 * c.shape.head_dim * element_size(c.shape.dtype);

    ASSERT_EQ(plan.blocks.size(), e.blocks.size());
    std::map<int, i64> bytes_of;  // by block index
    for (std::size_t b = 0; b < plan.blocks.size(); ++b) {
      const Block& block = plan.blocks[b];
      const auto key = std::tuple{block.branch, block.segment, block.owner};
      ASSERT_TRUE(e.blocks.count(key)) << "block " << b << " of branch " << block.branch << " segment " << block.segment;
      std::vector<PartTuple> parts;
      i64 rows = 0;
      for (const Block::Part& p : block.parts) {
        parts.emplace_back(p.kv_head, p.offset, p.first_row, p.rows);
        rows += p.rows;
      }
      EXPECT_EQ(parts, e.blocks.at(key)) << "block " << b;
      EXPECT_EQ(block.rows_held, e.held.at(key)) << "block " << b;
      EXPECT_EQ(block.bytes, rows * row_bytes) << "block " << b;
      bytes_of[int(b)] = block.bytes;
    }
    spanning += !e.blocks.empty();

    std::set<Message> sends, receives, computes;
    for (const RankPlan& rp : plan.per_rank) {
      EXPECT_EQ(rp.rows, (RowRange{starts_of(c.shape.seq_len, c.ranks)[std::size_t(rp.rank)],
                                   starts_of(c.shape.seq_len, c.ranks)[std::size_t(rp.rank) + 1]}));
      i64 sent = 0, got = 0;
      std::vector<i64> per_step(std::size_t(e.steps) + 1, 0);
      for (const Transfer& t : rp.sends) {
        const Block& b = plan.blocks[std::size_t(t.block)];
        sends.insert({b.branch, b.segment, rp.rank, t.peer, t.step});
        sent += b.bytes;
        per_step[std::size_t(t.step)] += b.bytes;
      }
      for (const Transfer& t : rp.receives) {
        const Block& b = plan.blocks[std::size_t(t.block)];
        receives.insert({b.branch, b.segment, t.peer, rp.rank, t.step});
        got += b.bytes;
        per_step[std::size_t(t.step)] += b.bytes;
      }
      for (std::size_t k = 0; k < rp.computes.size(); ++k) {
        const Compute& x = rp.computes[k];
        const Block& b = plan.blocks[std::size_t(x.block)];
        computes.insert({b.branch, b.segment, b.owner, rp.rank, x.step});
        if (k > 0) {
          EXPECT_LE(rp.computes[k - 1].step, x.step) << "computes out of step order on rank " << rp.rank;
        }
      }
      EXPECT_EQ(rp.send_bytes, sent);
      EXPECT_EQ(rp.recv_bytes, got);
      // Memory: the executor's buffers (GpuRing.RanksAllocateExactlyTheWorkspaceThePlanStates counts
      // them on the emulated device), from the message lists.
      const Shape& s = c.shape;
      const i64 rows = rp.rows.size(), es = element_size(s.dtype);
      const i64 q = s.batch * rows * s.heads * s.head_dim, kv = s.batch * rows * s.kv_heads * s.head_dim;
      const i64 stats = s.batch * rows * s.heads * 4, most = *std::max_element(per_step.begin(), per_step.end());
      EXPECT_EQ(rp.forward_workspace_bytes, q * 4 + stats + 2 * most) << "rank " << rp.rank;
      EXPECT_EQ(rp.memory_bytes, (2 * q + 2 * kv) * es + stats + rp.forward_workspace_bytes) << "rank " << rp.rank;
      EXPECT_EQ(rp.backward_workspace_bytes,
                q * 4 + stats + (sent + got) + 2 * (most / es * 4) + q * es + stats + q * 4 + 2 * kv * 4) << "rank " << rp.rank;
      EXPECT_EQ(rp.backward_memory_bytes, (3 * q + 4 * kv) * es + rp.backward_workspace_bytes) << "rank " << rp.rank;
    }
    EXPECT_EQ(sends, e.messages);
    EXPECT_EQ(receives, e.messages);
    EXPECT_EQ(computes, e.messages);
    EXPECT_EQ(plan.steps, e.steps);
    if (HasFailure()) return;
  }
  EXPECT_GT(spanning, 200) << "too few random cases had a segment spanning ranks to mean anything";
}

TEST(RingPlan, LocalSegmentsMoveNothing) {
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    const int ranks = int(std::uniform_int_distribution<i64>(1, 16)(rng));
    const i64 per_rank = std::uniform_int_distribution<i64>(1, 12)(rng) * 12;
    Config c;
    for (const i64 w : {1, 2, 3, 4, 6, 12}) {  // each divides every shard
      if (std::uniform_int_distribution<int>(0, 1)(rng)) continue;
      c.segments.push_back(w);
      c.dilations.push_back(std::uniform_int_distribution<i64>(1, 20)(rng));
    }
    if (c.segments.empty()) c.segments = {per_rank}, c.dilations = {5};
    c.causal = trial % 2 == 1;
    const RingPlan plan = make_ring_plan(c, {2, per_rank * ranks, 4, 2, 16, DType::bf16}, ranks);
    EXPECT_EQ(plan.steps, 0);
    EXPECT_TRUE(plan.blocks.empty());
    for (const RankPlan& rp : plan.per_rank) {
      EXPECT_TRUE(rp.sends.empty() && rp.receives.empty() && rp.computes.empty());
      EXPECT_EQ(rp.send_bytes + rp.recv_bytes, 0);
    }
  }
  // One rank holds every segment whole, however long.
  const RingPlan single = make_ring_plan(config({7, 1000, 3}, {2, 9, 1}, true), {1, 997, 8, 2, 64, DType::f16}, 1);
  EXPECT_EQ(single.steps, 0);
  EXPECT_TRUE(single.blocks.empty());
  EXPECT_EQ(single.per_rank.size(), 1u);
}

// One branch over the whole sequence, every kv head read at one offset: each rank gets 1/r of every
// other rank's K and V rows.
TEST(RingPlan, OneDenseBranchReceivesTheDilatedRowsOfEveryOtherRank) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 100; ++trial) {
    auto pick = [&](i64 lo, i64 hi) { return std::uniform_int_distribution<i64>(lo, hi)(rng); };
    const int ranks = int(pick(1, 12));
    const i64 r = pick(1, 8), heads = r * pick(1, 3), n = ranks * r * pick(1, 10);
    const Shape shape{pick(1, 3), n, heads, heads, pick(1, 64) * 2, trial % 2 ? DType::bf16 : DType::f16};
    const RingPlan plan = make_ring_plan(config({n}, {r}), shape, ranks);
    const i64 expected = (ranks - 1) * (n / ranks) / r * heads * shape.head_dim * 2 * 2 * shape.batch;
    EXPECT_EQ(plan.steps, ranks - 1);
    for (const RankPlan& rp : plan.per_rank) {
      EXPECT_EQ(rp.recv_bytes, expected) << "rank " << rp.rank << " of " << ranks << ", r = " << r;
      EXPECT_EQ(rp.send_bytes, expected) << "rank " << rp.rank << " of " << ranks << ", r = " << r;
    }
  }
}

TEST(RingPlan, CausalSendsOnlyToLaterRanks) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 100; ++trial) {
    auto pick = [&](i64 lo, i64 hi) { return std::uniform_int_distribution<i64>(lo, hi)(rng); };
    const int ranks = int(pick(2, 10));
    const i64 n = pick(ranks, 200);
    // r = 1 and every member holding rows: every block is useful to every later member.
    Config c = config({pick(2, n), pick(1, n)}, {1, 1});
    const Shape shape{1, n, 4, 2, 8, DType::bf16};
    const RingPlan full = make_ring_plan(c, shape, ranks);
    c.causal = true;
    const RingPlan causal = make_ring_plan(c, shape, ranks);
    std::map<std::pair<int, i64>, i64> group_size;
    for (const Block& b : causal.blocks) ++group_size[{b.branch, b.segment}];
    i64 all = 0, forward = 0;
    for (const auto& [_, g] : group_size) all += g * (g - 1), forward += g * (g - 1) / 2;
    EXPECT_EQ(total_transfers(full), all);
    EXPECT_EQ(total_transfers(causal), forward);
  }
  for (int trial = 0; trial < 200; ++trial) {
    RingCase c = random_ring_case(rng, 48, 7);
    c.config.causal = true;
    const RingPlan plan = make_ring_plan(c.config, c.shape, c.ranks);
    for (const RankPlan& rp : plan.per_rank) {
      for (const Transfer& t : rp.receives) {
        EXPECT_LE(plan.blocks[std::size_t(t.block)].rows_held.end, rp.rows.begin)
            << c.describe() << ": rank " << rp.rank << " receives later rows from rank " << t.peer;
      }
    }
  }
}

TEST(RingPlan, BadInputIsAClearError) {
  const Shape shape{1, 10, 4, 2, 8, DType::bf16};
  const Config good = config({4}, {2});
  expect_error([&] { make_ring_plan(good, shape, 0); }, {"ranks = 0", "seq_len (= 10)"});
  expect_error([&] { make_ring_plan(good, shape, -3); }, {"ranks = -3"});
  expect_error([&] { make_ring_plan(good, shape, 11); }, {"ranks = 11", "seq_len (= 10)"});
  expect_error([&] { make_ring_plan(config({4, 8}, {1}), shape, 2); }, {"segments has 2", "dilations has 1"});
  expect_error([&] { make_ring_plan(config({0}, {1}), shape, 2); }, {"segments[0] = 0"});
  expect_error([&] { make_ring_plan(good, {1, 10, 4, 3, 8, DType::bf16}, 2); }, {"kv_heads = 3", "heads = 4"});
  expect_error([&] { make_ring_plan(good, {0, 10, 4, 2, 8, DType::bf16}, 2); }, {"batch = 0"});
  expect_error([&] { make_ring_plan(good, {1, 0, 4, 2, 8, DType::bf16}, 1); }, {"seq_len = 0"});
  expect_error([&] { make_ring_plan(good, {1, 10, 4, 2, -1, DType::bf16}, 2); }, {"head_dim = -1"});
  Config groups = config({4, 4, 4}, {1, 2, 3});
  groups.mode = Mode::head_groups;
  expect_error([&] { make_ring_plan(groups, {1, 10, 2, 1, 8, DType::bf16}, 2); }, {"2 heads, 3 branches"});
  expect_error([&] { make_ring_plan(good, {1 << 20, i64(1) << 40, 64, 8, 128, DType::bf16}, 2); }, {"at most 2^56"});
}

// A billion tokens over 64 ranks: the plan comes from the rank boundaries, not from the 2^19 segments of
// the shortest branch, so it takes microseconds; walking every segment would take seconds.
TEST(RingPlan, BillionTokenPlanIsBuiltFromRankBoundaries) {
  const i64 n = i64(1) << 30;
  const Config c = config({2048, 4096, 8192, 16384, 32768, i64(1) << 28}, {1, 2, 4, 6, 12, 16});
  const Shape shape{1, n, 32, 8, 128, DType::bf16};
  const auto start = std::chrono::steady_clock::now();
  const RingPlan plan = make_ring_plan(c, shape, 64);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
  // Shards of 2^24 rows: the short branches stay local; w = 2^28 makes 4 groups of 16 ranks.
  EXPECT_EQ(plan.blocks.size(), 64u);
  EXPECT_EQ(plan.steps, 15);
  // r = 16 over 32 heads: offsets h / 2, kv head h / 4, so 16 (kv head, offset) pairs, each selecting
  // 2^24 / 16 rows of a shard; 15 peers each.
  const i64 block = 16 * (i64(1) << 20) * 2 * 128 * 2;
  for (const RankPlan& rp : plan.per_rank) {
    EXPECT_EQ(rp.recv_bytes, 15 * block);
    EXPECT_EQ(rp.send_bytes, 15 * block);
    EXPECT_EQ(rp.receives.size(), 15u);
  }
}

TEST(RingPlan, CheckNamesTheFirstMismatch) {
  const RingPlan plan = make_ring_plan(config({12, 40}, {1, 3}), {1, 40, 4, 2, 8, DType::bf16}, 4);
  ASSERT_NO_THROW(check(plan));
  ASSERT_FALSE(plan.per_rank[1].receives.empty());

  RingPlan dropped = plan;
  const Transfer lost = dropped.per_rank[1].receives.front();
  dropped.per_rank[1].receives.erase(dropped.per_rank[1].receives.begin());
  dropped.per_rank[1].computes.erase(dropped.per_rank[1].computes.begin());
  expect_error([&] { check(dropped); }, {fmt::format("step {}: rank {} sends block {}", lost.step, lost.peer, lost.block).c_str(),
                                         "to rank 1, which posts no matching receive"});

  RingPlan moved = plan;
  Transfer& send = moved.per_rank[0].sends.back();
  ++send.step;
  moved.steps = std::max(moved.steps, send.step);
  expect_error([&] { check(moved); }, {fmt::format("step {}: rank 0 sends block {}", send.step, send.block).c_str(),
                                       "posts no matching receive"});

  RingPlan self = plan;
  self.per_rank[2].sends.front().peer = 2;
  expect_error([&] { check(self); }, {"rank 2 sends block", "to itself"});

  RingPlan twice = plan;
  twice.per_rank[3].computes.push_back(twice.per_rank[3].computes.back());
  expect_error([&] { check(twice); }, {"rank 3 computes block", "twice"});

  RingPlan idle = plan;
  const Compute skipped = idle.per_rank[1].computes.front();
  idle.per_rank[1].computes.erase(idle.per_rank[1].computes.begin());
  expect_error([&] { check(idle); }, {fmt::format("step {}: rank 1 receives block {}", skipped.step, skipped.block).c_str(),
                                      "never computes it"});

  RingPlan orphan = plan;
  orphan.per_rank[0].sends.clear();
  expect_error([&] { check(orphan); }, {"rank 1 waits for block", "from rank 0, which posts no matching send"});

  RingPlan stolen = plan;
  const Transfer other = plan.per_rank[2].sends.back();
  ASSERT_TRUE(other.peer != 0 && other.step >= plan.per_rank[0].sends.back().step);
  stolen.per_rank[0].sends.push_back(other);
  expect_error([&] { check(stolen); }, {"rank 0 sends block", "which it does not hold"});
}
