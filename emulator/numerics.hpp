// The emulated device's scalar arithmetic, rounding as the GPU does: 16-bit conversions round to
// nearest even (PTX cvt.rn), ex2.approx.ftz flushes subnormal inputs and results to zero (its result is
// the host's exp2f, more precise than the GPU's two ulps: docs/EMULATOR.md).
#pragma once

#include <cstdint>

namespace dilatron::emulator {

float half_to_float(std::uint16_t bits);
float bf16_to_float(std::uint16_t bits);
std::uint16_t float_to_half(float x);  // round to nearest even; overflow to inf; NaN stays NaN
std::uint16_t float_to_bf16(float x);  // round to nearest even; NaN stays NaN
float ex2_ftz(float x);

}  // namespace dilatron::emulator
