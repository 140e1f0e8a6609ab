// The emulated device's conversions against independent references: the compiler's own _Float16 (IEEE
// binary16, round to nearest even) for f16, and exhaustive nearest-value search for bf16.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "emulator/numerics.hpp"

using namespace dilatron::emulator;

namespace {

// Nearest bf16 to x by search among the two candidates around it, ties to the even pattern.
std::uint16_t nearest_bf16(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const std::uint16_t down = std::uint16_t(bits >> 16), up = std::uint16_t(down + 1);
  const double a = double(x), d = std::fabs(a - double(bf16_to_float(down)));
  if (std::isinf(bf16_to_float(up)) && !std::isinf(x)) {
    // Past the largest finite bf16: rounds to inf only from halfway up.
    const double halfway = std::fabs(double(bf16_to_float(down))) + std::ldexp(1.0, std::ilogb(bf16_to_float(down)) - 8);
    return std::fabs(a) >= halfway ? up : down;
  }
  const double u = std::fabs(double(bf16_to_float(up)) - a);
  if (d < u) return down;
  if (u < d) return up;
  return (down & 1) ? up : down;
}

std::vector<float> interesting_floats() {
  std::mt19937 rng(5);
  std::vector<float> out = {0.f, -0.f, 1.f, -1.f, 65504.f, 65505.f, 65519.f, 65520.f, 1e-8f, 5.96e-8f, 2.98e-8f,
                            6.1e-5f, 6.09e-5f, 3e38f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min()};
  for (int i = 0; i < 200000; ++i) out.push_back(std::bit_cast<float>(std::uint32_t(rng())));
  for (int i = 0; i < 200000; ++i) out.push_back(std::ldexp(float(rng() % 4096) + 0.5f, int(rng() % 40) - 36));
  return out;
}

}  // namespace

TEST(EmulatorNumerics, HalfRoundsToNearestEvenLikeIeeeBinary16) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(std::uint16_t(h));
    const _Float16 expected = std::bit_cast<_Float16>(std::uint16_t(h));
    if (std::isnan(float(expected))) {
      ASSERT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(f, float(expected)) << h;
    ASSERT_EQ(float_to_half(f), std::uint16_t(h)) << "round trip of " << h;
  }
  for (const float x : interesting_floats()) {
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(half_to_float(float_to_half(x))));
      continue;
    }
    ASSERT_EQ(float_to_half(x), std::bit_cast<std::uint16_t>(_Float16(x))) << x;
  }
}

TEST(EmulatorNumerics, Bf16RoundsToNearestEven) {
  for (const float x : interesting_floats()) {
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(x))));
      continue;
    }
    ASSERT_EQ(float_to_bf16(x), nearest_bf16(x)) << x;
  }
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_float(std::uint16_t(b));
    if (!std::isnan(f)) {
      ASSERT_EQ(float_to_bf16(f), std::uint16_t(b));
    }
  }
}

TEST(EmulatorNumerics, Ex2FlushesSubnormalsToZero) {
  EXPECT_EQ(ex2_ftz(3.f), 8.f);
  EXPECT_EQ(ex2_ftz(-std::numeric_limits<float>::infinity()), 0.f);
  EXPECT_EQ(ex2_ftz(-130.f), 0.f);  // 2^-130 is subnormal in float
  EXPECT_GT(ex2_ftz(-126.f), 0.f);
  EXPECT_TRUE(std::isnan(ex2_ftz(std::nanf(""))));
}
