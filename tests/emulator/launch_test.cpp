// The emulated device's execution model on small test-only kernels (never in templates/): barriers,
// shared memory, warp shuffles and cp.async behave as on a GPU, and each seeded bug is reported (or, for
// a read before cp.async.wait_group, reads as NaN) instead of passing silently or hanging.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "codegen/host_compile.hpp"
#include "emulator/bank_conflicts.hpp"
#include "emulator/emulated_kernel.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::emulator;
using dilatron::test::expect_error;

namespace {

const char* kKernels = R"(
#include "dilatron/ptx.cuh"
struct Args {
  float* out;
  const float* in;
  int mode;
};

// Each block reverses its 64 values through shared memory, then each warp sums the reversed values
// with shuffles. mode 2 puts the barrier in a divergent branch; mode 3 lets one lane of each warp exit
// before the shuffles; mode 4 stores one float past the shared memory.
__global__ void reverse_and_sum(Args a) {
  float* s = reinterpret_cast<float*>(dilatron::ptx::dynamic_shared());
  const int i = threadIdx.x, base = blockIdx.x * 64;
  if (a.mode == 4 && i == 63) dilatron::ptx::st_shared_32(dilatron::ptx::shared_address(s + 64), 0u);
  s[i] = a.in[base + i];
  if (a.mode != 2 || i < 32) __syncthreads();
  if (a.mode == 3 && i % 32 == 5) return;
  float x = s[63 - i];
  for (int m = 16; m > 0; m /= 2) x += __shfl_xor_sync(0xffffffffu, x, m);
  a.out[base + i] = x;
}

// Warp `writer` stores a 512-byte tile with st.shared (lane j writes the row lane j + 1 reads), which warp
// 0 then reads with ldmatrix.x4. What orders the two: mode 0 a __syncthreads, mode 1 nothing (writer warp
// 1), mode 2 a __syncwarp (writer warp 0), mode 3 nothing (writer warp 0), mode 4 a __syncthreads but
// every lane of warp 1 also stores the first word.
__global__ void tile_through_shared(Args a) {
  using namespace dilatron::ptx;
  const unsigned base = shared_address(dynamic_shared());
  const int i = threadIdx.x, lane = i % 32, writer = a.mode == 2 || a.mode == 3 ? 0 : 1;
  if (i / 32 == writer) {
    for (int w = 0; w < 4; ++w) st_shared_32(base + 16 * ((lane + 1) % 32) + 4 * w, unsigned(i * 4 + w));
    if (a.mode == 4) st_shared_32(base, 7u);
  }
  if (a.mode == 0 || a.mode == 4) __syncthreads();
  if (a.mode == 2) __syncwarp();
  if (i / 32 == 0) {
    unsigned r[4];
    ldmatrix_x4(base + 16 * lane, r);
    for (int w = 0; w < 4; ++w) a.out[4 * lane + w] = float(r[w]);
  }
}

// One warp copies a 32 x 128-byte tile (rows of eight 16-byte chunks) to shared memory with cp.async and
// reads it back with ldmatrix.x4, one chunk column at a time. mode 0 keeps chunk c of row r at c (every
// 8x8 matrix's rows then share four banks); mode 1 stores it at c ^ (r % 8), the usual swizzle.
__global__ void tile_columns(Args a) {
  using namespace dilatron::ptx;
  const unsigned base = shared_address(dynamic_shared());
  const int lane = threadIdx.x;
  auto at = [&](int row, int chunk) { return base + 128 * row + 16 * (a.mode == 1 ? chunk ^ (row % 8) : chunk); };
  for (int j = 0; j < 8; ++j) {
    const int row = 4 * j + lane / 8, chunk = lane % 8;
    cp_async_16(at(row, chunk), a.in + 32 * row + 4 * chunk, true);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
  for (int chunk = 0; chunk < 8; ++chunk) {
    unsigned r[4];
    ldmatrix_x4(at(lane, chunk), r);
    for (int m = 0; m < 4; ++m) a.out[128 * chunk + 4 * lane + m] = __uint_as_float(r[m]);
  }
}

// Copies 64 floats global -> shared with cp.async, then reads them back; mode 1 reads before waiting.
__global__ void async_copy(Args a) {
  unsigned char* s = dilatron::ptx::dynamic_shared();
  const int i = threadIdx.x;
  if (i < 16) dilatron::ptx::cp_async_16(dilatron::ptx::shared_address(s + 16 * i), a.in + 4 * i, true);
  dilatron::ptx::cp_async_commit();
  if (a.mode != 1) dilatron::ptx::cp_async_wait<0>();
  __syncthreads();
  a.out[i] = reinterpret_cast<const float*>(s)[i];
}
)";

EmulatedKernel load(const std::string& name) {
  static const std::string source = kKernels;
  return EmulatedKernel(codegen::compile_host_unit(codegen::host_unit(source, name), name).object, name);
}

struct Buffers {
  std::vector<float> in, out;
  explicit Buffers(std::size_t n) : in(n), out(n, -1.f) { std::iota(in.begin(), in.end(), 1.f); }
};

struct Args {
  float* out;
  const float* in;
  int mode;
};

}  // namespace

