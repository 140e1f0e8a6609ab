// Where a DilatedKVCache keeps what later queries can read, per batch row: for every branch, kv head
// and offset that some query head reading that kv head uses in that branch, a block of the selected
// rows of the current segment (selected index j of the segment at slot j), K then V. A query head with
// offset o in a branch reads exactly its block: its rows are contiguous, and a segment's rows never
// wrap. The alternatives hold more: a window of every row since the largest segment's start keeps
// max(w) rows per kv head (all offsets, even those no head of that kv head uses), and per-branch
// windows of every row sum(w). docs/ARCHITECTURE.md ("Decoding") compares them for the LongNet preset.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/kv_cache.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dilatron::decode {

struct CacheBlock {
  int branch;
  std::int64_t kv_head, offset;
  std::int64_t capacity;  // selected rows of a whole segment: selected_count(w, offset, r)
  std::size_t k_at, v_at; // byte offsets in a batch row's cache
};

class CacheLayout {
 public:
  CacheLayout(const Config& config, const KVCacheShape& shape);

  // The block kv head `kv_head` keeps for branch `branch` and offset `offset` (one exists for every
  // (branch, offset) a query head of that kv head takes part in).
  const CacheBlock& block(int branch, std::int64_t kv_head, std::int64_t offset) const;
  const std::vector<CacheBlock>& blocks() const noexcept { return blocks_; }
  std::size_t row_bytes() const noexcept { return row_bytes_; }

 private:
  std::vector<CacheBlock> blocks_;
  std::vector<std::vector<int>> index_;  // [branch * kv_heads + kv_head][offset] -> block, -1 for none
  std::int64_t kv_heads_;
  std::size_t row_bytes_ = 0;
};

}  // namespace dilatron::decode
