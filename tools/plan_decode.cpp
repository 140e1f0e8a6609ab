#include "tools/plan_decode.hpp"

#include <dilatron/kv_cache.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>

#include "common/dtype.hpp"
#include "runtime/problem.hpp"
#include "tools/commands.hpp"
#include "tools/text.hpp"

namespace dilatron::cli {

void print_decode_plan(const Config& config, const ring::Shape& shape, bool json) {
  if (!config.causal) throw UsageError("--decode: decoding is causal: add --causal");
  check_config_flags(config);
  if (shape.heads % shape.kv_heads != 0) {
    throw UsageError(fmt::format("--kv-heads {} does not divide --heads {}", shape.kv_heads, shape.heads));
  }
  const KVCacheShape cache{shape.batch, shape.heads, shape.kv_heads, shape.head_dim, shape.dtype};
  const auto per_row = std::int64_t(DilatedKVCache::bytes_per_row(config, cache));
  // K and V rows of every kv head: the largest segment's window, and the whole context.
  const std::int64_t row_bytes = 2 * shape.kv_heads * shape.head_dim * std::int64_t(dtype_size(shape.dtype));
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (shape.seq_len > kMax / row_bytes || shape.batch > kMax / std::max<std::int64_t>(per_row, 1)) {
    throw UsageError(fmt::format("--decode: --seq-len {} or --batch {} makes more bytes than 64 bits count",
                                 shape.seq_len, shape.batch));
  }
  const std::int64_t window = row_bytes * *std::max_element(config.segments.begin(), config.segments.end());
  const std::int64_t history = row_bytes * shape.seq_len;
  if (json) {
    const nlohmann::json out = {
        {"shape", {{"batch", shape.batch}, {"context", shape.seq_len}, {"heads", shape.heads},
                   {"kv_heads", shape.kv_heads}, {"head_dim", shape.head_dim}, {"dtype", to_string(shape.dtype)}}},
        {"config", {{"segments", config.segments}, {"dilations", config.dilations}, {"mode", to_string(config.mode)}}},
        {"cache_bytes_per_row", per_row},
        {"cache_bytes", per_row * shape.batch},
        {"largest_segment_window_bytes_per_row", window},
        {"full_history_bytes_per_row", history},
    };
    fmt::print("{}\n", json_text(out));
    return;
  }
  fmt::print("KV cache for decoding, H={} Hkv={} D={} {}, context {} rows:\n", shape.heads, shape.kv_heads,
             shape.head_dim, to_string(shape.dtype), shape.seq_len);
  fmt::print("  DilatedKVCache (each branch's current segment, the offsets its kv heads use): {} per batch row, {} for "
             "{} row(s); the same at any context\n",
             size_text(double(per_row)), size_text(double(per_row) * double(shape.batch)), shape.batch);
  fmt::print("  a window of the largest segment, every row: {} per batch row ({:.3g}x)\n", size_text(double(window)),
             double(window) / double(per_row));
  fmt::print("  the whole history of {} rows: {} per batch row ({:.3g}x)\n", shape.seq_len, size_text(double(history)),
             double(history) / double(per_row));
}

}  // namespace dilatron::cli
