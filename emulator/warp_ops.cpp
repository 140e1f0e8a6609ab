#include "emulator/warp_ops.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "emulator/numerics.hpp"

namespace dilatron::emulator {
namespace {

using u32 = std::uint32_t;

float element(bool bf16, u32 packed, int half) {
  const auto bits = std::uint16_t(half == 0 ? packed & 0xffffu : packed >> 16);
  return bf16 ? bf16_to_float(bits) : half_to_float(bits);
}

}  // namespace

std::array<std::array<float, 4>, 32> mma_16816(bool bf16, const std::array<MmaLane, 32>& lanes) {
  // Lane = 4 * group + t. A (16 x 16, row-major): a0 = (group, 2t..2t+1), a1 = (group + 8, 2t..),
  // a2 = (group, 2t + 8..), a3 = (group + 8, 2t + 8..). B (16 x 8, k by n): b0 = (k 2t..2t+1, n group),
  // b1 = (k 2t + 8.., n group). C, D (16 x 8): c0, c1 = (group, 2t..2t+1), c2, c3 = (group + 8, 2t..).
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane / 4, t = lane % 4;
    const MmaLane& x = lanes[std::size_t(lane)];
    for (int i = 0; i < 2; ++i) {
      a[group][2 * t + i] = element(bf16, x.a[0], i);
      a[group + 8][2 * t + i] = element(bf16, x.a[1], i);
      a[group][2 * t + 8 + i] = element(bf16, x.a[2], i);
      a[group + 8][2 * t + 8 + i] = element(bf16, x.a[3], i);
      b[2 * t + i][group] = element(bf16, x.b[0], i);
      b[2 * t + 8 + i][group] = element(bf16, x.b[1], i);
      c[group][2 * t + i] = x.c[i];
      c[group + 8][2 * t + i] = x.c[2 + i];
    }
  }
  std::array<std::array<float, 4>, 32> d{};
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; ++e) {
      const int row = group + 8 * (e / 2), col = 2 * t + e % 2;
      float sum = c[row][col];
      for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
      d[std::size_t(lane)][std::size_t(e)] = sum;
    }
  }
  return d;
}

std::array<std::array<u32, 4>, 32> ldmatrix_x4(std::span<const std::uint8_t> shared, const std::array<u32, 32>& addresses,
                                               bool trans) {
  // m[i][row][col]: 16-bit element (row, col) of matrix i, rows from the addresses of lanes 8i..8i+7.
  std::uint16_t m[4][8][8];
  for (int lane = 0; lane < 32; ++lane) {
    const u32 address = addresses[std::size_t(lane)];
    if (address % 16 != 0 || std::size_t(address) + 16 > shared.size()) {
      throw std::out_of_range("ldmatrix: lane " + std::to_string(lane) + " reads 16 bytes at shared address " +
                              std::to_string(address) + ", outside the " + std::to_string(shared.size()) +
                              " bytes of shared memory or not 16-byte aligned");
    }
    std::memcpy(m[lane / 8][lane % 8], shared.data() + address, 16);
  }
  // Without .trans lane 4 * group + t receives (row group, cols 2t, 2t + 1) of each matrix; with .trans
  // (rows 2t, 2t + 1, col group). The smaller column (row) index is in the low half.
  std::array<std::array<u32, 4>, 32> r{};
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const std::uint16_t low = trans ? m[i][2 * t][group] : m[i][group][2 * t];
      const std::uint16_t high = trans ? m[i][2 * t + 1][group] : m[i][group][2 * t + 1];
      r[std::size_t(lane)][std::size_t(i)] = u32(low) | u32(high) << 16;
    }
  }
  return r;
}

}  // namespace dilatron::emulator
