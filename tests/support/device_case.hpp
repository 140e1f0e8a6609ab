// A RandomCase's tensors in device memory for the GPU tests: inputs uploaded, outputs poisoned (NaN in
// every dtype) so a row a launch forgets fails the comparison, results read back as doubles.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string_view>
#include <vector>

#include "common/dtype.hpp"
#include "common/env.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "tests/support/random_case.hpp"

namespace dilatron::test {

// The GPU tests run on the emulated device too (DILATRON_DEVICE=emulator, docs/EMULATOR.md), where a
// thread is a fiber on the CPU: there they take the smaller size, unless DILATRON_TEST_SIZES=gpu asks
// for the GPU's (slow: to rehearse a GPU run's exact cases, and to list the kernels they compile).
template <class T>
T gpu_or_emulated(T on_gpu, T on_emulator) {
  static const bool gpu_sizes = [] {
    const char* sizes = std::getenv("DILATRON_TEST_SIZES");
    return sizes && std::string_view(sizes) == "gpu";
  }();
  return env::emulated_device() && !gpu_sizes ? on_emulator : on_gpu;
}

// Skips the test without a GPU.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const driver::Status status = driver::probe();
    if (status.devices.empty()) GTEST_SKIP() << "no GPU: " << status.problem;
  }
};

struct GpuResult {
  std::vector<double> out, lse;
};

class DeviceCase {
 public:
  static constexpr std::uint16_t kPoison = 0x7fff;  // NaN in float16 and bfloat16

  explicit DeviceCase(const RandomCase& c)
      : c_(c), q_(c.q.size()), k_(c.k.size()), v_(c.v.size()), out_(c.q.size()),
        lse_(std::size_t(c.B * c.H * c.N) * sizeof(float)) {
    q_.upload(c.q.data());
    k_.upload(c.k.data());
    v_.upload(c.v.data());
    const std::vector<std::uint16_t> out(c.q.size() / 2, kPoison);
    const std::vector<float> lse(std::size_t(c.B * c.H * c.N), std::nanf(""));
    out_.upload(out.data());
    lse_.upload(lse.data());
  }

  TensorView q() const { return TensorView::contiguous(q_.get(), c_.dtype, c_.q_shape()); }
  TensorView k() const { return TensorView::contiguous(k_.get(), c_.dtype, c_.kv_shape()); }
  TensorView v() const { return TensorView::contiguous(v_.get(), c_.dtype, c_.kv_shape()); }
  TensorView out() const { return TensorView::contiguous(out_.get(), c_.dtype, c_.q_shape()); }
  TensorView lse() const { return TensorView::contiguous(lse_.get(), DType::f32, {c_.B, c_.H, c_.N, 1}); }

  // After the context has drained.
  GpuResult result() const {
    std::vector<std::uint16_t> out(out_.bytes() / 2);
    std::vector<float> lse(lse_.bytes() / sizeof(float));
    out_.download(out.data());
    lse_.download(lse.data());
    GpuResult r;
    for (std::size_t i = 0; i < out.size(); ++i) r.out.push_back(load_element(out.data(), c_.dtype, std::int64_t(i)));
    r.lse.assign(lse.begin(), lse.end());
    return r;
  }

 private:
  const RandomCase& c_;
  DeviceBuffer q_, k_, v_, out_, lse_;
};

// ||got - want|| / ||want||; NaN anywhere fails.
inline double l2_relative(const std::vector<double>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

// The float64 reference's O and LSE (rounded to float32), as a forward test compares them.
struct Reference {
  std::vector<double> out, lse;
};

// O within the dtype's bound; LSE (unless !check_lse) within 2e-3 relative, -inf exactly where the
// reference has it (rows that attend nothing).
inline void expect_forward_close(const GpuResult& got, const Reference& want, DType dtype, bool check_lse = true) {
  EXPECT_LE(l2_relative(got.out, want.out), dtype == DType::bf16 ? 1e-2 : 3e-3);
  if (!check_lse) return;
  for (std::size_t i = 0; i < want.lse.size(); ++i) {
    if (std::isinf(want.lse[i])) {
      ASSERT_TRUE(std::isinf(got.lse[i]) && got.lse[i] < 0) << "lse " << i << " = " << got.lse[i];
    } else {
      ASSERT_NEAR(got.lse[i], want.lse[i], 2e-3 * std::max(1.0, std::fabs(want.lse[i]))) << "lse " << i;
    }
  }
}

// A random configuration the GPU kernels take; trial picks the dtype (alternating) and the head dim (each
// of `head_dims` with both dtypes in turn), and steers modes, causality, GQA and scales over trials.
inline RandomCase gpu_case(std::mt19937_64& rng, int trial, const std::vector<std::int64_t>& head_dims) {
  auto uniform = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  RandomCase c;
  c.dtype = trial % 2 ? DType::bf16 : DType::f16;
  c.D = head_dims[std::size_t(trial / 2) % head_dims.size()];
  c.B = uniform(1, 2);
  c.N = trial % 3 == 0 ? std::vector<std::int64_t>{257, 401, 613, 997}[std::size_t(uniform(0, 3))] : uniform(64, 700);
  c.H = std::vector<std::int64_t>{2, 4, 6, 8}[std::size_t(uniform(0, 3))];
  c.Hkv = c.H % 2 == 0 && trial % 2 ? c.H / 2 : c.H;
  const std::int64_t branches = uniform(1, 4);
  for (std::int64_t i = 0; i < branches; ++i) {
    const std::int64_t w = uniform(16, c.N + 64);
    c.config.segments.push_back(w);
    c.config.dilations.push_back(trial % 5 == 4 ? uniform(1, 3) * (i + 1) + 1 : uniform(1, std::min<std::int64_t>(w, 12)));
  }
  c.config.mode = c.H >= branches && trial % 3 == 1 ? Mode::head_groups : Mode::longnet;
  c.config.causal = trial % 2 == 0 || trial % 7 == 3;
  if (trial % 4 == 3) c.config.scale = 0.05;
  fill_inputs(c, rng);
  return c;
}

}  // namespace dilatron::test
