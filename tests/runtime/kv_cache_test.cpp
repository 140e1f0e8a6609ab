// DilatedKVCache on the host: decoding token by token and in chunks after a prompt equals the last rows
// of the causal forward (reference_forward) over everything so far, in both modes, with GQA, partial
// segments and r not dividing w; rows at different positions, forked, reset and rewound stay exact; the
// cache's bytes stay flat as the context grows; bad calls change nothing.
#include <gtest/gtest.h>

#include <dilatron/kv_cache.hpp>
#include <dilatron/reference.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/problem.hpp"
#include "templates/dilatron/index.cuh"
#include "tests/support/expect_error.hpp"
#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

// One batch row's whole sequence so far, float64 [N, heads, D].
struct Sequence {
  std::int64_t heads, kv_heads, dim;
  std::vector<double> q, k, v;

  std::int64_t rows() const { return std::int64_t(q.size()) / (heads * dim); }
  void grow(std::int64_t n, std::mt19937_64& rng) {
    std::normal_distribution<double> normal;
    for (std::int64_t i = 0; i < n * heads * dim; ++i) q.push_back(normal(rng));
    for (std::int64_t i = 0; i < n * kv_heads * dim; ++i) k.push_back(normal(rng)), v.push_back(normal(rng));
  }
  // The causal forward over every row: O [N, H, D] and LSE [H, N].
  std::pair<std::vector<double>, std::vector<double>> forward(const Config& config) {
    const std::int64_t n = rows();
    std::vector<double> out(q.size()), lse(std::size_t(heads * n));
    const auto view = [&](std::vector<double>& x, std::int64_t h) { return TensorView::contiguous(x.data(), DType::f64, {1, n, h, dim}); };
    std::vector<float> lse32(lse.size());
    const TensorView l32 = TensorView::contiguous(lse32.data(), DType::f32, {1, heads, n, 1});
    reference_forward(config, view(q, heads), view(k, kv_heads), view(v, kv_heads), view(out, heads), &l32);
    return {out, {lse32.begin(), lse32.end()}};
  }
};

// A decode step's tensors: rows [from, from + n) of every batch row's sequence, packed as [B, n, heads, D].
struct Step {
  std::vector<double> q, k, v, out;
  std::vector<float> lse;
  TensorView qv, kv, vv, ov, lv;

  Step(const std::vector<Sequence>& rows, const std::vector<std::int64_t>& from, std::int64_t n) {
    const Sequence& s = rows.front();
    const std::int64_t batch = std::int64_t(rows.size());
    for (std::size_t b = 0; b < rows.size(); ++b) {
      const auto copy = [&](const std::vector<double>& src, std::int64_t heads, std::vector<double>& dst) {
        dst.insert(dst.end(), src.begin() + from[b] * heads * s.dim, src.begin() + (from[b] + n) * heads * s.dim);
      };
      copy(rows[b].q, s.heads, q);
      copy(rows[b].k, s.kv_heads, k);
      copy(rows[b].v, s.kv_heads, v);
    }
    out.assign(q.size(), NAN);
    lse.assign(std::size_t(batch * s.heads * n), NAN);
    qv = TensorView::contiguous(q.data(), DType::f64, {batch, n, s.heads, s.dim});
    kv = TensorView::contiguous(k.data(), DType::f64, {batch, n, s.kv_heads, s.dim});
    vv = TensorView::contiguous(v.data(), DType::f64, {batch, n, s.kv_heads, s.dim});
    ov = TensorView::contiguous(out.data(), DType::f64, {batch, n, s.heads, s.dim});
    lv = TensorView::contiguous(lse.data(), DType::f32, {batch, s.heads, n, 1});
  }
  void run(DilatedKVCache& cache) { cache.decode(qv, kv, vv, ov, &lv); }
};

// The step's outputs for batch row b against the full forward's rows [from, from + n) of its sequence.
void expect_rows_match(const Step& step, std::int64_t b, Sequence& seq, const Config& config, std::int64_t from) {
  const auto [out, lse] = seq.forward(config);
  const std::int64_t n = step.ov.shape[1], row = seq.heads * seq.dim, total = seq.rows();
  for (std::int64_t i = 0; i < n * row; ++i) {
    ASSERT_NEAR(step.out[std::size_t(b * n * row + i)], out[std::size_t(from * row + i)], 1e-12)
        << "batch row " << b << ", new row " << i / row;
  }
  for (std::int64_t h = 0; h < seq.heads; ++h) {
    for (std::int64_t i = 0; i < n; ++i) {
      const double got = step.lse[std::size_t((b * seq.heads + h) * n + i)], want = lse[std::size_t(h * total + from + i)];
      if (std::isinf(want)) ASSERT_EQ(got, want);
      else ASSERT_NEAR(got, want, 1e-5 * std::max(1.0, std::fabs(want)));
    }
  }
}

struct Case {
  Config config;
  std::int64_t heads, kv_heads;
};

