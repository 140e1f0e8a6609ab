// The GPU backward pass against the float64 host reference's gradients on random configurations: both
// modes, causal, partial segments, r not dividing w, GQA, float16 and bfloat16, head dims 64, 96 and
// 128. Gradient buffers are poisoned first. Skipped without a GPU.
#include <gtest/gtest.h>

#include <dilatron/dilatron.hpp>

#include <random>
#include <vector>

#include "tests/support/device_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

class GpuBackward : public GpuTest {};

struct Gradients {
  std::vector<double> dq, dk, dv;
};

std::vector<double> download(const DeviceBuffer& buffer, DType dtype) {
  std::vector<std::uint16_t> raw(buffer.bytes() / 2);
  buffer.download(raw.data());
  std::vector<double> out(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) out[i] = load_element(raw.data(), dtype, std::int64_t(i));
  return out;
}

// Forward with LSE, then backward, on the GPU.
Gradients run_gpu(const RandomCase& c, const std::vector<std::byte>& dout) {
  const DeviceCase device(c);
  DeviceBuffer g(dout.size()), dq(c.q.size()), dk(c.k.size()), dv(c.k.size());
  g.upload(dout.data());
  for (DeviceBuffer* b : {&dq, &dk, &dv}) {
    const std::vector<std::uint16_t> poison(b->bytes() / 2, DeviceCase::kPoison);
    b->upload(poison.data());
  }
  const auto view = [&](const DeviceBuffer& b, const Shape4& shape) { return TensorView::contiguous(b.get(), c.dtype, shape); };
  DilatedAttention attention(c.config);
  const TensorView lse = device.lse();
  attention.forward(device.q(), device.k(), device.v(), device.out(), &lse, nullptr);
  attention.backward(device.q(), device.k(), device.v(), device.out(), lse, view(g, c.q_shape()), view(dq, c.q_shape()),
                     view(dk, c.kv_shape()), view(dv, c.kv_shape()), nullptr);
  DILATRON_CU(cuCtxSynchronize());
  return {download(dq, c.dtype), download(dk, c.dtype), download(dv, c.dtype)};
}

// The reference's gradients of the same (rounded) inputs.
Gradients reference(RandomCase& c, std::vector<std::byte>& dout) {
  std::vector<float> dq(std::size_t(c.B * c.N * c.H * c.D)), dk(std::size_t(c.B * c.N * c.Hkv * c.D)), dv(dk.size());
  const auto view = [](std::vector<float>& x, const Shape4& shape) { return TensorView::contiguous(x.data(), DType::f32, shape); };
  reference_backward(c.config, c.q_view(), c.k_view(), c.v_view(), TensorView::contiguous(dout.data(), c.dtype, c.q_shape()),
                     view(dq, c.q_shape()), view(dk, c.kv_shape()), view(dv, c.kv_shape()));
  return {{dq.begin(), dq.end()}, {dk.begin(), dk.end()}, {dv.begin(), dv.end()}};
}

void expect_close(const Gradients& got, const Gradients& want, DType dtype) {
  // P and dS are rounded to the input dtype before their MMAs, as in FlashAttention's backward.
  const double bound = dtype == DType::bf16 ? 2e-2 : 5e-3;
  EXPECT_LE(l2_relative(got.dq, want.dq), bound) << "dq";
  EXPECT_LE(l2_relative(got.dk, want.dk), bound) << "dk";
  EXPECT_LE(l2_relative(got.dv, want.dv), bound) << "dv";
}

}  // namespace

TEST_F(GpuBackward, MatchesTheHostReferenceOnRandomConfigurations) {
  std::mt19937_64 rng(20261125);
  for (int trial = 0; trial < 24; ++trial) {
    RandomCase c = gpu_case(rng, trial, {64, 128, 96});
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    SCOPED_TRACE(fmt::format("trial {}: {}", trial, c.describe()));
    expect_close(run_gpu(c, dout), reference(c, dout), c.dtype);
  }
}

TEST_F(GpuBackward, LongNetScheduleWithGqa) {
  std::mt19937_64 rng(6);
  RandomCase c;
  c.dtype = DType::bf16;
  c.B = 1, c.N = 4096 + 77, c.H = 8, c.Hkv = 2, c.D = 128;
  c.config.segments = {256, 512, 1024, 2048, 4096};
  c.config.dilations = {1, 2, 4, 6, 12};
  for (bool causal : {false, true}) {
    c.config.causal = causal;
    c.q = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    c.k = random_tensor(c.B * c.N * c.Hkv * c.D, c.dtype, 1.0, rng);
    c.v = random_tensor(c.B * c.N * c.Hkv * c.D, c.dtype, 1.0, rng);
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    SCOPED_TRACE(causal);
    expect_close(run_gpu(c, dout), reference(c, dout), c.dtype);
  }
}
