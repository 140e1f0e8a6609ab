// Element access by run-time dtype for host code (reference, .npy tools, tests). Not for hot paths.
#pragma once

#include <dilatron/tensor.hpp>

#include <cstdint>
#include <cstring>

#include "common/half.hpp"

namespace dilatron {

inline double load_element(const void* base, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(base)[index];
    case DType::f16: return half_bits_to_float(static_cast<const std::uint16_t*>(base)[index]);
    case DType::bf16: return bf16_bits_to_float(static_cast<const std::uint16_t*>(base)[index]);
    case DType::f64: return static_cast<const double*>(base)[index];
  }
  return 0.0;
}

// 16-bit dtypes round through float: the double-to-float-to-half path may differ from direct rounding by one ulp in
// rare ties, far below any tolerance the project uses.
inline void store_element(void* base, DType dtype, std::int64_t index, double value) {
  const float f = static_cast<float>(value);
  switch (dtype) {
    case DType::f64: static_cast<double*>(base)[index] = value; return;
    case DType::f32: static_cast<float*>(base)[index] = f; return;
    case DType::f16: static_cast<std::uint16_t*>(base)[index] = float_to_half_bits(f); return;
    case DType::bf16: static_cast<std::uint16_t*>(base)[index] = float_to_bf16_bits(f); return;
  }
}

}  // namespace dilatron