TEST(EmulatorLaunch, BarriersSharedMemoryAndShufflesBehaveAsOnAGpu) {
  const EmulatedKernel k = load("reverse_and_sum");
  for (const int host_threads : {1, 0}) {
    Buffers b(4 * 64);
    const Args args{b.out.data(), b.in.data(), 0};
    k.launch(&args, {{4, 1, 1}, {64, 1, 1}, 64 * 4}, {"", host_threads});
    for (int block = 0; block < 4; ++block) {
      for (int i = 0; i < 64; ++i) {
        // Warp w holds reversed values 63 - i for its lanes: the sum of in[base + 32 * (1 - w) + 0..31].
        const int w = i / 32;
        double sum = 0;
        for (int j = 0; j < 32; ++j) sum += b.in[std::size_t(block * 64 + 32 * (1 - w) + j)];
        ASSERT_EQ(b.out[std::size_t(block * 64 + i)], sum) << "block " << block << " thread " << i;
      }
    }
  }
}

TEST(EmulatorLaunch, SeededBugsAreReportedNotHung) {
  const EmulatedKernel k = load("reverse_and_sum");
  Buffers b(64);
  const auto run = [&](int mode) {
    const Args args{b.out.data(), b.in.data(), mode};
    k.launch(&args, {{1, 1, 1}, {64, 1, 1}, 64 * 4});
  };
  // A barrier only warp 0 reaches: warp 1 runs on and exits while warp 0 waits.
  expect_error([&] { run(2); }, {"reverse_and_sum", "exits while block (0, 0, 0) thread (0, 0, 0) waits at __syncthreads"});
  // Lane 5 of each warp exits before the shuffle its partners wait in.
  expect_error([&] { run(3); }, {"reverse_and_sum", "lane 5 of its warp has exited"});
  // One float past the 256 bytes of shared memory.
  expect_error([&] { run(4); }, {"reverse_and_sum", "block (0, 0, 0) thread (63, 0, 0)", "4 bytes at shared address 256"});
  EXPECT_NO_THROW(run(0));
}

// racecheck: a shared word two threads touch with nothing ordering them, one writing, fails the launch
// naming both threads and the address; __syncthreads, or __syncwarp within a warp, orders them.
TEST(EmulatorLaunch, SharedMemoryRacesAreReportedWithBothThreads) {
  const EmulatedKernel k = load("tile_through_shared");
  Buffers b(128);
  const auto run = [&](int mode) {
    const Args args{b.out.data(), b.in.data(), mode};
    k.launch(&args, {{1, 1, 1}, {64, 1, 1}, 512});
  };
  for (const int mode : {0, 2}) {
    SCOPED_TRACE(mode);
    std::fill(b.out.begin(), b.out.end(), -1.f);
    ASSERT_NO_THROW(run(mode));
    // ldmatrix hands lane l row l / 4's word l % 4 of each matrix: word w of row (l / 4) + 8 m, written by
    // lane (row + 31) % 32 of the writing warp.
    const int writer = mode == 2 ? 0 : 32;
    for (int l = 0; l < 32; ++l) {
      for (int m = 0; m < 4; ++m) {
        const int row = l / 4 + 8 * m;
        EXPECT_EQ(b.out[std::size_t(4 * l + m)], float((writer + (row + 31) % 32) * 4 + l % 4)) << "lane " << l << " matrix " << m;
      }
    }
  }
  // Warp 0 reads (it runs first) what warp 1 then overwrites, with no barrier between: read, then write.
  expect_error([&] { run(1); }, {"racecheck", "thread (32, 0, 0) stores to (st.shared) shared address 16",
                                 "which block (0, 0, 0) thread (1, 0, 0) read since the last __syncthreads"});
  // Lanes of one warp: lane 31 writes the row lane 0 reads, without a __syncwarp.
  expect_error([&] { run(3); }, {"racecheck", "thread (0, 0, 0) reads (ldmatrix) shared address 0",
                                 "which block (0, 0, 0) thread (31, 0, 0) wrote"});
  // Two writers of one word.
  expect_error([&] { run(4); }, {"racecheck", "thread (33, 0, 0) stores to (st.shared) shared address 0",
                                 "thread (32, 0, 0) wrote"});
}

