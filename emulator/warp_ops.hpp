// The warp-collective PTX instructions the kernels use, as pure functions of all 32 lanes' operands,
// following the PTX ISA's fragment tables (sections "Matrix Fragments for mma.m16n8k16 with floating
// point type" and "Warp-level matrix load instruction: ldmatrix").
#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace dilatron::emulator {

// One lane's operands of mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32.
struct MmaLane {
  std::uint32_t a[4];
  std::uint32_t b[2];
  float c[4];
};

// D = A B + C for the whole warp; returns each lane's d0..d3. Inputs are exact 16-bit values, products
// exact in fp32; the sum over k runs in fp32 in k order after C (the tensor core's order and internal
// precision differ, so results agree to rounding, not bit for bit).
std::array<std::array<float, 4>, 32> mma_16816(bool bf16, const std::array<MmaLane, 32>& lanes);

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lane l gives the address of row l % 8 of matrix
// l / 8 (16 bytes each, in `shared`); returns each lane's four registers. Throws std::out_of_range for
// a row outside `shared`.
std::array<std::array<std::uint32_t, 4>, 32> ldmatrix_x4(std::span<const std::uint8_t> shared,
                                                         const std::array<std::uint32_t, 32>& addresses, bool trans);

}  // namespace dilatron::emulator
