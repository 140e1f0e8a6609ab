#include "runtime/ring/plan.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <tuple>
#include <utility>

#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron::ring {
namespace {

using i64 = std::int64_t;

void validate(const Config& config, const Shape& s, int ranks) {
  validate_config(config);
  const std::pair<const char*, i64> dims[] = {
      {"batch", s.batch}, {"seq_len", s.seq_len}, {"heads", s.heads}, {"kv_heads", s.kv_heads}, {"head_dim", s.head_dim}};
  for (const auto& [name, value] : dims) {
    if (value < 1) throw Error(fmt::format("ring plan: {} = {}: must be >= 1", name, value));
  }
  // Byte counts below multiply these; keep every product far from int64 overflow.
  const double elements = double(s.batch) * double(s.seq_len) * double(std::max(s.heads, s.kv_heads)) * double(s.head_dim);
  if (elements > double(i64(1) << 56)) {
    throw Error(fmt::format("ring plan: batch {} x seq_len {} x heads {} x head_dim {} elements: at most 2^56",
                            s.batch, s.seq_len, std::max(s.heads, s.kv_heads), s.head_dim));
  }
  if (s.heads % s.kv_heads != 0) {
    throw Error(fmt::format("ring plan: kv_heads = {} does not divide heads = {}", s.kv_heads, s.heads));
  }
  if (config.mode == Mode::head_groups && s.heads < i64(config.branches())) {
    throw Error(fmt::format("ring plan: head_groups mode needs at least one head per branch: {} heads, {} branches",
                            s.heads, config.branches()));
  }
  if (ranks < 1 || ranks > s.seq_len) {
    throw Error(fmt::format("ring plan: ranks = {}: need 1 <= ranks <= seq_len (= {})", ranks, s.seq_len));
  }
}

struct KvOffset {
  i64 kv_head, offset;
  auto operator<=>(const KvOffset&) const = default;
};

// The (kv head, offset) pairs the query heads of one branch read; sorted, distinct.
std::vector<KvOffset> needed_pairs(const Config& config, const Shape& s, int branch) {
  const int mode = config.mode == Mode::longnet ? index::kLongnet : index::kHeadGroups;
  std::vector<KvOffset> out;
  for (i64 h = 0; h < s.heads; ++h) {
    const i64 offset = index::branch_offset(mode, h, s.heads, branch, i64(config.branches()), config.dilations[branch]);
    if (offset >= 0) out.push_back({index::kv_head(h, s.heads, s.kv_heads), offset});
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Selected rows of `offset` within [rows.begin, rows.end), a piece of the segment starting at seg_begin.
Block::Part selected_part(i64 seg_begin, RowRange rows, KvOffset p, i64 r) {
  const i64 before = index::selected_count(rows.begin - seg_begin, p.offset, r);
  const i64 count = index::selected_count(rows.end - seg_begin, p.offset, r) - before;
  return {p.kv_head, p.offset, seg_begin + p.offset + before * r, count};
}

// Segments of length w holding a rank boundary strictly inside them. Found from the P - 1 boundaries,
// never by walking the N / w segments (N reaches 1e9 and more).
std::vector<i64> spanning_segments(i64 n, int ranks, i64 w) {
  std::vector<i64> out;
  for (int p = 1; p < ranks; ++p) {
    const i64 boundary = shard(n, ranks, p).begin;
    if (boundary % w == 0) continue;  // a segment starts exactly here: none crosses it
    if (const i64 s = boundary / w; out.empty() || out.back() != s) out.push_back(s);
  }
  return out;
}

// Whether some query row `receiver` holds of the segment can attend a key of `sent`: a part is useful
// to the query heads reading its (kv head, offset), and those select the rows of the same offset.
bool receiver_attends(const Block& sent, RowRange receiver, i64 seg_begin, i64 r) {
  return std::any_of(sent.parts.begin(), sent.parts.end(), [&](const Block::Part& p) {
    return selected_part(seg_begin, receiver, {p.kv_head, p.offset}, r).rows > 0;
  });
}

// Members of one spanning segment: ranks first .. first + size - 1, their blocks consecutive from
// first_block (position i of the group is rank first + i, block first_block + i).
struct Group {
  int first_block, first_rank, size;
};

Group add_group(RingPlan& plan, int branch, i64 segment, const std::vector<KvOffset>& pairs) {
  const i64 n = plan.shape.seq_len, w = plan.config.segments[branch], r = plan.config.dilations[branch];
  const RowRange seg{index::segment_begin(segment, w), index::segment_end(segment, w, n)};
  const int first = owner(seg.begin, n, plan.ranks), last = owner(seg.end - 1, n, plan.ranks);
  const i64 row_bytes = plan.shape.batch * 2 * plan.shape.head_dim * i64(dtype_size(plan.shape.dtype));
  const Group group{int(plan.blocks.size()), first, last - first + 1};
  for (int m = first; m <= last; ++m) {
    const RowRange held = shard(n, plan.ranks, m);
    Block b{branch, segment, m, {std::max(held.begin, seg.begin), std::min(held.end, seg.end)}, {}, 0};
    for (const KvOffset& p : pairs) {
      const Block::Part part = selected_part(seg.begin, b.rows_held, p, r);
      if (part.rows == 0) continue;
      b.parts.push_back(part);
      b.bytes += part.rows * row_bytes;
    }
    plan.blocks.push_back(std::move(b));
  }
  return group;
}

// Steps 1..g-1: position i sends to (i + t) mod g. With causal masking only later positions can use a
// block; empty blocks and blocks no query of the receiver attends stay home.
void schedule(RingPlan& plan, const Group& g) {
  const Block& any = plan.blocks[g.first_block];
  const i64 seg_begin = index::segment_begin(any.segment, plan.config.segments[any.branch]);
  const i64 r = plan.config.dilations[any.branch];
  for (int t = 1; t < g.size; ++t) {
    for (int i = 0; i < g.size; ++i) {
      const int j = (i + t) % g.size;
      if (plan.config.causal && j < i) continue;
      const int block = g.first_block + i;
      const Block& sent = plan.blocks[block];
      if (sent.bytes == 0 || !receiver_attends(sent, plan.blocks[g.first_block + j].rows_held, seg_begin, r)) continue;
      const int from = g.first_rank + i, to = g.first_rank + j;
      plan.per_rank[from].sends.push_back({t, to, block});
      plan.per_rank[to].receives.push_back({t, from, block});
      plan.per_rank[to].computes.push_back({t, block});
    }
  }
  plan.steps = std::max(plan.steps, g.size - 1);
}

void finish_rank(RingPlan& plan, RankPlan& rp) {
  // One order on both ends of every pair of ranks: messages between two ranks in one step match in
  // the order they are posted (NCCL), so sender and receiver both sort by (step, block).
  auto by_step = [](const auto& a, const auto& b) { return std::pair(a.step, a.block) < std::pair(b.step, b.block); };
  std::sort(rp.sends.begin(), rp.sends.end(), by_step);
  std::sort(rp.receives.begin(), rp.receives.end(), by_step);
  std::sort(rp.computes.begin(), rp.computes.end(), by_step);
  std::vector<i64> per_step(std::size_t(plan.steps) + 1, 0);
  for (const Transfer& s : rp.sends) rp.send_bytes += plan.blocks[s.block].bytes;
  for (const Transfer& r : rp.receives) {
    rp.recv_bytes += plan.blocks[r.block].bytes;
    per_step[std::size_t(r.step)] += plan.blocks[r.block].bytes;
  }
  const Shape& s = plan.shape;
  const i64 rows = rp.rows.size(), elem = i64(dtype_size(s.dtype));
  const i64 shards = rows * s.head_dim * elem * (2 * s.heads + 2 * s.kv_heads);  // Q, O; K, V
  const i64 lse = rows * s.heads * 4;
  const i64 accumulator = rows * s.heads * s.head_dim * 4 + rows * s.heads * 4;
  rp.memory_bytes = s.batch * (shards + lse + accumulator) + 2 * *std::max_element(per_step.begin(), per_step.end());
}

std::string describe(const RingPlan& plan, int block) {
  if (block < 0 || std::size_t(block) >= plan.blocks.size()) return fmt::format("block {} (no such block)", block);
  const Block& b = plan.blocks[std::size_t(block)];
  return fmt::format("block {} (branch {}, segment {}, rows [{}, {}) of rank {})", block, b.branch, b.segment,
                     b.rows_held.begin, b.rows_held.end, b.owner);
}

}  // namespace

RingPlan make_ring_plan(const Config& config, const Shape& shape, int ranks) {
  validate(config, shape, ranks);
  RingPlan plan{config, shape, ranks, 0, {}, {}};
  for (int p = 0; p < ranks; ++p) plan.per_rank.push_back({p, shard(shape.seq_len, ranks, p), {}, {}, {}, 0, 0, 0});
  for (int i = 0; i < int(config.branches()); ++i) {
    const std::vector<KvOffset> pairs = needed_pairs(config, shape, i);
    for (const i64 segment : spanning_segments(shape.seq_len, ranks, config.segments[i])) {
      schedule(plan, add_group(plan, i, segment, pairs));
    }
  }
  for (RankPlan& rp : plan.per_rank) finish_rank(plan, rp);
  check(plan);
  return plan;
}

void check(const RingPlan& plan) {
  auto fail = [](const std::string& what) { throw Error("ring plan check: " + what); };
  if (plan.per_rank.size() != std::size_t(plan.ranks)) {
    fail(fmt::format("{} rank plans for {} ranks", plan.per_rank.size(), plan.ranks));
  }
  auto by_step = [](const auto& a, const auto& b) { return std::pair(a.step, a.block) < std::pair(b.step, b.block); };
  // Whether `peer` posts the other end of rank p's transfer x: its list is in (step, block) order, so a
  // binary search finds it, and the whole check stays linear in the messages (a million ranks plan).
  auto matched = [&](const Transfer& x, int p, bool send) {
    const std::vector<Transfer>& theirs = send ? plan.per_rank[std::size_t(x.peer)].receives
                                               : plan.per_rank[std::size_t(x.peer)].sends;
    const auto [first, last] = std::equal_range(theirs.begin(), theirs.end(), x, by_step);
    return std::count_if(first, last, [&](const Transfer& t) { return t.peer == p; }) == 1;
  };
  for (int p = 0; p < plan.ranks; ++p) {
    const RankPlan& rp = plan.per_rank[std::size_t(p)];
    if (rp.rank != p) fail(fmt::format("per_rank[{}] is the plan of rank {}", p, rp.rank));
    for (const bool send : {true, false}) {
      const std::vector<Transfer>& mine = send ? rp.sends : rp.receives;
      for (std::size_t i = 0; i < mine.size(); ++i) {
        const Transfer& x = mine[i];
        // The message is formatted only for a failure: a plan of a million ranks checks millions of these.
        const auto where = [&] {
          return fmt::format("step {}: rank {} {} {} ", x.step, p, send ? "sends" : "receives", describe(plan, x.block));
        };
        const char* towards = send ? "to" : "from";
        if (x.step < 1 || x.step > plan.steps) fail(where() + fmt::format("outside steps 1..{}", plan.steps));
        if (i > 0 && by_step(x, mine[i - 1])) fail(where() + fmt::format("after step {}: transfers must be in step order", mine[i - 1].step));
        if (x.block < 0 || std::size_t(x.block) >= plan.blocks.size()) fail(where() + "that does not exist");
        if (x.peer < 0 || x.peer >= plan.ranks) fail(where() + fmt::format("{} rank {}, which does not exist", towards, x.peer));
        if (x.peer == p) fail(where() + fmt::format("{} itself", towards));
        if (i > 0 && !by_step(mine[i - 1], x) && mine[i - 1].peer == x.peer) {
          fail(fmt::format("step {}: rank {} posts the {} of {} {} rank {} twice", x.step, p, send ? "send" : "receive",
                           describe(plan, x.block), towards, x.peer));
        }
        if (send && plan.blocks[std::size_t(x.block)].owner != p) {
          fail(fmt::format("step {}: rank {} sends {}, which it does not hold", x.step, p, describe(plan, x.block)));
        }
      }
    }
    // Every received block is attended once, in the step it arrives; nothing else is. Both lists are in
    // (step, block) order, so they must agree element by element.
    for (std::size_t i = 0; i < std::max(rp.receives.size(), rp.computes.size()); ++i) {
      if (i < rp.computes.size() && i > 0 && !by_step(rp.computes[i - 1], rp.computes[i])) {
        fail(fmt::format("step {}: rank {} computes {} twice", rp.computes[i].step, p, describe(plan, rp.computes[i].block)));
      }
      if (i >= rp.computes.size() || (i < rp.receives.size() && by_step(rp.receives[i], rp.computes[i]))) {
        fail(fmt::format("step {}: rank {} receives {} but never computes it in that step", rp.receives[i].step, p,
                         describe(plan, rp.receives[i].block)));
      }
      if (i >= rp.receives.size() || by_step(rp.computes[i], rp.receives[i])) {
        fail(fmt::format("step {}: rank {} computes {}, which it does not receive in that step", rp.computes[i].step, p,
                         describe(plan, rp.computes[i].block)));
      }
    }
  }
  // Then, every rank's lists being sound, both ends of every message (sends first, as a deadlock is
  // easiest to read from the sender's side).
  for (const bool send : {true, false}) {
    for (int p = 0; p < plan.ranks; ++p) {
      for (const Transfer& x : send ? plan.per_rank[std::size_t(p)].sends : plan.per_rank[std::size_t(p)].receives) {
        if (matched(x, p, send)) continue;
        fail(send ? fmt::format("step {}: rank {} sends {} to rank {}, which posts no matching receive (a deadlock at "
                                "run time)", x.step, p, describe(plan, x.block), x.peer)
                  : fmt::format("step {}: rank {} waits for {} from rank {}, which posts no matching send (a deadlock "
                                "at run time)", x.step, p, describe(plan, x.block), x.peer));
      }
    }
  }
}

}  // namespace dilatron::ring
