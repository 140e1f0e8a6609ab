#include "tools/ring_model.hpp"

#include <algorithm>
#include <limits>
#include <thread>

#include "common/dtype.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron::cli {
namespace {

using i64 = std::int64_t;

double pairs_among(i64 rows, bool causal) {
  const double n = double(rows);
  return causal ? n * (n + 1) / 2 : n * n;
}

// Selected rows of offset o in [from, to), a piece of the segment starting at seg_begin.
i64 selected_between(i64 seg_begin, i64 from, i64 to, i64 o, i64 r) {
  return index::selected_count(to - seg_begin, o, r) - index::selected_count(from - seg_begin, o, r);
}

// Pairs among the selected rows of `rows`, segment by segment: a piece of a segment at each end and
// whole segments between, so a billion-row shard costs three terms.
double pairs_within(ring::RowRange rows, i64 w, i64 o, i64 r, bool causal) {
  const i64 first = rows.begin / w, last = (rows.end - 1) / w;
  if (first == last) return pairs_among(selected_between(first * w, rows.begin, rows.end, o, r), causal);
  return pairs_among(selected_between(first * w, rows.begin, (first + 1) * w, o, r), causal) +
         double(last - first - 1) * pairs_among(index::selected_count(w, o, r), causal) +
         pairs_among(selected_between(last * w, last * w, rows.end, o, r), causal);
}

double link_gbs(int a, int b, const LinkModel& m) {
  return a / m.gpus_per_node == b / m.gpus_per_node ? m.nvlink_gbs : m.network_gbs;
}
double transfer_ms(i64 bytes, double gbs) { return double(bytes) / (gbs * 1e6); }
double compute_ms(double flops, const LinkModel& m) { return flops / (m.tflops * 1e9); }

double flops_per_pair(const ring::Schedule& s) { return 4.0 * double(s.shape.head_dim) * double(s.shape.batch); }

}  // namespace

std::int64_t ring_pass_bytes(const ring::Schedule& s, const ring::RankPlan& rp) {
  if (s.ranks == 1) return 0;
  const ring::Shape& sh = s.shape;
  const i64 row_heads = sh.batch * rp.rows.size() * sh.heads, accumulator = row_heads * (sh.head_dim + 1) * 4;
  // clear writes the accumulator; finish reads it and writes O and LSE; ring_pack reads and writes each send.
  return 2 * accumulator + row_heads * (sh.head_dim * i64(dtype_size(sh.dtype)) + 4) + 2 * rp.send_bytes;
}

double local_pairs(const ring::Schedule& s, ring::RowRange rows) {
  double out = 0;
  for (std::size_t i = 0; i < s.config.branches(); ++i) {
    for (const ring::OffsetReaders& o : s.readers[i]) {
      out += double(o.query_heads) * pairs_within(rows, s.config.segments[i], o.offset, s.config.dilations[i], s.config.causal);
    }
  }
  return out;
}

RankCost ring_cost(const ring::Schedule& s, const ring::RankPlan& rp, const LinkModel& model) {
  const double local = local_pairs(s, rp.rows);
  double pairs = local, ms = compute_ms(flops_per_pair(s) * local, model) + transfer_ms(ring_pass_bytes(s, rp), model.hbm_gbs);
  int steps = 0;
  // Step by step through the three lists, each in step order: attention on the blocks received, and
  // the transfers each way. Steps the rank takes no part in cost nothing.
  std::size_t c = 0, out = 0, in = 0;
  while (c < rp.computes.size() || out < rp.sends.size() || in < rp.receives.size()) {
    int step = std::numeric_limits<int>::max();
    if (c < rp.computes.size()) step = std::min(step, rp.computes[c].step);
    if (out < rp.sends.size()) step = std::min(step, rp.sends[out].step);
    if (in < rp.receives.size()) step = std::min(step, rp.receives[in].step);
    double attention = 0, send_ms = 0, recv_ms = 0;
    for (; c < rp.computes.size() && rp.computes[c].step == step; ++c) attention += rp.computes[c].pairs;
    for (; out < rp.sends.size() && rp.sends[out].step == step; ++out) {
      send_ms += transfer_ms(rp.sends[out].bytes, link_gbs(rp.rank, rp.sends[out].peer, model));
    }
    for (; in < rp.receives.size() && rp.receives[in].step == step; ++in) {
      recv_ms += transfer_ms(rp.receives[in].bytes, link_gbs(rp.rank, rp.receives[in].peer, model));
    }
    pairs += attention;
    ms += std::max(compute_ms(flops_per_pair(s) * attention, model), std::max(send_ms, recv_ms));
    ++steps;
  }
  return {rp.rank,  rp.rows.size(), rp.send_bytes, rp.recv_bytes, rp.memory_bytes, rp.backward_memory_bytes,
          steps,    flops_per_pair(s) * pairs, ms};
}

