// How a sequence of N rows is split across P ranks: rank p holds rows [begin(p), begin(p + 1)). Every
// rank gets N / P rows and the first N % P ranks one more, so shards differ by at most one row.
#pragma once

#include <dilatron/tensor.hpp>

#include <cstddef>
#include <cstdint>

namespace dilatron::ring {

struct RowRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t size() const noexcept { return end - begin; }
  bool operator==(const RowRange&) const = default;
};

// Needs 1 <= ranks <= seq_len (checked by the plan).
constexpr RowRange shard(std::int64_t seq_len, int ranks, int rank) {
  const std::int64_t base = seq_len / ranks, extra = seq_len % ranks;
  const std::int64_t begin = rank * base + (rank < extra ? rank : extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

// The rank holding `row`.
constexpr int owner(std::int64_t row, std::int64_t seq_len, int ranks) {
  const std::int64_t base = seq_len / ranks, extra = seq_len % ranks, big = extra * (base + 1);
  return int(row < big ? row / (base + 1) : extra + (row - big) / base);
}

// Rows [rows.begin, rows.end) of `t` along dimension `dim` (1 for Q, K, V and O; 2 for LSE): a shard is
// a view into the whole tensor, never a copy.
inline TensorView rows_of(const TensorView& t, RowRange rows, int dim) {
  TensorView shard = t;
  shard.data = static_cast<std::byte*>(t.data) + rows.begin * t.strides[std::size_t(dim)] * std::int64_t(dtype_size(t.dtype));
  shard.shape[std::size_t(dim)] = rows.size();
  return shard;
}

}  // namespace dilatron::ring
