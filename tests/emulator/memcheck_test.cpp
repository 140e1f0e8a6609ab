// The emulator's memcheck and initcheck on a small test-only kernel over emulated device memory: an
// access past the end of an allocation, into a freed one or through null is reported with the kernel,
// block and thread before the process stops (death tests); memory nobody wrote reads as NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "codegen/host_compile.hpp"
#include "emulator/cuda_driver.hpp"
#include "emulator/emulated_kernel.hpp"

using namespace dilatron;
using namespace dilatron::emulator;

namespace {

const char* kKernel = R"(
struct Args {
  float* out;
  const float* in;
  int shift;
};
// out[i + shift] = in[i] * 2 for each of the block's threads; shift 1 is the off-by-one.
__global__ void scale(Args a) {
  const int i = threadIdx.x;
  a.out[i + a.shift] = a.in[i] * 2;
}
)";

struct Args {
  float* out;
  const float* in;
  int shift;
};

const EmulatedKernel& scale_kernel() {
  static const EmulatedKernel k(codegen::compile_host_unit(codegen::host_unit(kKernel, "scale"), "scale").object, "scale");
  return k;
}

float* device_floats(std::size_t n) {
  CUdeviceptr p = 0;
  EXPECT_EQ(cuda::cuMemAlloc(&p, n * sizeof(float)), CUDA_SUCCESS);
  return reinterpret_cast<float*>(p);
}

void run(float* out, const float* in, int shift) {
  const Args args{out, in, shift};
  scale_kernel().launch(&args, {{1, 1, 1}, {64, 1, 1}, 0});
}

}  // namespace

TEST(EmulatorMemcheck, UnwrittenDeviceMemoryReadsAsNan) {
  float* in = device_floats(64);
  float* out = device_floats(64);
  const std::vector<float> half(32, 1.5f);
  ASSERT_EQ(cuda::cuMemcpyHtoD(CUdeviceptr(in), half.data(), 32 * sizeof(float)), CUDA_SUCCESS);  // the first half only
  run(out, in, 0);
  std::vector<float> got(64);
  ASSERT_EQ(cuda::cuMemcpyDtoH(got.data(), CUdeviceptr(out), 64 * sizeof(float)), CUDA_SUCCESS);
  for (int i = 0; i < 64; ++i) {
    if (i < 32) EXPECT_EQ(got[std::size_t(i)], 3.f) << i;
    else EXPECT_TRUE(std::isnan(got[std::size_t(i)])) << i << ": " << got[std::size_t(i)];
  }
  EXPECT_EQ(cuda::cuMemFree(CUdeviceptr(in)), CUDA_SUCCESS);
  EXPECT_EQ(cuda::cuMemFree(CUdeviceptr(out)), CUDA_SUCCESS);
}

TEST(EmulatorMemcheckDeathTest, BadGlobalAccessesAreReportedWithTheThread) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  scale_kernel();  // compiled before the forks
  float* in = device_floats(64);
  // An off-by-one store: thread 63 writes the float just past the 256 bytes.
  EXPECT_DEATH(run(device_floats(64), in, 1),
               "memcheck: scale: block \\(0, 0, 0\\) thread \\(63, 0, 0\\) accesses address 0x[0-9a-f]+, 0 bytes past the "
               "end of the 256-byte allocation");
  // A read of freed memory: the first thread to read reports it.
  float* freed = device_floats(64);
  ASSERT_EQ(cuda::cuMemFree(CUdeviceptr(freed)), CUDA_SUCCESS);
  EXPECT_DEATH(run(device_floats(64), freed, 0), "memcheck: scale: block \\(0, 0, 0\\) thread \\(0, 0, 0\\) accesses .* which was freed");
  // Null.
  EXPECT_DEATH(run(nullptr, in, 0), "memcheck: scale: block \\(0, 0, 0\\) thread \\(0, 0, 0\\) accesses a null pointer");
  run(device_floats(64), in, 0);  // and the same launch in bounds is fine
}
