// RingPlan: the whole schedule of a forward pass over P ranks, as pure data built from the config, the
// shape and P. It drives every transport (Host, Local, NCCL) alike, so CI proves its math on the CPU.
//
// Rank p holds rows shard(N, P, p) of Q, K, V, O and LSE. Per branch, a segment that lies inside one
// rank needs nothing from others: step 0 runs every rank's local attention (each local query against
// the selected keys of its own rows, every segment, every branch). A segment spanning a group of g
// ranks is a *spanning segment*; each member's part of it is a Block: the selected K/V rows of that
// branch it holds, packed. Over steps 1..g-1 the members exchange blocks directly: in step t the member
// at position i of the group sends its block to position (i + t) mod g and receives from (i - t) mod g,
// then attends its queries to the block received. With causal masking a block travels only to members
// whose rows come after it (the others could use none of its keys), so neither transfer nor compute
// happens for the rest. Every partial (O, LSE) is merged in fp32 with the overflow-safe LSE merge.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/ring/partition.hpp"

namespace dilatron::ring {

struct Shape {
  std::int64_t batch = 1, seq_len = 0, heads = 0, kv_heads = 0, head_dim = 0;
  DType dtype = DType::bf16;  // of Q, K, V and O
};

// The selected K/V rows of one branch that one rank holds of one spanning segment.
// Packed layout (what travels): for each entry of `parts` in order, for each batch element, for each
// selected row of the part in ascending order: the K row of kv head `part.kv_head` (head_dim
// elements), then the V row; elements in the shape's dtype.
struct Block {
  struct Part {
    std::int64_t kv_head;
    std::int64_t offset;      // the head offset in this branch whose rows these are
    std::int64_t first_row;   // global row of the part's first selected row
    std::int64_t rows;        // selected rows: first_row, first_row + r, ... (all inside `rows_held`)
  };
  int branch = 0;
  std::int64_t segment = 0;
  int owner = 0;       // the rank holding these rows
  RowRange rows_held;  // owner's shard intersected with the segment
  std::vector<Part> parts;  // one per (kv head, offset) some query head of some member needs; sorted
  std::int64_t bytes = 0;   // packed size
};

// One message of one step, seen from one rank.
struct Transfer {
  int step = 0;  // >= 1
  int peer = 0;
  int block = 0;  // index into RingPlan::blocks
  std::int64_t bytes = 0;  // the block's packed size
};

// Attention of this rank's queries (of the block's branch and segment) to a block received in `step`.
struct Compute {
  int step = 0;
  int block = 0;
  double pairs = 0;  // query-key pairs it attends per batch element (the work, for the cost model)
};

struct RankPlan {
  int rank = 0;
  RowRange rows;
  std::vector<Transfer> sends, receives;  // in step order
  std::vector<Compute> computes;          // in step order; one per received block
  std::int64_t send_bytes = 0, recv_bytes = 0;
  // Device memory of the rank. The GPU executor allocates exactly the workspace:
  // - forward: the fp32 (O, LSE) accumulator and two arenas in turn (double buffering), each as large as
  //   the most the rank sends plus receives in one step;
  // - backward: the forward's accumulator, every step's messages (the blocks received are attended
  //   again, so all of them stay), the return leg's two fp32 buffers used in turn (each the most one
  //   step moves, in fp32), O rounded to the dtype, delta, and fp32 dQ, dK and dV;
  // - backward given the forward's O and LSE: the same less the fp32 O accumulator and O rounded.
  // With one rank the forward and the backward are DilatedAttention's where its kernels take the call,
  // whose workspace (with O and LSE for the backward to recompute) is at most the figures here. The totals add the caller's tensors: Q, K, V, O and LSE for the forward; Q, K, V, dO, dQ, dK and dV
  // for the backward.
  std::int64_t forward_workspace_bytes = 0, backward_workspace_bytes = 0, backward_given_forward_workspace_bytes = 0;
  std::int64_t memory_bytes = 0;           // the forward's total
  std::int64_t backward_memory_bytes = 0;  // the backward's total
};

// One spanning segment of one branch: its members are ranks first_rank .. first_rank + size - 1, and
// member i holds block first_block + i.
struct Group {
  int branch = 0;
  std::int64_t segment = 0;
  int first_rank = 0, size = 0, first_block = 0;
};

// A (kv head, offset) pair some query head of a branch reads.
struct KvOffset {
  std::int64_t kv_head = 0, offset = 0;
  auto operator<=>(const KvOffset&) const = default;
};

// The query and kv heads of a branch that read one offset: counts depend on the offset alone, the kv
// heads reading it multiply a block's bytes and the query heads the pairs attended.
struct OffsetReaders {
  std::int64_t offset = 0, query_heads = 0, kv_heads = 0;
};

// The schedule in O(P) space: the spanning segments of every branch, found from the P - 1 rank
// boundaries. Blocks and each rank's messages derive from it on demand (RankPlanner), so a plan of a
// million ranks is described without ever holding its tens of millions of messages.
struct Schedule {
  Config config;
  Shape shape;
  int ranks = 1;
  int steps = 0;        // exchange steps after step 0 (0 when every segment is local)
  int block_count = 0;
  std::vector<Group> groups;                  // by branch, then segment
  std::vector<std::vector<KvOffset>> pairs;         // per branch: what its query heads read; sorted, distinct
  std::vector<std::vector<OffsetReaders>> readers;  // per branch, by offset
};

// Throws dilatron::Error for a bad config or shape, ranks < 1, ranks > seq_len, or more than 2^31 - 1
// blocks.
Schedule make_schedule(const Config& config, const Shape& shape, int ranks);

// Derives blocks and rank plans from a schedule (which must outlive it). Neighbouring ranks share their
// groups, so the planner keeps the members' figures of the last group of each branch and walks the
// groups forward: visiting the ranks in increasing order costs O(messages), however large the groups.
class RankPlanner {
 public:
  explicit RankPlanner(const Schedule& schedule);
  // The plan of `rank`, valid until the next call (its lists' storage is reused).
  const RankPlan& plan(int rank);
  Block block(int index);

