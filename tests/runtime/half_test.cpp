// Every float16 and bfloat16 bit pattern, against values computed from the IEEE definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "common/half.hpp"

using namespace dilatron;

namespace {

// binary16 from its definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
double half_value(std::uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(m / 1024.0, -14);
  if (e == 31) return m ? NAN : sign * INFINITY;
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

}  // namespace

TEST(Half, DecodesEveryPattern) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double want = half_value(std::uint16_t(h));
    const float got = half_bits_to_float(std::uint16_t(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(double(got), want) << h;
    }
  }
}

TEST(Half, RoundTripsEveryPattern) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_bits_to_float(std::uint16_t(h));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(half_bits_to_float(float_to_half_bits(f))));
    } else {
      ASSERT_EQ(float_to_half_bits(f), h);
    }
  }
}

TEST(Half, RoundsToNearestEvenBetweenNeighbours) {
  for (std::uint16_t h = 0; h < 0x7bff; ++h) {  // every pair of adjacent positive finite halves
    const double lo = half_value(h), hi = half_value(std::uint16_t(h + 1));
    const double mid = (lo + hi) / 2;
    const std::uint16_t even = (h & 1) ? std::uint16_t(h + 1) : h;
    ASSERT_EQ(float_to_half_bits(float(mid)), even) << "tie above " << h;
    ASSERT_EQ(float_to_half_bits(std::nextafter(float(mid), 0.0f)), h) << h;
    ASSERT_EQ(float_to_half_bits(std::nextafter(float(mid), INFINITY)), h + 1) << h;
    ASSERT_EQ(float_to_half_bits(-float(mid)), even | 0x8000) << "negative tie above " << h;
  }
}

TEST(Half, OverflowAndUnderflow) {
  EXPECT_EQ(float_to_half_bits(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half_bits(65519.99f), 0x7bff);
  EXPECT_EQ(float_to_half_bits(65520.0f), 0x7c00);  // the tie rounds to even: infinity
  EXPECT_EQ(float_to_half_bits(-1e9f), 0xfc00);
  EXPECT_EQ(float_to_half_bits(std::ldexp(1.0f, -25)), 0x0000);  // tie with zero: even
  EXPECT_EQ(float_to_half_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(float_to_half_bits(1e-30f), 0x0000);
  EXPECT_EQ(float_to_half_bits(-0.0f), 0x8000);
}

TEST(Bf16, DecodesAndRoundTripsEveryPattern) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_bits_to_float(std::uint16_t(b));
    const int e = (b >> 7) & 255, m = b & 127;
    if (e == 255 && m) {
      ASSERT_TRUE(std::isnan(f));
      continue;
    }
    const double sign = (b >> 15) ? -1.0 : 1.0;
    const double want = e == 255 ? sign * INFINITY
                        : e == 0 ? sign * std::ldexp(m / 128.0, -126)
                                 : sign * std::ldexp(1.0 + m / 128.0, e - 127);
    ASSERT_EQ(double(f), want) << b;
    ASSERT_EQ(float_to_bf16_bits(f), b);
  }
}

TEST(Bf16, RoundsToNearestEven) {
  for (std::uint16_t b = 0x3f80; b < 0x4080; ++b) {  // [1, 4): plenty of odd and even neighbours
    const double lo = bf16_bits_to_float(b), hi = bf16_bits_to_float(std::uint16_t(b + 1));
    const float mid = float((lo + hi) / 2);
    ASSERT_EQ(float_to_bf16_bits(mid), (b & 1) ? b + 1 : b);
    ASSERT_EQ(float_to_bf16_bits(std::nextafter(mid, 0.0f)), b);
    ASSERT_EQ(float_to_bf16_bits(std::nextafter(mid, INFINITY)), b + 1);
  }
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(NAN))));
}
