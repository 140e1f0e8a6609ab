// The GPU backward pass against the float64 host reference's gradients on random configurations: both
// modes, causal, partial segments, r not dividing w, GQA, float16 and bfloat16, head dims 64, 96 and
// 128. Gradient buffers are poisoned first. Skipped without a GPU.
#include <gtest/gtest.h>

#include <dilatron/dilatron.hpp>

#include <random>
#include <vector>

#include "tests/support/device_gradients.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

class GpuBackward : public GpuTest {};

// Forward with LSE, then backward, on the GPU.
Gradients run_gpu(const RandomCase& c, const std::vector<std::byte>& dout) {
  const DeviceCase device(c);
  const DeviceGradients grad(c, dout);
  DilatedAttention attention(c.config);
  const TensorView lse = device.lse();
  attention.forward(device.q(), device.k(), device.v(), device.out(), &lse, nullptr);
  attention.backward(device.q(), device.k(), device.v(), device.out(), lse, grad.dout(), grad.dq(), grad.dk(), grad.dv(),
                     nullptr);
  DILATRON_CU(cuCtxSynchronize());
  return grad.result();
}

}  // namespace

TEST_F(GpuBackward, MatchesTheHostReferenceOnRandomConfigurations) {
  std::mt19937_64 rng(20261125);
  for (int trial = 0; trial < gpu_or_emulated(24, 6); ++trial) {  // 6: every head dim in both dtypes
    RandomCase c = gpu_case(rng, trial, {64, 128, 96});
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    SCOPED_TRACE(fmt::format("trial {}: {}", trial, c.describe()));
    expect_gradients_close(run_gpu(c, dout), reference_gradients(c, dout), c.dtype);
  }
}

TEST_F(GpuBackward, LongNetScheduleWithGqa) {
  std::mt19937_64 rng(6);
  RandomCase c;
  c.dtype = DType::bf16;
  const std::int64_t n = gpu_or_emulated(4096, 1024);
  c.B = 1, c.N = n + 77, c.H = 8, c.Hkv = 2, c.D = 128;
  c.config.segments = {n / 16, n / 8, n / 4, n / 2, n};
  c.config.dilations = {1, 2, 4, 6, 12};
  for (bool causal : {false, true}) {
    c.config.causal = causal;
    fill_inputs(c, rng);
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    SCOPED_TRACE(causal);
    expect_gradients_close(run_gpu(c, dout), reference_gradients(c, dout), c.dtype);
  }
}