 private:
  struct Members {
    int group = -1;
    std::vector<RowRange> held;          // each member's rows of the segment
    std::vector<std::int64_t> bytes;     // each member's packed block size
    std::vector<std::int64_t> selected;  // member m's selected rows of the branch's offset k: [m * offsets + k]
  };
  const Members& members(int group);
  int first_group_holding(int branch, int rank);
  void add_messages(int group, int rank);

  const Schedule& schedule_;
  std::vector<Members> members_;   // per branch
  std::vector<int> branch_begin_;  // per branch, and one past the last: where its groups start
  std::vector<int> cursor_;        // per branch: no group before it holds the last rank asked for
  int last_rank_ = 0;
  RankPlan plan_;
};

// The schedule with every block and rank plan materialized: what an executor runs (P is the number of
// devices, so this is the work itself).
struct RingPlan : Schedule {
  std::vector<Block> blocks;
  std::vector<RankPlan> per_rank;  // indexed by rank
};

// Throws dilatron::Error for a bad config or shape, ranks < 1, or ranks > seq_len. Runs check() on the
// result.
RingPlan make_ring_plan(const Config& config, const Shape& shape, int ranks);

// The static check that runs before anything is sent: every send has exactly one matching receive
// (same step, same block, peers swapped) and vice versa, every received block is computed once in its
// step, no rank talks to itself. Throws dilatron::Error naming the first mismatch (which would be a
// deadlock at run time).
void check(const RingPlan& plan);

// The transfers (or computes) of one step, in block order: a rank's lists are in (step, block) order, so
// this is a binary search, and both ends of a pair list the same blocks in the same order (the
// backward's return leg pairs its messages this way).
template <class Item>
std::span<const Item> in_step(const std::vector<Item>& items, int step) {
  const auto first = std::lower_bound(items.begin(), items.end(), step, [](const Item& x, int s) { return x.step < s; });
  const auto last = std::upper_bound(first, items.end(), step, [](int s, const Item& x) { return s < x.step; });
  return {first, last};
}

}  // namespace dilatron::ring
