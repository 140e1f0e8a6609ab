// A non-owning view of a 4-D tensor in host or device memory. Strides are in elements, so a view can
// describe a slice of a larger buffer (for example one head of a fused QKV projection).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace dilatron {

// f64 is for the host reference only (exact gradient checks); the GPU takes f16 and bf16.
enum class DType { f32, f16, bf16, f64 };

std::size_t dtype_size(DType dtype) noexcept;
std::string_view to_string(DType dtype) noexcept;
// Accepts "f32|float32", "f16|fp16|float16", "bf16|bfloat16", "f64|float64"; throws dilatron::Error
// otherwise.
DType parse_dtype(std::string_view text);

using Shape4 = std::array<std::int64_t, 4>;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Shape4 shape{};    // [B, N, heads, D] for Q/K/V/O; [B, H, N, 1] for LSE
  Shape4 strides{};  // in elements

  static TensorView contiguous(void* data, DType dtype, Shape4 shape) noexcept {
    return {data, dtype, shape, {shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1}};
  }
  std::int64_t numel() const noexcept { return shape[0] * shape[1] * shape[2] * shape[3]; }
  std::int64_t offset(std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) const noexcept {
    return i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3];
  }
};

}  // namespace dilatron
