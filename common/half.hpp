// IEEE binary16 and bfloat16 on the host, round-to-nearest-even, so the host reference and the .npy
// tools read and write the same bits a GPU would. No compiler extension types: this builds anywhere.
#pragma once

#include <bit>
#include <cstdint>

namespace dilatron {

inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = float(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline std::uint16_t float_to_half_bits(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const std::uint16_t sign = std::uint16_t((x >> 16) & 0x8000u);
  const std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;    // NaN stays NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;   // >= 65520 rounds to infinity
  if (magnitude >= 0x38800000u) {                        // normal half (>= 2^-14)
    std::uint32_t h = ((magnitude >> 23) - 112) << 10 | ((magnitude & 0x7fffffu) >> 13);
    const std::uint32_t rest = magnitude & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
    return std::uint16_t(sign | h);
  }
  if (magnitude < 0x33000000u) return sign;  // below 2^-25 (the tie at 2^-25 goes to even: zero)
  const std::uint32_t biased = magnitude >> 23, shift = 126 - biased;  // 14..24
  const std::uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
  std::uint32_t h = significand >> shift;
  const std::uint32_t rest = significand & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (h & 1u))) ++h;  // may become the smallest normal: right
  return std::uint16_t(sign | h);
}

inline float bf16_bits_to_float(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }

inline std::uint16_t float_to_bf16_bits(float value) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((x >> 16) | 0x40u);  // quiet NaN
  return std::uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace dilatron
