// The host reference against brute-force dense masked attention on randomized problems.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>
#include <dilatron/reference.hpp>

#include <cmath>
#include <cstring>
#include <optional>
#include <mutex>
#include <random>

#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

struct Output {
  std::vector<float> out, lse;
};

Output run_reference(RandomCase& c, unsigned threads = 0) {
  Output o{std::vector<float>(std::size_t(c.B * c.N * c.H * c.D), NAN), std::vector<float>(std::size_t(c.B * c.H * c.N), NAN)};
  const auto out = TensorView::contiguous(o.out.data(), DType::f32, c.q_shape());
  const auto lse = TensorView::contiguous(o.lse.data(), DType::f32, {c.B, c.H, c.N, 1});
  reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(), out, &lse, threads);
  return o;
}

std::vector<double> widen(const std::vector<float>& x) { return {x.begin(), x.end()}; }

}  // namespace

TEST(Reference, MatchesDenseMaskedAttentionOnRandomCases) {
  std::mt19937_64 rng(20261122);
  int head_groups = 0, causal = 0, partial = 0, r_over_w = 0, r_not_dividing = 0, gqa = 0, scaled = 0;
  for (int trial = 0; trial < 300; ++trial) {
    RandomCase c = random_case(rng);
    SCOPED_TRACE(fmt::format("trial {}: {}", trial, c.describe()));
    const Output got = run_reference(c);
    const DenseResult want = dense_attention(c.config, c.dense());
    ASSERT_LE(relative_error(widen(got.out), want.out), 1e-5);
    ASSERT_LE(relative_error(widen(got.lse), want.lse, 1.0), 1e-5);
    // Tally the corners the generator reached, so a weakened generator fails loudly.
    head_groups += c.config.mode == Mode::head_groups;
    causal += c.config.causal;
    gqa += c.Hkv < c.H;
    scaled += c.config.scale.has_value();
    for (std::size_t i = 0; i < c.config.branches(); ++i) {
      partial += c.N % c.config.segments[i] != 0;
      r_over_w += c.config.dilations[i] > c.config.segments[i];
      r_not_dividing += c.config.segments[i] % c.config.dilations[i] != 0;
    }
  }
  for (int tally : {head_groups, causal, partial, r_over_w, r_not_dividing, gqa, scaled}) EXPECT_GE(tally, 20);
}

TEST(Reference, LongNetPaperConfigurationOnALongerSequence) {
  std::mt19937_64 rng(3);
  RandomCase c;
  c.B = 1, c.N = 200, c.H = 6, c.Hkv = 3, c.D = 8, c.dtype = DType::bf16;
  c.config.segments = {16, 48, 96, 200};  // r = 6 does not divide 16; the last segments are partial
  c.config.dilations = {1, 2, 6, 12};
  c.config.causal = true;
  fill_inputs(c, rng);
  const Output got = run_reference(c);
  const DenseResult want = dense_attention(c.config, c.dense());
  EXPECT_LE(relative_error(widen(got.out), want.out), 1e-5);
  EXPECT_LE(relative_error(widen(got.lse), want.lse, 1.0), 1e-5);
}

TEST(Reference, RowsNoBranchSelectsAreZeroWithMinusInfinityLse) {
  std::mt19937_64 rng(5);
  RandomCase c;
  c.N = 12, c.H = 1, c.D = 4;
  c.config.segments = {6};
  c.config.dilations = {4};  // head 0 has offset 0: rows 0, 4 and 6, 10 only
  fill_inputs(c, rng);
  const Output got = run_reference(c);
  for (std::int64_t n = 0; n < c.N; ++n) {
    const bool selected = n == 0 || n == 4 || n == 6 || n == 10;
    EXPECT_EQ(std::isinf(got.lse[n]) && got.lse[n] < 0, !selected) << "row " << n;
    for (std::int64_t d = 0; d < c.D && !selected; ++d) EXPECT_EQ(got.out[n * c.D + d], 0.0f) << "row " << n;
  }
}

TEST(Reference, SameBitsForAnyThreadCount) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 10; ++trial) {
    RandomCase c = random_case(rng);
    const Output one = run_reference(c, 1), many = run_reference(c, 3);
    ASSERT_EQ(0, std::memcmp(one.out.data(), many.out.data(), one.out.size() * sizeof(float))) << c.describe();
    ASSERT_EQ(0, std::memcmp(one.lse.data(), many.lse.data(), one.lse.size() * sizeof(float))) << c.describe();
  }
}