std::vector<RankCost> ring_costs(const ring::Schedule& s, const LinkModel& model) {
  // Ranks in contiguous slices, one per core, each walked in order by its own planner.
  std::vector<RankCost> out(std::size_t(s.ranks));
  const int slices = int(std::clamp<i64>(std::thread::hardware_concurrency(), 1, std::max(1, s.ranks / 4096)));
  auto cost_slice = [&](int k) {
    ring::RankPlanner planner(s);
    for (int p = int(i64(s.ranks) * k / slices); p < int(i64(s.ranks) * (k + 1) / slices); ++p) {
      out[std::size_t(p)] = ring_cost(s, planner.plan(p), model);
    }
  };
  std::vector<std::jthread> threads;
  for (int k = 1; k < slices; ++k) threads.emplace_back(cost_slice, k);
  cost_slice(0);
  return out;
}

std::vector<RankCost> all_gather_costs(const ring::Schedule& plan, const LinkModel& model,
                                       const std::vector<RankCost>& ring) {
  const ring::Shape& s = plan.shape;
  const i64 elem = i64(dtype_size(s.dtype)), kv_row = s.kv_heads * s.head_dim * 2 * elem * s.batch;
  // Per node: its ranks and rows, so that each rank's sums over its peers (on its node at NVLink speed,
  // elsewhere at network speed) take constant time: the plan of a million ranks stays linear.
  const int nodes = (plan.ranks + model.gpus_per_node - 1) / model.gpus_per_node;
  std::vector<i64> node_rows(std::size_t(nodes), 0), node_ranks(std::size_t(nodes), 0);
  for (const RankCost& c : ring) {
    node_rows[std::size_t(c.rank / model.gpus_per_node)] += c.rows;
    node_ranks[std::size_t(c.rank / model.gpus_per_node)] += 1;
  }
  std::vector<RankCost> out;
  out.reserve(ring.size());
  for (const RankCost& c : ring) {
    const i64 rows = c.rows;
    const std::size_t node = std::size_t(c.rank / model.gpus_per_node);
    const i64 near_peers = node_ranks[node] - 1, far_peers = plan.ranks - node_ranks[node];
    const i64 near_rows = node_rows[node] - rows, far_rows = s.seq_len - node_rows[node];
    const double send_ms = double(near_peers) * transfer_ms(rows * kv_row, model.nvlink_gbs) +
                           double(far_peers) * transfer_ms(rows * kv_row, model.network_gbs);
    const double recv_ms = transfer_ms(near_rows * kv_row, model.nvlink_gbs) + transfer_ms(far_rows * kv_row, model.network_gbs);
    const i64 memory = s.batch * (rows * s.heads * s.head_dim * elem * 2 + rows * s.heads * 4) + s.seq_len * kv_row;
    out.push_back({c.rank, rows, rows * (plan.ranks - 1) * kv_row, (s.seq_len - rows) * kv_row, memory, 0, plan.ranks - 1,
                   c.flops, std::max(send_ms, recv_ms) + compute_ms(c.flops, model)});
  }
  return out;
}

}  // namespace dilatron::cli
