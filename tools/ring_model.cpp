#include "tools/ring_model.hpp"

#include <algorithm>

#include "templates/dilatron/index.cuh"

namespace dilatron::cli {
namespace {

using i64 = std::int64_t;
using ring::RingPlan;

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
double local_pairs(ring::RowRange rows, i64 w, i64 o, i64 r, bool causal) {
  const i64 first = rows.begin / w, last = (rows.end - 1) / w;
  if (first == last) return pairs_among(selected_between(first * w, rows.begin, rows.end, o, r), causal);
  return pairs_among(selected_between(first * w, rows.begin, (first + 1) * w, o, r), causal) +
         double(last - first - 1) * pairs_among(index::selected_count(w, o, r), causal) +
         pairs_among(selected_between(last * w, last * w, rows.end, o, r), causal);
}

i64 head_offset(const RingPlan& plan, i64 h, int branch) {
  const int mode = plan.config.mode == Mode::longnet ? index::kLongnet : index::kHeadGroups;
  return index::branch_offset(mode, h, plan.shape.heads, branch, i64(plan.config.branches()),
                              plan.config.dilations[std::size_t(branch)]);
}

double link_gbs(int a, int b, const LinkModel& m) {
  return a / m.gpus_per_node == b / m.gpus_per_node ? m.nvlink_gbs : m.network_gbs;
}
double transfer_ms(i64 bytes, double gbs) { return double(bytes) / (gbs * 1e6); }
double compute_ms(double flops, const LinkModel& m) { return flops / (m.tflops * 1e9); }

double flops_per_pair(const RingPlan& plan) { return 4.0 * double(plan.shape.head_dim) * double(plan.shape.batch); }

}  // namespace

RankPairs rank_pairs(const RingPlan& plan, int rank) {
  const ring::RankPlan& rp = plan.per_rank[std::size_t(rank)];
  const ring::Shape& s = plan.shape;
  RankPairs out{0, std::vector<double>(std::size_t(plan.steps) + 1, 0.0)};
  for (i64 h = 0; h < s.heads; ++h) {
    for (int i = 0; i < int(plan.config.branches()); ++i) {
      const i64 o = head_offset(plan, h, i);
      if (o >= 0) out.local += local_pairs(rp.rows, plan.config.segments[std::size_t(i)], o, plan.config.dilations[std::size_t(i)], plan.config.causal);
    }
  }
  // A received block holds rows before this rank's when causal (the plan sends no others), so each of
  // its keys is visible to each query of the same (kv head, offset).
  for (const ring::Compute& x : rp.computes) {
    const ring::Block& b = plan.blocks[std::size_t(x.block)];
    const i64 w = plan.config.segments[std::size_t(b.branch)], r = plan.config.dilations[std::size_t(b.branch)];
    const i64 seg_begin = index::segment_begin(b.segment, w), seg_end = index::segment_end(b.segment, w, s.seq_len);
    const i64 from = std::max(rp.rows.begin, seg_begin), to = std::min(rp.rows.end, seg_end);
    for (i64 h = 0; h < s.heads; ++h) {
      const i64 o = head_offset(plan, h, b.branch), kv = index::kv_head(h, s.heads, s.kv_heads);
      const auto part = std::find_if(b.parts.begin(), b.parts.end(),
                                     [&](const ring::Block::Part& p) { return p.kv_head == kv && p.offset == o; });
      if (o < 0 || part == b.parts.end()) continue;
      out.per_step[std::size_t(x.step)] += double(selected_between(seg_begin, from, to, o, r)) * double(part->rows);
    }
  }
  return out;
}

std::vector<RankCost> ring_costs(const RingPlan& plan, const LinkModel& model) {
  std::vector<RankCost> out;
  for (const ring::RankPlan& rp : plan.per_rank) {
    const RankPairs pairs = rank_pairs(plan, rp.rank);
    std::vector<double> send_ms(pairs.per_step.size(), 0.0), recv_ms(pairs.per_step.size(), 0.0);
    std::vector<bool> active(pairs.per_step.size(), false);
    for (const ring::Transfer& t : rp.sends) {
      send_ms[std::size_t(t.step)] += transfer_ms(plan.blocks[std::size_t(t.block)].bytes, link_gbs(rp.rank, t.peer, model));
      active[std::size_t(t.step)] = true;
    }
    for (const ring::Transfer& t : rp.receives) {
      recv_ms[std::size_t(t.step)] += transfer_ms(plan.blocks[std::size_t(t.block)].bytes, link_gbs(rp.rank, t.peer, model));
      active[std::size_t(t.step)] = true;
    }
    double all_pairs = pairs.local, ms = compute_ms(flops_per_pair(plan) * pairs.local, model);
    for (std::size_t t = 1; t < pairs.per_step.size(); ++t) {
      all_pairs += pairs.per_step[t];
      ms += std::max(compute_ms(flops_per_pair(plan) * pairs.per_step[t], model), std::max(send_ms[t], recv_ms[t]));
    }
    out.push_back({rp.rank, rp.rows.size(), rp.send_bytes, rp.recv_bytes, rp.memory_bytes,
                   int(std::count(active.begin(), active.end(), true)),
                   flops_per_pair(plan) * all_pairs, ms});
  }
  return out;
}

std::vector<RankCost> all_gather_costs(const RingPlan& plan, const LinkModel& model, const std::vector<RankCost>& ring) {
  const ring::Shape& s = plan.shape;
  const i64 elem = i64(dtype_size(s.dtype)), kv_row = s.kv_heads * s.head_dim * 2 * elem * s.batch;
  // Per node: its ranks and rows, so that each rank's sums over its peers (on its node at NVLink speed,
  // elsewhere at network speed) take constant time: the plan of a million ranks stays linear.
  const int nodes = (plan.ranks + model.gpus_per_node - 1) / model.gpus_per_node;
  std::vector<i64> node_rows(std::size_t(nodes), 0), node_ranks(std::size_t(nodes), 0);
  for (const ring::RankPlan& rp : plan.per_rank) {
    node_rows[std::size_t(rp.rank / model.gpus_per_node)] += rp.rows.size();
    node_ranks[std::size_t(rp.rank / model.gpus_per_node)] += 1;
  }
  std::vector<RankCost> out;
  for (const ring::RankPlan& rp : plan.per_rank) {
    const i64 rows = rp.rows.size();
    const std::size_t node = std::size_t(rp.rank / model.gpus_per_node);
    const i64 near_peers = node_ranks[node] - 1, far_peers = plan.ranks - node_ranks[node];
    const i64 near_rows = node_rows[node] - rows, far_rows = s.seq_len - node_rows[node];
    const double send_ms = double(near_peers) * transfer_ms(rows * kv_row, model.nvlink_gbs) +
                           double(far_peers) * transfer_ms(rows * kv_row, model.network_gbs);
    const double recv_ms = transfer_ms(near_rows * kv_row, model.nvlink_gbs) + transfer_ms(far_rows * kv_row, model.network_gbs);
    const i64 memory = s.batch * (rows * s.heads * s.head_dim * elem * 2 + rows * s.heads * 4) + s.seq_len * kv_row;
    const double flops = ring[std::size_t(rp.rank)].flops;
    out.push_back({rp.rank, rows, rows * (plan.ranks - 1) * kv_row, (s.seq_len - rows) * kv_row, memory, plan.ranks - 1,
                   flops, std::max(send_ms, recv_ms) + compute_ms(flops, model)});
  }
  return out;
}

}  // namespace dilatron::cli
