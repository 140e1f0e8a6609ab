// What the GPU ring executor launches on a received block, as pure data: which query rows and heads
// each attention_block launch takes, and where each part of a packed block starts. Kept apart from the
// driver so CI checks it on the CPU against the definition of dilated attention.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/ring/plan.hpp"

namespace dilatron::ring {

// One attention_block launch: heads [head_begin, head_end) (one offset and one kv head), queries = the
// rows of [q_begin, q_end) (the rank's rows of the block's segment) that (w, r, offset) select, keys =
// rows key_first + j * r (j < key_count) of a received part whose first element sits at
// `packed_element` of the block. `segment` is the block's segment counted from the one holding the
// rank's first row (args::AttentionArgs::block_segment).
struct AttendLaunch {
  std::int64_t head_begin = 0, head_end = 0;
  std::int64_t w = 1, r = 1, offset = 0;
  std::int64_t q_begin = 0, q_end = 0;
  std::int64_t key_first = 0, key_count = 0;
  std::int64_t packed_element = 0;
  std::int64_t segment = 0;
};

// Head h's offset in branch `branch`, or -1 when it takes no part there.
std::int64_t head_offset(const RingPlan& plan, std::int64_t h, int branch);

// `rank`'s queries of the block's segment to each part of the block (parts no query reads are left out).
std::vector<AttendLaunch> block_launches(const RingPlan& plan, int rank, const Block& block);

// The first element of each part in the packed block (in the plan's dtype).
std::vector<std::int64_t> part_elements(const Block& block, const Shape& shape);

}  // namespace dilatron::ring
