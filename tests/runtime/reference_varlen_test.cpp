// The host reference over packed variable-length batches: each packed sequence equals the dense
// definition applied to that sequence alone (segments and residues counted from its first row), its
// gradients equal the reference's on the sequence copied out, and bad offsets are errors before anything
// is written.
#include <gtest/gtest.h>

#include <dilatron/reference.hpp>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "tests/support/dense_reference.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

constexpr std::int64_t H = 4, Hkv = 2, D = 8;

std::vector<std::int32_t> offsets(const std::vector<std::int32_t>& lengths) {
  std::vector<std::int32_t> cu{0};
  for (std::int32_t n : lengths) cu.push_back(cu.back() + n);
  return cu;
}

std::vector<double> random_values(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> out(n);
  for (double& x : out) x = normal(rng);
  return out;
}

// Rows [begin, end) of a contiguous [1, total, heads, D] tensor, copied out.
std::vector<double> rows(const std::vector<double>& t, std::int64_t heads, std::int64_t begin, std::int64_t end) {
  return {t.begin() + begin * heads * D, t.begin() + end * heads * D};
}

TensorView packed(std::vector<double>& t, std::int64_t heads) {
  return TensorView::contiguous(t.data(), DType::f64, {1, std::int64_t(t.size()) / (heads * D), heads, D});
}

Config config(Mode mode, bool causal) {
  Config c;
  c.segments = {4, 8};
  c.dilations = {1, 3};
  c.mode = mode;
  c.causal = causal;
  return c;
}

}  // namespace

// Sequences shorter than the smallest segment (1, 3), empty, and longer than the largest (21).
TEST(ReferenceVarlen, EveryPackedSequenceEqualsTheDefinitionOnItAlone) {
  const std::vector<std::int32_t> lengths{1, 3, 8, 21, 0, 5};
  const std::vector<std::int32_t> cu = offsets(lengths);
  const std::int64_t total = cu.back();
  std::mt19937_64 rng(24);
  std::vector<double> q = random_values(std::size_t(total * H * D), rng), k = random_values(std::size_t(total * Hkv * D), rng),
                      v = random_values(k.size(), rng);
  for (const Mode mode : {Mode::longnet, Mode::head_groups}) {
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(fmt::format("{} causal={}", to_string(mode), causal));
      const Config c = config(mode, causal);
      std::vector<double> out(q.size(), NAN);
      std::vector<float> lse32(std::size_t(H * total), NAN);
      const TensorView lse32_view = TensorView::contiguous(lse32.data(), DType::f32, {1, H, total, 1});
      reference_forward_varlen(c, packed(q, H), packed(k, Hkv), packed(v, Hkv), cu, packed(out, H), &lse32_view);
      for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
        const std::int64_t begin = cu[i], n = cu[i + 1] - cu[i];
        if (n == 0) continue;
        const DenseResult want =
            dense_attention(c, {1, n, H, Hkv, D, rows(q, H, begin, begin + n), rows(k, Hkv, begin, begin + n),
                                rows(v, Hkv, begin, begin + n)});
        const std::vector<double> got = rows(out, H, begin, begin + n);
        for (std::size_t j = 0; j < got.size(); ++j) ASSERT_NEAR(got[j], want.out[j], 1e-12) << "sequence " << i;
        for (std::int64_t h = 0; h < H; ++h) {
          for (std::int64_t r = 0; r < n; ++r) {
            const double expected = want.lse[std::size_t(h * n + r)], seen = lse32[std::size_t(h * total + begin + r)];
            if (std::isinf(expected)) EXPECT_EQ(seen, expected);
            else EXPECT_NEAR(seen, expected, 1e-5 * std::max(1.0, std::abs(expected))) << "sequence " << i;
          }
        }
      }
    }
  }
}

TEST(ReferenceVarlen, GradientsEqualEachSequenceRunAlone) {
  const std::vector<std::int32_t> cu = offsets({7, 1, 16, 2});
  const std::int64_t total = cu.back();
  std::mt19937_64 rng(25);
  std::vector<double> q = random_values(std::size_t(total * H * D), rng), k = random_values(std::size_t(total * Hkv * D), rng),
                      v = random_values(k.size(), rng), dout = random_values(q.size(), rng);
  std::vector<double> dq(q.size(), NAN), dk(k.size(), NAN), dv(k.size(), NAN);
  const Config c = config(Mode::longnet, true);
  reference_backward_varlen(c, packed(q, H), packed(k, Hkv), packed(v, Hkv), cu, packed(dout, H), packed(dq, H),
                            packed(dk, Hkv), packed(dv, Hkv));
  for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
    const std::int64_t b = cu[i], e = cu[i + 1];
    std::vector<double> sq = rows(q, H, b, e), sk = rows(k, Hkv, b, e), sv = rows(v, Hkv, b, e), sd = rows(dout, H, b, e);
    std::vector<double> gq(sq.size()), gk(sk.size()), gv(sk.size());
    reference_backward(c, packed(sq, H), packed(sk, Hkv), packed(sv, Hkv), packed(sd, H), packed(gq, H), packed(gk, Hkv),
                       packed(gv, Hkv));
    EXPECT_EQ(rows(dq, H, b, e), gq) << "sequence " << i;
    EXPECT_EQ(rows(dk, Hkv, b, e), gk) << "sequence " << i;
    EXPECT_EQ(rows(dv, Hkv, b, e), gv) << "sequence " << i;
  }
}

TEST(ReferenceVarlen, BadOffsetsAreErrorsWithNothingWritten) {
  std::vector<double> q(std::size_t(10 * H * D), 0.5), k(std::size_t(10 * Hkv * D), 0.5), out(q.size(), -7.0);
  const Config c = config(Mode::longnet, false);
  const auto run = [&](std::vector<std::int32_t> cu) {
    return [&, cu] { reference_forward_varlen(c, packed(q, H), packed(k, Hkv), packed(k, Hkv), cu, packed(out, H)); };
  };
  expect_error(run({0}), {"cu_seqlens has 1 entries", "S + 1 offsets"});
  expect_error(run({1, 10}), {"cu_seqlens[0] = 1", "must be 0"});
  expect_error(run({0, 6, 4, 10}), {"cu_seqlens[2] = 4 is below cu_seqlens[1] = 6"});
  expect_error(run({0, -2, 10}), {"cu_seqlens[1] = -2 is below"});
  expect_error(run({0, 4, 9}), {"ends at 9", "hold 10 rows"});
  std::vector<double> two(q.size() * 2, 0.5), two_kv(k.size() * 2, 0.5), two_out(two.size(), -7.0);
  expect_error([&] {
    reference_forward_varlen(c, TensorView::contiguous(two.data(), DType::f64, {2, 10, H, D}),
                             TensorView::contiguous(two_kv.data(), DType::f64, {2, 10, Hkv, D}),
                             TensorView::contiguous(two_kv.data(), DType::f64, {2, 10, Hkv, D}), std::vector<std::int32_t>{0, 10},
                             TensorView::contiguous(two_out.data(), DType::f64, {2, 10, H, D}));
  }, {"B = 2"});
  for (double x : out) ASSERT_EQ(x, -7.0) << "nothing written";
  for (double x : two_out) ASSERT_EQ(x, -7.0) << "nothing written";
}
