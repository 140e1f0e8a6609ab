#include "runtime/ring/device_launches.hpp"

#include <algorithm>

#include "templates/dilatron/index.cuh"

namespace dilatron::ring {
namespace {

// Launches over maximal runs of consecutive heads with equal key(h) >= 0: both modes give each
// (offset, kv head) a contiguous range of heads, so one launch per part or offset is the usual case.
template <class Key, class Emit>
void head_runs(std::int64_t heads, Key key, Emit emit) {
  for (std::int64_t begin = 0; begin < heads;) {
    const std::int64_t k = key(begin);
    std::int64_t end = begin + 1;
    while (end < heads && key(end) == k) ++end;
    if (k >= 0) emit(begin, end, k);
    begin = end;
  }
}

}  // namespace

std::int64_t head_offset(const RingPlan& plan, std::int64_t h, int branch) {
  const int mode = plan.config.mode == Mode::longnet ? index::kLongnet : index::kHeadGroups;
  return index::branch_offset(mode, h, plan.shape.heads, branch, std::int64_t(plan.config.branches()),
                              plan.config.dilations[std::size_t(branch)]);
}

std::vector<AttendLaunch> block_launches(const RingPlan& plan, int rank, const Block& block) {
  const RowRange rows = plan.per_rank.at(std::size_t(rank)).rows;
  const std::int64_t w = plan.config.segments[std::size_t(block.branch)];
  const std::int64_t r = plan.config.dilations[std::size_t(block.branch)];
  const std::int64_t q_begin = std::max(block.segment * w, rows.begin), q_end = std::min((block.segment + 1) * w, rows.end);
  const std::vector<std::int64_t> elements = part_elements(block, plan.shape);
  std::vector<AttendLaunch> launches;
  for (std::size_t p = 0; p < block.parts.size(); ++p) {
    const Block::Part& part = block.parts[p];
    if (index::selected_in(q_begin, q_end, w, part.offset, r).count == 0) continue;
    auto reads_part = [&](std::int64_t h) {
      const bool match = index::kv_head(h, plan.shape.heads, plan.shape.kv_heads) == part.kv_head &&
                         head_offset(plan, h, block.branch) == part.offset;
      return match ? std::int64_t(0) : std::int64_t(-1);
    };
    head_runs(plan.shape.heads, reads_part, [&](std::int64_t begin, std::int64_t end, std::int64_t) {
      launches.push_back({begin, end, w, r, part.offset, q_begin, q_end, part.first_row, part.rows, elements[p],
                          block.segment - rows.begin / w});
    });
  }
  return launches;
}

std::vector<std::int64_t> part_elements(const Block& block, const Shape& shape) {
  std::vector<std::int64_t> first;
  std::int64_t element = 0;
  for (const Block::Part& part : block.parts) {
    first.push_back(element);
    element += part.rows * shape.batch * 2 * shape.head_dim;
  }
  return first;
}

}  // namespace dilatron::ring
