#include "emulator/numerics.hpp"

#include <bit>
#include <cmath>

namespace dilatron::emulator {
namespace {

using u32 = std::uint32_t;

float flush_subnormal(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.f, x) : x; }

}  // namespace

float half_to_float(std::uint16_t h) {
  const u32 sign = u32(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa x 2^-24, exact in float.
  const float magnitude = std::ldexp(float(mantissa), -24);
  return sign ? -magnitude : magnitude;
}

float bf16_to_float(std::uint16_t bits) { return std::bit_cast<float>(u32(bits) << 16); }

std::uint16_t float_to_half(float x) {
  const u32 bits = std::bit_cast<u32>(x);
  const std::uint16_t sign = std::uint16_t((bits >> 16) & 0x8000u);
  if (std::isnan(x)) return std::uint16_t(sign | 0x7e00u | ((bits >> 13) & 0x3ffu));
  const float a = std::fabs(x);
  if (a >= 65520.f) return sign | 0x7c00u;  // rounds past the largest half (65504): inf
  if (a < 0x1p-14f) {
    // Subnormal half: a multiple of 2^-24, rounded to nearest even by the float unit itself.
    return std::uint16_t(sign | u32(std::nearbyint(a * 0x1p24f)));
  }
  // Normal: keep 10 of the 23 mantissa bits, rounding the 13 dropped to nearest even (a carry into the
  // exponent is the right result).
  const u32 magnitude = bits & 0x7fffffffu;
  const u32 rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
  return std::uint16_t(sign | (((rounded >> 13) - (112u << 10)) & 0x7fffu));
}

std::uint16_t float_to_bf16(float x) {
  const u32 bits = std::bit_cast<u32>(x);
  if (std::isnan(x)) return std::uint16_t((bits >> 16) | 0x40u);  // quiet
  return std::uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

float ex2_ftz(float x) { return flush_subnormal(std::exp2(flush_subnormal(x))); }

}  // namespace dilatron::emulator
