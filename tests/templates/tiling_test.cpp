// The attention kernel's work decomposition, replayed on the host with the same index functions the
// kernel compiles: every CTA of the grid, every query of its tile, every key tile it loads and the mask
// it applies (its split into unmasked and masked key tiles and its 32-bit mask arithmetic). Together they
// must attend exactly the pairs of the definition, each once.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "templates/dilatron/index.cuh"
#include "tests/support/dense_reference.hpp"

namespace ix = dilatron::index;

namespace {

using Pairs = std::map<std::pair<long long, long long>, int>;  // (query row, key row) -> times attended

// What the kernel attends for one head and branch, as the grid walks it.
// `origin`: the view's first row in the sequence (a ring rank's shard); rows are the view's.
Pairs kernel_pairs(long long n, long long w, long long r, long long offset, bool causal, long long block_m,
                   long long block_n, long long origin = 0) {
  Pairs pairs;
  for (long long x = 0; x < ix::query_tile_count(n, w, r, block_m, origin); ++x) {
    const ix::QueryTile tile = ix::query_tile(x, n, w, r, offset, block_m, origin);
    if (!tile.active) continue;
    const long long key_tiles = ix::ceil_div(ix::key_end(tile.count, tile.q_first, block_m, causal), block_n);
    const long long plain_tiles = ix::unmasked_key_tiles(tile.count, tile.q_first, block_n, causal);
    // As the kernel computes them: rows of the last key tile, and per tile the 32-bit mask limits.
    const long long last_rows = std::min(tile.count - (key_tiles - 1) * block_n, block_n);
    for (long long kt = 0; kt < key_tiles; ++kt) {
      const long long k_first = kt * block_n;
      const bool masked = kt >= plain_tiles;
      if (masked == ix::key_tile_unmasked(k_first, block_n, tile.q_first, tile.count, causal)) {
        ADD_FAILURE() << "key tile " << kt << ": the unmasked tiles are not exactly the first " << plain_tiles;
      }
      const int key_limit = int(kt == key_tiles - 1 ? last_rows : block_n);
      const int diagonal = int(static_cast<unsigned>(tile.q_first) - unsigned(kt * block_n));
      for (long long q = tile.q_first; q < tile.q_first + block_m; ++q) {
        if (q >= tile.count) continue;  // padding rows are computed but never stored
        for (int kl = 0; kl < block_n; ++kl) {
          const int ql = int(q - tile.q_first);
          const bool visible = !masked || (kl < key_limit && (!causal || kl <= ql + diagonal));
          if (visible != ix::key_visible(k_first + kl, q, tile.count, causal)) {
            ADD_FAILURE() << "key " << k_first + kl << " of query " << q << ": the kernel's mask disagrees";
          }
          if (visible) ++pairs[{tile.first_row + q * r, tile.first_row + (k_first + kl) * r}];
        }
      }
    }
  }
  return pairs;
}

// The same pairs straight from the definition (tests/support/dense_reference.hpp's selection), among the
// rows [origin, origin + n) of the sequence, numbered from the view's first.
Pairs definition_pairs(long long n, long long w, long long r, long long offset, bool causal, long long origin = 0) {
  const auto segment = dilatron::test::dense_selection(origin + n, w, r, offset);
  Pairs pairs;
  for (long long q = origin; q < origin + n; ++q) {
    for (long long k = origin; k < origin + n; ++k) {
      if (segment[q] >= 0 && segment[q] == segment[k] && (!causal || k <= q)) ++pairs[{q - origin, k - origin}];
    }
  }
  return pairs;
}

}  // namespace

TEST(Tiling, TheGridAttendsExactlyTheDefinedPairsOnce) {
  std::mt19937_64 rng(99);
  auto uniform = [&](long long lo, long long hi) { return std::uniform_int_distribution<long long>(lo, hi)(rng); };
  for (int trial = 0; trial < 400; ++trial) {
    const long long n = uniform(1, 300), w = uniform(1, 320), r = uniform(1, 20), offset = uniform(0, r - 1);
    const bool causal = trial % 2 == 0;
    const long long block_m = trial % 3 == 0 ? 64 : 128, block_n = trial % 4 == 0 ? 32 : 64;
    SCOPED_TRACE(::testing::Message() << "n=" << n << " w=" << w << " r=" << r << " offset=" << offset
                                      << " causal=" << causal << " tiles " << block_m << "x" << block_n);
    ASSERT_EQ(kernel_pairs(n, w, r, offset, causal, block_m, block_n), definition_pairs(n, w, r, offset, causal));
  }
}

// A ring rank's shard: the view starts at any row, mid-segment; its segments are the sequence's cut to it.
TEST(Tiling, AViewStartingInsideTheSequenceAttendsItsOwnPairsOnce) {
  std::mt19937_64 rng(7);
  auto uniform = [&](long long lo, long long hi) { return std::uniform_int_distribution<long long>(lo, hi)(rng); };
  for (int trial = 0; trial < 400; ++trial) {
    const long long n = uniform(1, 200), w = uniform(1, 160), r = uniform(1, 12), offset = uniform(0, r - 1);
    const long long origin = trial % 5 == 0 ? w * uniform(0, 3) : uniform(0, 500);
    const bool causal = trial % 2 == 0;
    const long long block_m = trial % 3 == 0 ? 64 : 128, block_n = trial % 4 == 0 ? 32 : 64;
    SCOPED_TRACE(::testing::Message() << "n=" << n << " w=" << w << " r=" << r << " offset=" << offset << " origin="
                                      << origin << " causal=" << causal);
    ASSERT_EQ(kernel_pairs(n, w, r, offset, causal, block_m, block_n, origin),
              definition_pairs(n, w, r, offset, causal, origin));
  }
}

TEST(Tiling, GridCoversEverySegmentAndNoMore) {
  EXPECT_EQ(ix::query_tile_count(4096, 16384, 1, 64), 64) << "w > N: only the rows that exist";
  EXPECT_EQ(ix::query_tile_count(262144, 2048, 1, 64), 128 * 32);
  EXPECT_EQ(ix::query_tile_count(262144, 16384, 6, 64), 16 * 43);
  EXPECT_EQ(ix::query_tile_count(100, 64, 1, 64), 2) << "one full segment, then a 36-row tail";
  EXPECT_FALSE(ix::query_tile(0, 100, 64, 70, 65, 64).active) << "offset past the segment end selects nothing";
}