TEST(EmulatorLaunch, CpAsyncBytesAppearOnlyAtTheirWait) {
  const EmulatedKernel k = load("async_copy");
  Buffers b(64);
  Args args{b.out.data(), b.in.data(), 0};
  k.launch(&args, {{1, 1, 1}, {64, 1, 1}, 256});
  EXPECT_EQ(b.out, b.in);
  args.mode = 1;  // reads before cp.async.wait_group: every value is the 0xff poison, a NaN
  k.launch(&args, {{1, 1, 1}, {64, 1, 1}, 256});
  for (const float x : b.out) EXPECT_TRUE(std::isnan(x));
}

// The hardware's wavefronts, from the rules in bank_conflicts.hpp.
TEST(BankConflicts, RequestsTakeTheWavefrontsTheirBanksNeed) {
  const auto request = [](unsigned stride, unsigned bytes, int lanes = 32) {
    std::vector<LaneAccess> r;
    for (int l = 0; l < lanes; ++l) r.push_back({l, stride * unsigned(l), bytes});
    return count_wavefronts(r);
  };
  const auto expect = [](Wavefronts w, unsigned taken, unsigned needed, unsigned worst) {
    EXPECT_EQ(w.taken, taken);
    EXPECT_EQ(w.needed, needed);
    EXPECT_EQ(w.worst_way, worst);
  };
  expect(request(4, 4), 1, 1, 1);            // consecutive words: one wavefront
  expect(request(0, 4), 1, 1, 1);            // one word for every lane: a broadcast
  expect(request(8, 4), 2, 1, 2);            // stride 2 words: 2-way
  expect(request(128, 4), 32, 1, 32);        // one bank for every lane
  expect(request(16, 16), 4, 4, 1);          // 16-byte accesses: four phases of 8 lanes, each conflict-free
  expect(request(128, 16), 32, 4, 8);        // rows of 128 bytes: each phase's 8 rows share 4 banks
  expect(request(4, 4, 16), 1, 1, 1);        // half a warp
  expect(request(128, 16, 8), 8, 1, 8);      // one phase only
  expect(count_wavefronts({}), 0, 0, 1);
}

// An unswizzled tile reads with 8-way conflicts, a swizzled one with none; the values are the same.
TEST(BankConflicts, AnUnswizzledTileShowsEightWayConflictsAndTheSameResult) {
  const EmulatedKernel k = load("tile_columns");
  set_bank_profiling(true);
  std::vector<std::vector<float>> outs;
  for (const int mode : {0, 1}) {
    reset_bank_profiles();
    Buffers b(32 * 32);
    const Args args{b.out.data(), b.in.data(), mode};
    k.launch(&args, {{1, 1, 1}, {32, 1, 1}, 32 * 128});
    // ldmatrix lane l gets word l % 4 of row l / 4 + 8 m of matrix m: chunk c of that row.
    for (int chunk = 0; chunk < 8; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        for (int m = 0; m < 4; ++m) {
          const int row = l / 4 + 8 * m;
          ASSERT_EQ(b.out[std::size_t(128 * chunk + 4 * l + m)], b.in[std::size_t(32 * row + 4 * chunk + l % 4)]);
        }
      }
    }
    outs.push_back(b.out);
    const BankProfile p = bank_profiles().at("tile_columns");
    const BankCounts& ld = p[std::size_t(SharedOp::ldmatrix)];
    const BankCounts& copies = p[std::size_t(SharedOp::cp_async)];
    EXPECT_EQ(ld.requests, 8u);
    EXPECT_EQ(ld.needed, 8u * 4);
    EXPECT_EQ(ld.wavefronts, mode == 0 ? 8u * 32 : 8u * 4) << "mode " << mode;
    EXPECT_EQ(ld.worst_way, mode == 0 ? 8u : 1u);
    // Eight lanes copy one whole row: conflict-free either way.
    EXPECT_EQ(copies.requests, 8u);
    EXPECT_TRUE(copies.conflict_free()) << copies.wavefronts << " of " << copies.needed;
    EXPECT_EQ(p[std::size_t(SharedOp::st_shared)].requests, 0u);
  }
  set_bank_profiling(false);
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_NE(bank_profile_table().find("tile_columns"), std::string::npos);
}

TEST(EmulatorLaunch, BadShapesAndBrokenSourcesAreClearErrors) {
  const EmulatedKernel k = load("reverse_and_sum");
  Buffers b(64);
  const Args args{b.out.data(), b.in.data(), 0};
  expect_error([&] { k.launch(&args, {{1, 1, 1}, {2048, 1, 1}, 0}); }, {"1 to 1024 threads"});
  expect_error([&] { k.launch(&args, {{1, 1, 1}, {64, 1, 1}, 300 * 1024}); }, {"227 KiB"});
  expect_error([&] { codegen::compile_host_unit(codegen::host_unit("__global__ void f(int) { undefined_name; }", "f"), "broken"); },
               {"compiling broken for the host failed", "undefined_name"});
}