// Both modes, GQA, r not dividing w, r larger than w, segments that do not nest.
const std::vector<Case> kCases = {
    {make_config({4, 8, 16}, {1, 2, 4}, Mode::longnet, true), 4, 2},
    {make_config({5, 7}, {2, 3}, Mode::longnet, true), 3, 3},
    {make_config({6, 4, 9}, {1, 5, 2}, Mode::head_groups, true), 3, 1},
    {make_config({3, 12}, {1, 3}, Mode::longnet, true), 6, 2},
};

// Decodes `total` rows of `batch` fresh sequences in steps of `chunks` (cycled), checking every step.
void decode_in_chunks(const Case& c, std::int64_t total, const std::vector<std::int64_t>& chunks, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  constexpr std::int64_t kBatch = 2, kDim = 4;
  std::vector<Sequence> rows(kBatch, Sequence{c.heads, c.kv_heads, kDim, {}, {}, {}});
  for (Sequence& s : rows) s.grow(total, rng);
  DilatedKVCache cache(c.config, {kBatch, c.heads, c.kv_heads, kDim, DType::f64});
  std::int64_t at = 0;
  for (std::size_t step = 0; at < total; ++step) {
    const std::int64_t n = std::min(chunks[step % chunks.size()], total - at);
    SCOPED_TRACE(::testing::Message() << "rows " << at << ".." << at + n);
    Step s(rows, {at, at}, n);
    s.run(cache);
    for (std::int64_t b = 0; b < kBatch; ++b) {
      Sequence prefix = rows[std::size_t(b)];  // the forward over rows [0, at + n) only
      prefix.q.resize(std::size_t((at + n) * c.heads * kDim));
      prefix.k.resize(std::size_t((at + n) * c.kv_heads * kDim));
      prefix.v.resize(prefix.k.size());
      expect_rows_match(s, b, prefix, c.config, at);
    }
    at += n;
    ASSERT_EQ(cache.position(0), at);
  }
}

}  // namespace

TEST(KVCache, TokenByTokenAfterAPromptEqualsTheCausalForward) {
  for (std::size_t i = 0; i < kCases.size(); ++i) {
    SCOPED_TRACE(i);
    decode_in_chunks(kCases[i], 41, {13, 1}, 100 + i);  // a 13-row prompt, then one token at a time
  }
}

TEST(KVCache, ChunksOfSeveralSizesEqualTheCausalForward) {
  for (std::size_t i = 0; i < kCases.size(); ++i) {
    SCOPED_TRACE(i);
    decode_in_chunks(kCases[i], 60, {2, 5, 1, 17, 3}, 200 + i);  // chunks across and inside segments
  }
}

// Row 1 restarts, is forked from row 0, and rewinds: every row stays equal to the forward over its own
// sequence.
TEST(KVCache, RowsAtTheirOwnPositionsResetForkAndRewind) {
  const Case& c = kCases[0];
  std::mt19937_64 rng(3);
  constexpr std::int64_t kDim = 4;
  std::vector<Sequence> rows(2, Sequence{c.heads, c.kv_heads, kDim, {}, {}, {}});
  DilatedKVCache cache(c.config, {2, c.heads, c.kv_heads, kDim, DType::f64});
  const auto step = [&](std::int64_t n) {
    std::vector<std::int64_t> from;
    for (std::size_t b = 0; b < rows.size(); ++b) {
      from.push_back(rows[b].rows());
      rows[b].grow(n, rng);
    }
    Step s(rows, from, n);
    s.run(cache);
    for (std::int64_t b = 0; b < 2; ++b) {
      expect_rows_match(s, b, rows[std::size_t(b)], c.config, from[std::size_t(b)]);
      ASSERT_EQ(cache.position(b), rows[std::size_t(b)].rows());
    }
  };
  step(10);
  cache.reset(1);
  rows[1] = Sequence{c.heads, c.kv_heads, kDim, {}, {}, {}};
  step(3);  // row 0 at 10..12, row 1 at 0..2
  step(1);
  cache.fork(0, 1);
  rows[1] = rows[0];
  step(2);  // both from 14, with different new rows
  step(3);  // both at 19
  // Rewind row 0 by two rows (inside every branch's current segment, which all began at 16), then
  // decode two other rows.
  const std::int64_t back = rows[0].rows() - 2;
  ASSERT_EQ(back, 17);
  cache.rewind(0, back);
  for (std::vector<double>* x : {&rows[0].q, &rows[0].k, &rows[0].v}) {
    x->resize(x->size() / std::size_t(rows[0].rows()) * std::size_t(back));
  }
  step(2);
  expect_error([&] { cache.rewind(0, 3); }, {"rewind: batch row 0 to position 3 needs rows before 16", "w = 4"});
  expect_error([&] { cache.rewind(1, 999); }, {"it can go back to [0, 21], not 999"});
  expect_error([&] { cache.fork(0, 2); }, {"fork (to): batch row 2 is outside [0, 2)"});
  EXPECT_EQ(cache.position(0), 19);
  EXPECT_EQ(cache.position(1), 21);
}

