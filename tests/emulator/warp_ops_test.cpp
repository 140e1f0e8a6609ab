// The emulated mma.sync and ldmatrix against the PTX ISA's fragment tables, written here in the ISA's
// own terms (element index i of a lane's fragment, groupID = laneid >> 2, threadID_in_group = laneid % 4),
// and against a plain matrix product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "emulator/numerics.hpp"
#include "emulator/warp_ops.hpp"

using namespace dilatron::emulator;

namespace {

// PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type", .f16/.bf16 A (a0..a7):
//   row = groupID for a0, a1, a4, a5; groupID + 8 for a2, a3, a6, a7
//   col = threadID_in_group * 2 + (i & 0x1) for a0..a3; that + 8 for a4..a7
struct Cell {
  int row, col;
};
Cell a_cell(int lane, int i) {
  const int group = lane >> 2, t = lane % 4;
  const int row = (i == 0 || i == 1 || i == 4 || i == 5) ? group : group + 8;
  const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
  return {row, col};
}
// B (b0..b3): row = threadID_in_group * 2 + (i & 0x1) for b0, b1; that + 8 for b2, b3; col = groupID.
Cell b_cell(int lane, int i) { return {(lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0), lane >> 2}; }
// C, D (c0..c3): row = groupID for c0, c1; groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 0x1).
Cell c_cell(int lane, int i) { return {(lane >> 2) + (i >= 2 ? 8 : 0), (lane % 4) * 2 + (i & 1)}; }

std::uint32_t pack(std::uint16_t low, std::uint16_t high) { return std::uint32_t(low) | std::uint32_t(high) << 16; }

}  // namespace

TEST(EmulatorWarpOps, MmaFollowsThePtxFragmentTablesAndIsAMatrixProduct) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (const bool bf16 : {false, true}) {
    for (int trial = 0; trial < 50; ++trial) {
      std::uint16_t a[16][16], b[16][8];
      float c[16][8];
      auto round16 = [&](float x) { return bf16 ? float_to_bf16(x) : float_to_half(x); };
      auto value = [&](std::uint16_t h) { return bf16 ? bf16_to_float(h) : half_to_float(h); };
      for (auto& row : a) for (auto& x : row) x = round16(normal(rng));
      for (auto& row : b) for (auto& x : row) x = round16(normal(rng));
      for (auto& row : c) for (auto& x : row) x = normal(rng);
      std::array<MmaLane, 32> lanes{};
      for (int lane = 0; lane < 32; ++lane) {
        MmaLane& l = lanes[std::size_t(lane)];
        for (int r = 0; r < 4; ++r) {  // register r holds elements 2r (low half) and 2r + 1
          const Cell lo = a_cell(lane, 2 * r), hi = a_cell(lane, 2 * r + 1);
          l.a[r] = pack(a[lo.row][lo.col], a[hi.row][hi.col]);
        }
        for (int r = 0; r < 2; ++r) {
          const Cell lo = b_cell(lane, 2 * r), hi = b_cell(lane, 2 * r + 1);
          l.b[r] = pack(b[lo.row][lo.col], b[hi.row][hi.col]);
        }
        for (int i = 0; i < 4; ++i) l.c[i] = c[c_cell(lane, i).row][c_cell(lane, i).col];
      }
      const auto d = mma_16816(bf16, lanes);
      for (int lane = 0; lane < 32; ++lane) {
        for (int i = 0; i < 4; ++i) {
          const Cell at = c_cell(lane, i);
          double expected = c[at.row][at.col];
          for (int k = 0; k < 16; ++k) expected += double(value(a[at.row][k])) * double(value(b[k][at.col]));
          ASSERT_NEAR(d[std::size_t(lane)][std::size_t(i)], expected, 1e-5 * (1 + std::fabs(expected)))
              << (bf16 ? "bf16" : "f16") << " lane " << lane << " d" << i;
        }
      }
    }
  }
}

// PTX ISA, "ldmatrix": for .x4 the addresses of matrix i's rows come from threads 8i..8i+7; each thread
// receives in register i the elements (row laneid >> 2, cols 2 * (laneid % 4) + {0, 1}) of matrix i, or
// with .trans those of the transposed matrix.
TEST(EmulatorWarpOps, LdmatrixFollowsThePtxTable) {
  std::vector<std::uint8_t> shared(4096);
  std::uint16_t m[4][8][8];
  std::array<std::uint32_t, 32> addresses{};
  std::mt19937 rng(3);
  // Rows scattered through shared memory, as a swizzled tile puts them.
  std::vector<std::uint32_t> slots(256);
  for (std::uint32_t s = 0; s < 256; ++s) slots[s] = s * 16;
  std::shuffle(slots.begin(), slots.end(), rng);
  for (int i = 0; i < 4; ++i) {
    for (int row = 0; row < 8; ++row) {
      for (int col = 0; col < 8; ++col) m[i][row][col] = std::uint16_t(i * 64 + row * 8 + col + 1);
      addresses[std::size_t(8 * i + row)] = slots[std::size_t(8 * i + row)];
      std::memcpy(shared.data() + addresses[std::size_t(8 * i + row)], m[i][row], 16);
    }
  }
  for (const bool trans : {false, true}) {
    const auto r = ldmatrix_x4(shared, addresses, trans);
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) {
        const int row = lane >> 2, col = 2 * (lane % 4);
        const std::uint32_t expected = trans ? pack(m[i][col][row], m[i][col + 1][row]) : pack(m[i][row][col], m[i][row][col + 1]);
        ASSERT_EQ(r[std::size_t(lane)][std::size_t(i)], expected) << "lane " << lane << " matrix " << i << " trans " << trans;
      }
    }
  }
  addresses[7] = 4090;
  EXPECT_THROW(ldmatrix_x4(shared, addresses, false), std::out_of_range);
  addresses[7] = 8;  // not 16-byte aligned
  EXPECT_THROW(ldmatrix_x4(shared, addresses, false), std::out_of_range);
}
