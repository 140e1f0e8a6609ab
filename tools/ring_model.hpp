// What a ring plan costs each rank under a small stated model, next to what an all-gather of dense
// K/V (every rank receives all other ranks' K and V, as most context-parallel systems do) would cost.
//
// Model: attention runs at `tflops` sustained per GPU, FLOPs = 4 * D * B * attended query-key pairs:
// every step of the ring runs on the tiled tensor-core kernels DilatedAttention uses (a rank's own rows
// and each received block alike), so one rate serves all of them. Over more than one rank the ring
// adds memory-bound passes at `hbm_gbs`: clearing its fp32 (O, LSE) accumulator, rounding it to O and
// LSE at the end, and packing the blocks it sends (a read and a write of each). One rank is
// DilatedAttention's call and adds nothing.
// Ranks r and q share a node when r / gpus_per_node == q / gpus_per_node; such a message moves at
// `nvlink_gbs`, any other at `network_gbs` (GB/s per GPU, per direction). A rank's messages of one step
// in one direction share its links, so their times add; sends and receives run in opposite directions,
// so a step's transfer time is the longer of the two.
// Ring time of a rank = its memory-bound passes + its local compute (step 0) + sum over steps of
// max(compute on the blocks received in the step, transfer of the step): double buffering overlaps a
// step's transfer with attention.
// All-gather time = transfer, then all of the rank's attention (nothing can start before K/V are whole).
// The prediction of a plan is that of its slowest rank.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/ring/plan.hpp"

namespace dilatron::cli {

struct LinkModel {
  double tflops = 300;       // sustained attention TFLOP/s per GPU
  int gpus_per_node = 8;
  double nvlink_gbs = 300;   // per GPU, per direction, within a node
  double network_gbs = 50;   // per GPU, per direction, across nodes
  double hbm_gbs = 3350;     // per GPU: the ring's memory-bound passes (H100 SXM's HBM3)
};

// The ring's memory-bound passes on one rank, in bytes read plus written (0 with one rank).
std::int64_t ring_pass_bytes(const ring::Schedule& schedule, const ring::RankPlan& rank);

// Attended query-key pairs per batch element among the rows of one rank (step 0). A double: a single
// rank can attend more than 2^63. Those with received blocks are the plan's (ring::Compute::pairs).
double local_pairs(const ring::Schedule& schedule, ring::RowRange rows);

struct RankCost {
  int rank = 0;
  std::int64_t rows = 0, send_bytes = 0, recv_bytes = 0, memory_bytes = 0;
  std::int64_t backward_memory_bytes = 0;  // the ring's backward (ring::RankPlan); 0 for the all-gather
  int steps = 0;  // exchange steps in which the rank sends or receives
  double flops = 0, predicted_ms = 0;
};

RankCost ring_cost(const ring::Schedule& schedule, const ring::RankPlan& rank, const LinkModel& model);

// Every rank's, in rank order; one rank plan at a time, so memory stays O(P) at any P.
std::vector<RankCost> ring_costs(const ring::Schedule& schedule, const LinkModel& model);

// Every rank receives the other ranks' K and V whole and holds full K/V, its Q and O shards and LSE
// (no fp32 accumulator: with every key present, the rank's attention runs as on one device). A ring
// all-gather takes ranks - 1 steps; the attention FLOPs equal the ring's (`ring`, from ring_costs).
std::vector<RankCost> all_gather_costs(const ring::Schedule& schedule, const LinkModel& model,
                                       const std::vector<RankCost>& ring);

}  // namespace dilatron::cli
