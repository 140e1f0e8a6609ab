// The host reference's gradients against central finite differences of the brute-force dense
// definition (tests/support/dense_reference.hpp), which shares no code with the library: both modes,
// causal or not, GQA, partial segments, dilations past the segment length, custom scales.
#include <gtest/gtest.h>

#include <dilatron/reference.hpp>

#include <random>

#include "common/dtype.hpp"
#include "tests/support/expect_error.hpp"
#include "tests/support/finite_differences.hpp"
#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

// A random case small enough for finite differences over every input element.
RandomCase small_case(std::mt19937_64& rng) {
  for (;;) {
    RandomCase c = random_case(rng);
    if (c.B * c.N * c.H * c.D <= 240 && c.N <= 30) return c;
  }
}

std::vector<double> decode(const std::vector<std::byte>& raw) {
  std::vector<double> out(raw.size() / sizeof(float));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(raw.data(), DType::f32, std::int64_t(i));
  return out;
}

}  // namespace

TEST(ReferenceBackward, MatchesFiniteDifferencesOfTheDenseDefinition) {
  std::mt19937_64 rng(21);
  int longnet_multi = 0, head_groups = 0, causal = 0;
  for (int trial = 0; trial < 60; ++trial) {
    RandomCase c = small_case(rng);
    SCOPED_TRACE(c.describe());
    longnet_multi += c.config.mode == Mode::longnet && c.config.branches() > 1;
    head_groups += c.config.mode == Mode::head_groups;
    causal += c.config.causal;
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, DType::f32, 1.0, rng);
    std::vector<std::byte> dq(c.q.size() / dtype_size(c.dtype) * 4), dk(c.k.size() / dtype_size(c.dtype) * 4), dv(dk.size());
    reference_backward(c.config, c.q_view(), c.k_view(), c.v_view(), TensorView::contiguous(dout.data(), DType::f32, c.q_shape()),
                       TensorView::contiguous(dq.data(), DType::f32, c.q_shape()),
                       TensorView::contiguous(dk.data(), DType::f32, c.kv_shape()),
                       TensorView::contiguous(dv.data(), DType::f32, c.kv_shape()), 2);
    const Dense x = c.dense();
    const std::vector<double> g = decode(dout);
    EXPECT_LE(relative_error(decode(dq), finite_differences(c.config, x, &Dense::q, g), kFiniteDifferenceFloor), 1e-4) << "dq";
    EXPECT_LE(relative_error(decode(dk), finite_differences(c.config, x, &Dense::k, g), kFiniteDifferenceFloor), 1e-4) << "dk";
    EXPECT_LE(relative_error(decode(dv), finite_differences(c.config, x, &Dense::v, g), kFiniteDifferenceFloor), 1e-4) << "dv";
  }
  // The draws reach what matters: several longnet branches (the path through the LSE weights),
  // head_groups and causal masks.
  EXPECT_GE(longnet_multi, 10);
  EXPECT_GE(head_groups, 5);
  EXPECT_GE(causal, 15);
}

TEST(ReferenceBackward, RefusesMismatchedGradientTensorsBeforeWriting) {
  Config config;
  config.segments = {4};
  config.dilations = {1};
  std::vector<float> q(2 * 8 * 2 * 4, 0.5f), kv(2 * 8 * 1 * 4, 0.25f), out(q.size(), 7.f), small(kv.size(), 7.f);
  const Shape4 qs{2, 8, 2, 4}, ks{2, 8, 1, 4};
  auto view = [](std::vector<float>& data, Shape4 shape) { return TensorView::contiguous(data.data(), DType::f32, shape); };
  const TensorView qv = view(q, qs), kv_view = view(kv, ks);
  expect_error([&] { reference_backward(config, qv, kv_view, kv_view, view(small, ks), view(out, qs), view(small, ks), view(small, ks)); },
               {"dout shape [2,8,1,4] must equal q shape [2,8,2,4]"});
  expect_error([&] { reference_backward(config, qv, kv_view, kv_view, qv, view(small, ks), view(small, ks), view(small, ks)); },
               {"dq shape"});
  expect_error([&] { reference_backward(config, qv, kv_view, kv_view, qv, view(out, qs), view(out, qs), view(small, ks)); },
               {"dk shape"});
  expect_error([&] { reference_backward(config, qv, kv_view, kv_view, qv, view(out, qs), view(small, ks), view(out, qs)); },
               {"dv shape"});
  for (float x : out) ASSERT_EQ(x, 7.f) << "nothing written";
  for (float x : small) ASSERT_EQ(x, 7.f) << "nothing written";
}