TEST(Reference, WritesThroughStridedViewsAndOtherOutputDtypes) {
  std::mt19937_64 rng(13);
  RandomCase c;
  c.B = 2, c.N = 19, c.H = 4, c.Hkv = 2, c.D = 6;
  c.config.segments = {5, 19};
  c.config.dilations = {2, 3};
  fill_inputs(c, rng);
  const DenseResult want = dense_attention(c.config, c.dense());

  // out in fp16 inside a wider [B,N,2H,D] buffer: odd head slots are untouched.
  std::vector<std::uint16_t> wide(std::size_t(c.B * c.N * 2 * c.H * c.D), 0x7e00);
  TensorView out = TensorView::contiguous(wide.data(), DType::f16, {c.B, c.N, 2 * c.H, c.D});
  out.shape[2] = c.H;
  out.strides[2] = 2 * c.D;
  reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(), out, nullptr);
  for (std::int64_t b = 0; b < c.B; ++b) {
    for (std::int64_t n = 0; n < c.N; ++n) {
      for (std::int64_t h = 0; h < c.H; ++h) {
        for (std::int64_t d = 0; d < c.D; ++d) {
          const double expected = want.out[std::size_t(((b * c.N + n) * c.H + h) * c.D + d)];
          EXPECT_EQ(wide[std::size_t(out.offset(b, n, h, d))], float_to_half_bits(float(expected)));
          EXPECT_EQ(wide[std::size_t(out.offset(b, n, h, d) + c.D)], 0x7e00) << "wrote outside the view";
        }
      }
    }
  }
}

TEST(Reference, Float64InputsAndOutputsAreNotRounded) {
  // What exact gradient checks need (torch.autograd.gradcheck through the Python package): float64 in,
  // float64 out, agreeing with the dense definition to float64 precision, far below float32's 6e-8.
  std::mt19937_64 rng(14);
  RandomCase c;
  c.dtype = DType::f64;
  c.B = 1, c.N = 23, c.H = 4, c.Hkv = 2, c.D = 8;
  c.config.segments = {6, 23};
  c.config.dilations = {1, 3};
  c.config.causal = true;
  fill_inputs(c, rng);
  const DenseResult want = dense_attention(c.config, c.dense());
  std::vector<double> out(want.out.size());
  reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(), TensorView::contiguous(out.data(), DType::f64, c.q_shape()));
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want.out[i], 1e-12) << i;
}

TEST(Reference, InvalidInputLeavesOutputUntouched) {
  std::mt19937_64 rng(17);
  RandomCase c = random_case(rng);
  c.config.dilations.push_back(1);  // one more dilation than segments
  std::vector<float> out(std::size_t(c.B * c.N * c.H * c.D), 42.0f);
  const auto view = TensorView::contiguous(out.data(), DType::f32, c.q_shape());
  EXPECT_THROW(reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(), view), Error);
  for (float x : out) ASSERT_EQ(x, 42.0f);
}

TEST(Reference, ReportsProgressInAttendedPairsUpToTheTotal) {
  std::mt19937_64 rng(29);
  for (int trial = 0; trial < 20; ++trial) {
    RandomCase c = random_case(rng);
    SCOPED_TRACE(c.describe());
    // The total counted from the definition: per head and branch, pairs of selected rows of one segment
    // (key <= query when causal).
    std::int64_t want_total = 0;
    for (std::int64_t h = 0; h < c.H; ++h) {
      for (const auto& [branch, offset] : dense_head_branches(c.config, h, c.H)) {
        const auto segment = dense_selection(c.N, c.config.segments[branch], c.config.dilations[branch], offset);
        for (std::int64_t i = 0; i < c.N; ++i) {
          for (std::int64_t j = 0; j < c.N; ++j) {
            want_total += segment[i] >= 0 && segment[i] == segment[j] && (!c.config.causal || j <= i);
          }
        }
      }
    }
    want_total *= c.B;
    std::mutex mutex;
    std::int64_t calls = 0, max_done = 0, total = -1;
    bool consistent = true;
    std::vector<float> out(std::size_t(c.B * c.N * c.H * c.D));
    reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(),
                      TensorView::contiguous(out.data(), DType::f32, c.q_shape()), nullptr, 3,
                      [&](std::int64_t done, std::int64_t all) {
                        std::lock_guard lock(mutex);
                        ++calls;
                        consistent &= (total < 0 || total == all) && done > 0 && done <= all;
                        total = all, max_done = std::max(max_done, done);
                      });
    EXPECT_TRUE(consistent);
    if (want_total == 0) continue;
    EXPECT_GT(calls, 0);
    EXPECT_EQ(total, want_total);
    EXPECT_EQ(max_done, want_total) << "the last report is the whole";
  }
}

