// Random ring problems small enough to enumerate row by row: P from 1 up to N, GQA, both modes, causal,
// segments longer than N or than a shard, dilations larger than segments.
#pragma once

#include <dilatron/config.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <random>
#include <string>

#include "runtime/ring/plan.hpp"

namespace dilatron::test {

struct RingCase {
  Config config;
  ring::Shape shape;
  int ranks = 1;

  std::string describe() const {
    return fmt::format("N={} P={} B={} H={} Hkv={} D={} {} {} causal={} segments {} dilations {}", shape.seq_len, ranks,
                       shape.batch, shape.heads, shape.kv_heads, shape.head_dim, to_string(shape.dtype),
                       to_string(config.mode), config.causal, fmt::join(config.segments, ","),
                       fmt::join(config.dilations, ","));
  }
};

// dtype is f16 or bf16 (what `dilatron plan` takes).
inline RingCase random_ring_case(std::mt19937_64& rng, std::int64_t max_seq_len, int max_ranks) {
  auto pick = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  RingCase c;
  c.shape.seq_len = pick(1, max_seq_len);
  c.ranks = int(pick(1, std::min<std::int64_t>(c.shape.seq_len, max_ranks)));
  c.shape.batch = pick(1, 3);
  c.shape.head_dim = pick(1, 64);
  c.shape.dtype = pick(0, 1) ? DType::bf16 : DType::f16;
  c.shape.heads = pick(1, 8);
  do c.shape.kv_heads = pick(1, c.shape.heads);
  while (c.shape.heads % c.shape.kv_heads != 0);
  for (std::int64_t i = 0, branches = pick(1, std::min<std::int64_t>(3, c.shape.heads)); i < branches; ++i) {
    c.config.segments.push_back(pick(1, c.shape.seq_len + 8));
    c.config.dilations.push_back(pick(1, 8));
  }
  c.config.mode = pick(0, 1) ? Mode::longnet : Mode::head_groups;
  c.config.causal = pick(0, 1) == 1;
  return c;
}

}  // namespace dilatron::test