// The cache keeps the selected rows of each branch's current segment for the offsets its kv heads'
// query heads use: the same bytes at the start and far past every segment, and exactly that count.
TEST(KVCache, BytesStayFlatAndMatchTheLayout) {
  const Config c = make_config({8, 16}, {1, 4}, Mode::longnet, true);
  const KVCacheShape shape{3, 4, 4, 8, DType::f16};
  DilatedKVCache cache(c, shape);
  // MHA: each kv head serves one query head, so one offset per branch: w/r rows (8 and 4), K and V.
  const std::size_t per_row = std::size_t(4 * (8 + 4) * 2 * 8 * 2);
  EXPECT_EQ(DilatedKVCache::bytes_per_row(c, shape), per_row);
  EXPECT_EQ(cache.bytes(), 3 * per_row);
  for (std::int64_t n = 0; n < 100; n += 25) {
    std::vector<std::uint16_t> q(std::size_t(3 * 25 * 4 * 8)), out(q.size());
    const TensorView qv = TensorView::contiguous(q.data(), DType::f16, {3, 25, 4, 8});
    cache.decode(qv, qv, qv, TensorView::contiguous(out.data(), DType::f16, {3, 25, 4, 8}));
    EXPECT_EQ(cache.bytes(), 3 * per_row) << "after " << n + 25 << " rows";
  }
  // GQA with all offsets on one kv head: every offset of the r = 4 branch, each w/r rows.
  const KVCacheShape gqa{1, 4, 1, 8, DType::bf16};
  EXPECT_EQ(DilatedKVCache::bytes_per_row(c, gqa), std::size_t((8 + 4 * 4) * 2 * 8 * 2));
}

TEST(KVCache, BadCallsChangeNothing) {
  const Case& c = kCases[0];
  Config not_causal = c.config;
  not_causal.causal = false;
  expect_error([&] { DilatedKVCache(not_causal, {1, 4, 2, 4, DType::f64}); }, {"the config must be causal"});
  expect_error([&] { DilatedKVCache(c.config, {1, 4, 3, 4, DType::f64}); }, {"kv_heads = 3 must divide heads = 4"});
  expect_error([&] { DilatedKVCache(c.config, {0, 4, 2, 4, DType::f64}); }, {"batch = 0 must be >= 1"});

  DilatedKVCache cache(c.config, {2, c.heads, c.kv_heads, 4, DType::f64, 12});
  std::mt19937_64 rng(9);
  std::vector<Sequence> rows(2, Sequence{c.heads, c.kv_heads, 4, {}, {}, {}});
  for (Sequence& s : rows) s.grow(20, rng);
  Step prompt(rows, {0, 0}, 10);
  prompt.run(cache);
  const auto unchanged = [&](const Step& s) {
    EXPECT_EQ(cache.position(0), 10);
    EXPECT_EQ(cache.position(1), 10);
    for (double x : s.out) ASSERT_TRUE(std::isnan(x)) << "out was written";
  };
  {
    Step s(rows, {10, 10}, 3);  // 13 positions: past the cache's 12
    expect_error([&] { s.run(cache); }, {"batch row 0 is at position 10; 3 more rows pass the cache's 12 positions"});
    unchanged(s);
  }
  {
    std::vector<Sequence> one(1, rows[0]);
    Step s(one, {10}, 1);  // a batch of 1 against a cache of 2
    expect_error([&] { s.run(cache); }, {"decode: the batch (q's dim 0) is 1 but the cache holds 2"});
    unchanged(s);
  }
  {
    Step s(rows, {10, 10}, 1);
    std::vector<float> q32(s.q.begin(), s.q.end()), k32(s.k.begin(), s.k.end()), v32(s.v.begin(), s.v.end());
    const auto as32 = [](std::vector<float>& x, const TensorView& like) { return TensorView{x.data(), DType::f32, like.shape, like.strides}; };
    expect_error([&] { cache.decode(as32(q32, s.qv), as32(k32, s.kv), as32(v32, s.vv), s.ov); },
                 {"decode: q, k and v are f32 but the cache holds f64"});
    TensorView fewer_heads = s.qv;
    fewer_heads.shape[2] = 2;
    expect_error([&] { cache.decode(fewer_heads, s.kv, s.vv, s.ov); }, {"q"});
    unchanged(s);
  }
  Step next(rows, {10, 10}, 2);
  next.run(cache);  // the cache still works, and exactly
  for (std::int64_t b = 0; b < 2; ++b) {
    Sequence prefix = rows[std::size_t(b)];
    prefix.q.resize(std::size_t(12 * c.heads * 4));
    prefix.k.resize(std::size_t(12 * c.kv_heads * 4));
    prefix.v.resize(prefix.k.size());
    expect_rows_match(next, b, prefix, c.config, 10);
  }
}
