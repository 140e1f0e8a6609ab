#include "runtime/ring/plan.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <limits>
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

// The (kv head, offset) pairs the query heads of one branch read, sorted and distinct, and who reads each
// offset.
void add_readers(Schedule& s, int branch) {
  const int mode = s.config.mode == Mode::longnet ? index::kLongnet : index::kHeadGroups;
  std::vector<KvOffset> pairs;
  std::vector<i64> offsets;  // of every query head taking part
  for (i64 h = 0; h < s.shape.heads; ++h) {
    const i64 offset = index::branch_offset(mode, h, s.shape.heads, branch, i64(s.config.branches()),
                                            s.config.dilations[std::size_t(branch)]);
    if (offset < 0) continue;
    pairs.push_back({index::kv_head(h, s.shape.heads, s.shape.kv_heads), offset});
    offsets.push_back(offset);
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  std::sort(offsets.begin(), offsets.end());
  std::vector<OffsetReaders> readers;
  for (const i64 o : offsets) {
    if (readers.empty() || readers.back().offset != o) readers.push_back({o, 0, 0});
    ++readers.back().query_heads;
  }
  for (OffsetReaders& x : readers) {
    x.kv_heads = std::count_if(pairs.begin(), pairs.end(), [&](const KvOffset& p) { return p.offset == x.offset; });
  }
  s.pairs.push_back(std::move(pairs));
  s.readers.push_back(std::move(readers));
}

i64 selected_before(i64 seg_begin, i64 row, i64 offset, i64 r) { return index::selected_count(row - seg_begin, offset, r); }

// Selected rows of `offset` within [rows.begin, rows.end), a piece of the segment starting at seg_begin.
Block::Part selected_part(i64 seg_begin, RowRange rows, KvOffset p, i64 r) {
  const i64 before = selected_before(seg_begin, rows.begin, p.offset, r);
  const i64 count = selected_before(seg_begin, rows.end, p.offset, r) - before;
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

RowRange segment_rows(const Schedule& s, const Group& g) {
  const i64 w = s.config.segments[std::size_t(g.branch)];
  return {index::segment_begin(g.segment, w), index::segment_end(g.segment, w, s.shape.seq_len)};
}

i64 row_bytes(const Shape& s) { return s.batch * 2 * s.head_dim * i64(dtype_size(s.dtype)); }

constexpr auto by_step = [](const auto& a, const auto& b) { return std::pair(a.step, a.block) < std::pair(b.step, b.block); };

}  // namespace

Schedule make_schedule(const Config& config, const Shape& shape, int ranks) {
  validate(config, shape, ranks);
  Schedule s{config, shape, ranks, 0, 0, {}, {}, {}};
  for (int i = 0; i < int(config.branches()); ++i) {
    add_readers(s, i);
    for (const i64 segment : spanning_segments(shape.seq_len, ranks, config.segments[std::size_t(i)])) {
      Group g{i, segment, 0, 0, s.block_count};
      const RowRange seg = segment_rows(s, g);
      g.first_rank = owner(seg.begin, shape.seq_len, ranks);
      g.size = owner(seg.end - 1, shape.seq_len, ranks) - g.first_rank + 1;
      if (s.block_count > std::numeric_limits<int>::max() - g.size) {
        throw Error(fmt::format("ring plan: more than {} blocks over {} ranks", std::numeric_limits<int>::max(), ranks));
      }
      s.block_count += g.size;
      s.steps = std::max(s.steps, g.size - 1);
      s.groups.push_back(g);
    }
  }
  return s;
}

RankPlanner::RankPlanner(const Schedule& schedule)
    : schedule_(schedule), members_(schedule.config.branches()), branch_begin_{0} {
  for (int branch = 0; branch < int(schedule.config.branches()); ++branch) {
    int end = branch_begin_.back();
    while (end < int(schedule.groups.size()) && schedule.groups[std::size_t(end)].branch == branch) ++end;
    cursor_.push_back(branch_begin_.back());
    branch_begin_.push_back(end);
  }
}

const RankPlanner::Members& RankPlanner::members(int group) {
  const Group& g = schedule_.groups[std::size_t(group)];
  Members& out = members_[std::size_t(g.branch)];
  if (out.group == group) return out;
  const Shape& s = schedule_.shape;
  const RowRange seg = segment_rows(schedule_, g);
  const i64 r = schedule_.config.dilations[std::size_t(g.branch)];
  out.group = group;
  out.held.clear();
  out.bytes.clear();
  out.selected.clear();
  for (int m = 0; m < g.size; ++m) {
    const RowRange rows = shard(s.seq_len, schedule_.ranks, g.first_rank + m);
    const RowRange held{std::max(rows.begin, seg.begin), std::min(rows.end, seg.end)};
    i64 bytes = 0;
    for (const OffsetReaders& o : schedule_.readers[std::size_t(g.branch)]) {
      const i64 selected = selected_before(seg.begin, held.end, o.offset, r) - selected_before(seg.begin, held.begin, o.offset, r);
      out.selected.push_back(selected);
      bytes += selected * o.kv_heads * row_bytes(s);
    }
    out.held.push_back(held);
    out.bytes.push_back(bytes);
  }
  return out;
}

Block RankPlanner::block(int index) {
  if (index < 0 || index >= schedule_.block_count) throw Error(fmt::format("ring plan: no block {}", index));
  const auto after = std::upper_bound(schedule_.groups.begin(), schedule_.groups.end(), index,
                                      [](int b, const Group& g) { return b < g.first_block; });
  const Group& g = *std::prev(after);
  const Members& m = members(int(std::prev(after) - schedule_.groups.begin()));
  const std::size_t i = std::size_t(index - g.first_block);
  const RowRange seg = segment_rows(schedule_, g);
  Block b{g.branch, g.segment, g.first_rank + int(i), m.held[i], {}, m.bytes[i]};
  for (const KvOffset& p : schedule_.pairs[std::size_t(g.branch)]) {
    const Block::Part part = selected_part(seg.begin, m.held[i], p, schedule_.config.dilations[std::size_t(g.branch)]);
    if (part.rows > 0) b.parts.push_back(part);
  }
  return b;
}

int RankPlanner::first_group_holding(int branch, int rank) {
  // A branch's groups are in segment order, so their first and last ranks both ascend.
  const auto begin = schedule_.groups.begin(), end = begin + branch_begin_[std::size_t(branch) + 1];
  auto before = [rank](const Group& g) { return g.first_rank + g.size - 1 < rank; };
  int& at = cursor_[std::size_t(branch)];
  if (rank < last_rank_) at = int(std::partition_point(begin + branch_begin_[std::size_t(branch)], end, before) - begin);
  while (begin + at != end && before(begin[at])) ++at;
  return at;
}

// Steps 1..g-1 of one group: position i sends to (i + t) mod g. A block travels only where some query of
// the receiver reads one of its (kv head, offset) parts; with causal masking only to later positions.
void RankPlanner::add_messages(int group, int rank) {
  const Group& g = schedule_.groups[std::size_t(group)];
  const Members& m = members(group);
  const std::vector<OffsetReaders>& o = schedule_.readers[std::size_t(g.branch)];
  const std::size_t offsets = o.size();
  const bool causal = schedule_.config.causal;
  auto attends = [&](int sent, int receiver) {
    for (std::size_t k = 0; k < offsets; ++k) {
      if (m.selected[std::size_t(sent) * offsets + k] > 0 && m.selected[std::size_t(receiver) * offsets + k] > 0) return true;
    }
    return false;
  };
  // Every key of a received block is visible to every query of the same offset: causal sends go forward.
  auto pairs = [&](int sent, int receiver) {
    double n = 0;
    for (std::size_t k = 0; k < offsets; ++k) {
      n += double(o[k].query_heads) * double(m.selected[std::size_t(sent) * offsets + k]) *
           double(m.selected[std::size_t(receiver) * offsets + k]);
    }
    return n;
  };
  const int i = rank - g.first_rank;
  for (int t = 1; t < g.size; ++t) {
    const int to = (i + t) % g.size, from = (i - t + g.size) % g.size;
    if ((!causal || to > i) && attends(i, to)) {
      plan_.sends.push_back({t, g.first_rank + to, g.first_block + i, m.bytes[std::size_t(i)]});
      plan_.send_bytes += m.bytes[std::size_t(i)];
    }
    if ((!causal || from < i) && attends(from, i)) {
      plan_.receives.push_back({t, g.first_rank + from, g.first_block + from, m.bytes[std::size_t(from)]});
      plan_.computes.push_back({t, g.first_block + from, pairs(from, i)});
      plan_.recv_bytes += m.bytes[std::size_t(from)];
    }
  }
}

namespace {

// What the device executor allocates (device_executor.cpp, device_rank.cpp), byte for byte, and the
// caller's tensors beside it.
void set_memory(RankPlan& rp, const Shape& sh) {
  i64 most_in_a_step = 0, all_steps = 0;  // sends plus receives
  std::size_t out = 0, in = 0;
  while (out < rp.sends.size() || in < rp.receives.size()) {
    const int step = std::min(out < rp.sends.size() ? rp.sends[out].step : std::numeric_limits<int>::max(),
                              in < rp.receives.size() ? rp.receives[in].step : std::numeric_limits<int>::max());
    i64 bytes = 0;
    for (; out < rp.sends.size() && rp.sends[out].step == step; ++out) bytes += rp.sends[out].bytes;
    for (; in < rp.receives.size() && rp.receives[in].step == step; ++in) bytes += rp.receives[in].bytes;
    most_in_a_step = std::max(most_in_a_step, bytes);
    all_steps += bytes;
  }
  const i64 b = sh.batch, rows = rp.rows.size(), elem = i64(dtype_size(sh.dtype));
  const i64 q_elements = b * rows * sh.heads * sh.head_dim, kv_elements = b * rows * sh.kv_heads * sh.head_dim;
  const i64 row_stats = b * sh.heads * rows * 4;                 // an fp32 figure per (batch, head, row)
  const i64 accumulator = q_elements * 4 + row_stats;            // fp32 (O, LSE)
  rp.forward_workspace_bytes = accumulator + 2 * most_in_a_step;  // two arenas in turn
  rp.backward_workspace_bytes = accumulator + all_steps                 // every step's messages, kept
                                + 2 * (most_in_a_step / elem * 4)       // the return leg's fp32 partials, in turn
                                + q_elements * elem + row_stats         // O rounded, delta
                                + q_elements * 4 + 2 * kv_elements * 4;  // fp32 dQ, dK, dV
  // Given the forward's O and LSE: neither the fp32 O accumulator nor O rounded.
  rp.backward_given_forward_workspace_bytes = rp.backward_workspace_bytes - q_elements * (4 + elem);
  // Forward: Q, O and K, V shards and LSE. Backward: Q, K, V, dO, dQ, dK, dV.
  rp.memory_bytes = (2 * q_elements + 2 * kv_elements) * elem + row_stats + rp.forward_workspace_bytes;
  rp.backward_memory_bytes = (3 * q_elements + 4 * kv_elements) * elem + rp.backward_workspace_bytes;
}

}  // namespace

const RankPlan& RankPlanner::plan(int rank) {
  const Schedule& s = schedule_;
  if (rank < 0 || rank >= s.ranks) throw Error(fmt::format("ring plan: no rank {} of {}", rank, s.ranks));
  RankPlan& rp = plan_;
  rp.rank = rank;
  rp.rows = shard(s.shape.seq_len, s.ranks, rank);
  rp.sends.clear();
  rp.receives.clear();
  rp.computes.clear();
  rp.send_bytes = rp.recv_bytes = 0;
  // One order on both ends of every pair of ranks: messages between two ranks in one step match in the
  // order they are posted (NCCL), so sender and receiver both keep (step, block) order. A group's
  // messages come in step order; merging each group's into the rest keeps the whole in order.
  auto merge = [](auto& list, std::size_t from) { std::inplace_merge(list.begin(), list.begin() + std::ptrdiff_t(from), list.end(), by_step); };
  for (int branch = 0; branch < int(s.config.branches()); ++branch) {
    for (int g = first_group_holding(branch, rank);
         g < branch_begin_[std::size_t(branch) + 1] && s.groups[std::size_t(g)].first_rank <= rank; ++g) {
      const std::size_t sends = rp.sends.size(), receives = rp.receives.size(), computes = rp.computes.size();
      add_messages(g, rank);
      merge(rp.sends, sends);
      merge(rp.receives, receives);
      merge(rp.computes, computes);
    }
  }
  last_rank_ = rank;
  set_memory(rp, s.shape);
  return rp;
}

namespace {

std::string describe(const RingPlan& plan, int block) {
  if (block < 0 || std::size_t(block) >= plan.blocks.size()) return fmt::format("block {} (no such block)", block);
  const Block& b = plan.blocks[std::size_t(block)];
  return fmt::format("block {} (branch {}, segment {}, rows [{}, {}) of rank {})", block, b.branch, b.segment,
                     b.rows_held.begin, b.rows_held.end, b.owner);
}

}  // namespace

RingPlan make_ring_plan(const Config& config, const Shape& shape, int ranks) {
  RingPlan plan{make_schedule(config, shape, ranks), {}, {}};
  RankPlanner planner(plan);
  for (int b = 0; b < plan.block_count; ++b) plan.blocks.push_back(planner.block(b));
  for (int p = 0; p < ranks; ++p) plan.per_rank.push_back(planner.plan(p));
  check(plan);
  return plan;
}

void check(const RingPlan& plan) {
  auto fail = [](const std::string& what) { throw Error("ring plan check: " + what); };
  if (plan.per_rank.size() != std::size_t(plan.ranks)) {
    fail(fmt::format("{} rank plans for {} ranks", plan.per_rank.size(), plan.ranks));
  }
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
        if (x.bytes != plan.blocks[std::size_t(x.block)].bytes) fail(where() + fmt::format("as {} bytes", x.bytes));
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
