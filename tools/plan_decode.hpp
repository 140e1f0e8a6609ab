// `dilatron plan --decode`: what a DilatedKVCache holds for a configuration (include/dilatron/kv_cache.hpp),
// per batch row and for the batch, next to the two caches it avoids: a window of the largest segment
// (every row a later query could read, for every offset) and the whole history of the context.
#pragma once

#include <dilatron/config.hpp>

#include "runtime/ring/plan.hpp"

namespace dilatron::cli {

// The config must be causal (decoding is); shape.seq_len is the context length.
void print_decode_plan(const Config& config, const ring::Shape& shape, bool json);

}  // namespace dilatron::cli
