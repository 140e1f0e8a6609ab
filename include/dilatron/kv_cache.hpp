// Generation: a bounded KV cache for one layer and its decode step (docs/SEMANTICS.md, "Decoding").
//
//   dilatron::DilatedKVCache cache(config, {batch, heads, kv_heads, head_dim, dtype});
//   cache.decode(q, k_new, v_new, out);   // a prompt (many rows), then one token at a time
//
// A causal dilated branch only reads the rows of a query's own segment, so the cache keeps, for every
// branch, kv head and offset some query head reading that kv head uses, the selected rows of the
// current segment, and nothing older: its bytes depend on the configuration, never on the context
// length (bytes_per_row). Every call appends the new rows of every batch row at that row's own position
// and attends them causally to what the cache holds and to each other, exactly as the causal forward
// over the whole sequence would: out equals the last rows of reference_forward on everything so far.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/dilatron.hpp>
#include <dilatron/tensor.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>

namespace dilatron {

struct KVCacheShape {
  std::int64_t batch, heads, kv_heads, head_dim;
  DType dtype;  // of the cached K and V, and of the q, k and v a decode takes
  // The longest context a batch row may reach (positions 0 .. max_positions - 1); a decode past it is
  // an error that changes nothing.
  std::int64_t max_positions = std::numeric_limits<std::int64_t>::max();
  // false: the cache and every tensor a call takes are host memory and the step runs the float64
  // reference arithmetic. true: they are device memory of the current context and the step runs the
  // decode kernels (float16 or bfloat16, head dim a multiple of 32), asynchronously on the call's stream.
  bool on_device = false;
};

class DilatedKVCache {
 public:
  // The config must be causal (a decoded row cannot see later ones). Throws dilatron::Error naming a
  // bad value. A cache is one sequence of steps: its calls must not overlap from several threads, and
  // on the device they must follow one stream order (one stream, or streams the caller orders).
  DilatedKVCache(Config config, KVCacheShape shape);
  ~DilatedKVCache();
  DilatedKVCache(DilatedKVCache&&) noexcept;
  DilatedKVCache& operator=(DilatedKVCache&&) noexcept;

  // q [B, n, H, D], k and v [B, n, Hkv, D] in the cache's dtype: n new rows for every batch row, at
  // positions position(b) .. position(b) + n - 1. Writes out [B, n, H, D] (any dtype) and, when given,
  // lse float32 [B, H, n, 1], then appends the new rows. Every check runs first: on an error neither the
  // cache nor out nor lse has changed.
  void decode(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
              const TensorView* lse = nullptr, Stream stream = nullptr);

  // Every batch row, or row `row`, starts a new sequence at position 0.
  void reset_all(Stream stream = nullptr);
  void reset(std::int64_t row, Stream stream = nullptr);
  // Row `to` continues from where row `from` is (beam search): its position and cached rows become
  // `from`'s.
  void fork(std::int64_t from, std::int64_t to, Stream stream = nullptr);
  // Row `row` goes back to `position` (speculative decoding rejecting tokens): at most its position, and
  // no earlier than the start of the segment it is in for any branch, whose rows the cache has dropped.
  void rewind(std::int64_t row, std::int64_t position, Stream stream = nullptr);

  std::int64_t position(std::int64_t row) const;  // rows decoded so far by batch row `row`
  std::size_t bytes() const noexcept;              // what the cache holds: batch * bytes_per_row
  const Config& config() const noexcept;
  const KVCacheShape& shape() const noexcept;

  // The bytes one batch row's cache takes for this configuration and shape, whatever the context.
  static std::size_t bytes_per_row(const Config& config, const KVCacheShape& shape);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dilatron
