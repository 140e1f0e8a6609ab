// The ring's backward pass on the Host transport: split across P ranks, with the dK and dV of
// travelling blocks sent back to their owners in float32, it returns one device's gradients.
#include <gtest/gtest.h>

#include <dilatron/reference.hpp>
#include <dilatron/ring.hpp>

#include <random>

#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

struct Gradients {
  std::vector<double> dq, dk, dv;
};

// The gradients in float32 files' precision: reference (ranks = 0) or the ring over `ranks`.
Gradients gradients(RandomCase& c, const std::vector<std::byte>& dout, int ranks) {
  std::vector<float> dq(std::size_t(c.B * c.N * c.H * c.D), NAN), dk(std::size_t(c.B * c.N * c.Hkv * c.D), NAN), dv(dk);
  const auto view = [](std::vector<float>& x, Shape4 shape) { return TensorView::contiguous(x.data(), DType::f32, shape); };
  const TensorView g = TensorView::contiguous(const_cast<std::byte*>(dout.data()), DType::f32, c.q_shape());
  if (ranks == 0) {
    reference_backward(c.config, c.q_view(), c.k_view(), c.v_view(), g, view(dq, c.q_shape()), view(dk, c.kv_shape()),
                       view(dv, c.kv_shape()), 2);
  } else {
    ring_reference_backward(c.config, ranks, c.q_view(), c.k_view(), c.v_view(), g, view(dq, c.q_shape()),
                            view(dk, c.kv_shape()), view(dv, c.kv_shape()));
  }
  return {{dq.begin(), dq.end()}, {dk.begin(), dk.end()}, {dv.begin(), dv.end()}};
}

}  // namespace

TEST(RingBackwardHost, EqualsOneDevicesGradientsForEveryRankCount) {
  std::mt19937_64 rng(20261124);
  int spanning = 0, causal = 0, head_groups = 0, gqa = 0;
  for (int trial = 0; trial < 60; ++trial) {
    RandomCase c = random_case(rng);
    const std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, DType::f32, 1.0, rng);
    const Gradients want = gradients(c, dout, 0);
    for (int ranks = 1; ranks <= std::min<std::int64_t>(5, c.N); ++ranks) {
      SCOPED_TRACE(fmt::format("trial {} ranks {}: {}", trial, ranks, c.describe()));
      const Gradients got = gradients(c, dout, ranks);
      // Travelling dK/dV are float32: relative 1e-6 of the largest gradient.
      ASSERT_LE(relative_error(got.dq, want.dq, 1e-6), 1e-5);
      ASSERT_LE(relative_error(got.dk, want.dk, 1e-6), 1e-5);
      ASSERT_LE(relative_error(got.dv, want.dv, 1e-6), 1e-5);
      for (std::int64_t w : c.config.segments) spanning += ranks > 1 && w > c.N / ranks;
    }
    causal += c.config.causal;
    head_groups += c.config.mode == Mode::head_groups;
    gqa += c.Hkv < c.H;
  }
  for (int tally : {spanning, causal, head_groups, gqa}) EXPECT_GE(tally, 10);
}

TEST(RingBackwardHost, LongNetScheduleOnALongerSequence) {
  std::mt19937_64 rng(10);
  RandomCase c;
  c.B = 1, c.N = 301, c.H = 4, c.Hkv = 2, c.D = 8, c.dtype = DType::f16;
  c.config.segments = {32, 64, 128, 256, 512};
  c.config.dilations = {1, 2, 4, 6, 12};
  c.config.causal = true;
  fill_inputs(c, rng);
  const std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, DType::f32, 1.0, rng);
  const Gradients want = gradients(c, dout, 0);
  for (int ranks : {2, 5, 8}) {
    SCOPED_TRACE(ranks);
    const Gradients got = gradients(c, dout, ranks);
    EXPECT_LE(relative_error(got.dq, want.dq, 1e-6), 1e-5);
    EXPECT_LE(relative_error(got.dk, want.dk, 1e-6), 1e-5);
    EXPECT_LE(relative_error(got.dv, want.dv, 1e-6), 1e-5);
  }
}