namespace {

// One head, float64: q, k, v of [1, N, 1, D] from row-major values; returns O [N*D] and LSE [N].
struct Small {
  std::vector<double> out, lse;
};
Small small_forward(const Config& config, std::int64_t n, std::int64_t d, std::vector<double> q, std::vector<double> k,
                    std::vector<double> v) {
  Small r{std::vector<double>(std::size_t(n * d)), std::vector<double>(std::size_t(n))};
  std::vector<float> lse(static_cast<std::size_t>(n));
  const auto view = [&](std::vector<double>& x) { return TensorView::contiguous(x.data(), DType::f64, {1, n, 1, d}); };
  const TensorView lse_view = TensorView::contiguous(lse.data(), DType::f32, {1, 1, n, 1});
  reference_forward(config, view(q), view(k), view(v), view(r.out), &lse_view);
  r.lse.assign(lse.begin(), lse.end());
  return r;
}

Config one_branch(std::int64_t w, std::optional<double> scale = {}) {
  Config c;
  c.segments = {w};
  c.dilations = {1};
  c.scale = scale;
  return c;
}

}  // namespace

// docs/SEMANTICS.md, "Non-finite and extreme values": a NaN reaches the O and the LSE of exactly the rows
// whose selection includes it; -inf stays the mark of "no key selected".
TEST(Reference, ANanKeyPoisonsTheOAndLseOfTheRowsThatSelectIt) {
  std::vector<double> q(16), k(16), v(16);
  for (std::size_t i = 0; i < 16; ++i) q[i] = 0.1 * double(i % 5), k[i] = 0.2 * double(i % 3), v[i] = double(i);
  k[5 * 2] = std::nan("");  // key row 5, segment [4, 8)
  const Small r = small_forward(one_branch(4), 8, 2, q, k, v);
  for (std::size_t n = 0; n < 8; ++n) {
    SCOPED_TRACE(n);
    const bool poisoned = n >= 4;
    EXPECT_EQ(std::isnan(r.lse[n]), poisoned);
    EXPECT_EQ(std::isnan(r.out[2 * n]) && std::isnan(r.out[2 * n + 1]), poisoned);
    if (!poisoned) {
      EXPECT_TRUE(std::isfinite(r.lse[n]) && std::isfinite(r.out[2 * n]));
    }
  }
}

// Scores beyond double's range (q, k near 1e160; a scale near 1e308) still give the softmax of the math:
// the row is redone in a wider type, and an LSE beyond double's range is +inf, not NaN.
TEST(Reference, ScoresBeyondDoubleRangeGiveTheSoftmaxOfTheMath) {
  // Equal keys: uniform weights, O the mean of V, whatever the size of the scores.
  const Small equal = small_forward(one_branch(3), 3, 1, {1e160, 1e160, 1e160}, {1e160, 1e160, 1e160}, {1, 2, 6});
  for (std::size_t n = 0; n < 3; ++n) {
    EXPECT_NEAR(equal.out[n], 3.0, 1e-12) << n;
    EXPECT_EQ(equal.lse[n], INFINITY) << "1e320 + log 3 is beyond float";
  }
  // Distinct keys under scale 1e308: every score differs by more than 1e300, so the largest key's value
  // takes all the weight (and with a negative query, the smallest key's).
  const Small sharp = small_forward(one_branch(3, 1e308), 3, 1, {1, -1, 2}, {1, 3, 2}, {10, 30, 20});
  EXPECT_EQ(sharp.out[0], 30.0);
  EXPECT_EQ(sharp.out[1], 10.0);
  EXPECT_EQ(sharp.out[2], 30.0);
  EXPECT_EQ(sharp.lse[0], INFINITY) << "3e308 is beyond the float32 LSE";
  EXPECT_EQ(sharp.lse[2], INFINITY);
  // Two keys tie at the top with opposite huge terms: cancellation inside the dot product stays exact.
  const Small tie = small_forward(one_branch(2), 2, 2, {1e160, 1e160, 0, 0}, {1e160, -1e160, -1e160, 1e160}, {4, 0, 8, 0});
  EXPECT_NEAR(tie.out[0], 6.0, 1e-12) << "scores 0 and 0: the mean of 4 and 8";
  EXPECT_NEAR(tie.lse[0], std::log(2.0), 1e-7);
  // Two longnet branches whose partials tie at an LSE near 1e300 (one key, V = 5, seen by both): each
  // weighs one half, as at scale 1; adding log 2 to 1e300 would round away and count both whole.
  for (const double scale : {1.0, 1e300, 1e308}) {
    Config two;
    two.segments = {1, 2};
    two.dilations = {1, 2};
    two.scale = scale;
    const Small r = small_forward(two, 2, 1, {1, 1}, {1, -1}, {5, 7});
    EXPECT_DOUBLE_EQ(r.out[0], 5.0) << "scale " << scale;
  }
}
