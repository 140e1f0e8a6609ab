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

TEST(EmulatorLaunch, BadShapesAndBrokenSourcesAreClearErrors) {
  const EmulatedKernel k = load("reverse_and_sum");
  Buffers b(64);
  const Args args{b.out.data(), b.in.data(), 0};
  expect_error([&] { k.launch(&args, {{1, 1, 1}, {2048, 1, 1}, 0}); }, {"1 to 1024 threads"});
  expect_error([&] { k.launch(&args, {{1, 1, 1}, {64, 1, 1}, 300 * 1024}); }, {"227 KiB"});
  expect_error([&] { codegen::compile_host_unit(codegen::host_unit("__global__ void f(int) { undefined_name; }", "f"), "broken"); },
               {"compiling broken for the host failed", "undefined_name"});
}
