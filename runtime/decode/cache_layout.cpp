#include "runtime/decode/cache_layout.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"

namespace dilatron::decode {

CacheLayout::CacheLayout(const Config& config, const KVCacheShape& shape) : kv_heads_(shape.kv_heads) {
  const std::size_t row = std::size_t(shape.head_dim) * dtype_size(shape.dtype);
  index_.resize(config.branches() * std::size_t(shape.kv_heads));
  for (std::int64_t h = 0; h < shape.heads; ++h) {
    const std::int64_t g = index::kv_head(h, shape.heads, shape.kv_heads);
    for (const HeadBranch& br : head_branches(config, h, shape.heads)) {
      std::vector<int>& slots = index_[std::size_t(br.index) * std::size_t(kv_heads_) + std::size_t(g)];
      if (slots.size() <= std::size_t(br.offset)) slots.resize(std::size_t(br.offset) + 1, -1);
      if (slots[std::size_t(br.offset)] >= 0) continue;  // another head of this kv head reads the same rows
      const std::int64_t capacity = index::selected_count(br.w, br.offset, br.r);
      slots[std::size_t(br.offset)] = int(blocks_.size());
      blocks_.push_back({br.index, g, br.offset, capacity, row_bytes_, row_bytes_ + std::size_t(capacity) * row});
      row_bytes_ += 2 * std::size_t(capacity) * row;
    }
  }
}

const CacheBlock& CacheLayout::block(int branch, std::int64_t kv_head, std::int64_t offset) const {
  const std::vector<int>& slots = index_[std::size_t(branch) * std::size_t(kv_heads_) + std::size_t(kv_head)];
  if (offset < 0 || std::size_t(offset) >= slots.size() || slots[std::size_t(offset)] < 0) {
    throw Error(fmt::format("internal: the cache keeps no rows for branch {}, kv head {}, offset {}", branch, kv_head,
                            offset));
  }
  return blocks_[std::size_t(slots[std::size_t(offset)])];
}

}  // namespace dilatron::decode
