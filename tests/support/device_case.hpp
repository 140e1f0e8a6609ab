// A RandomCase's tensors in device memory for the GPU tests: inputs uploaded, outputs poisoned (NaN in
// every dtype) so a row a launch forgets fails the comparison, results read back as doubles.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/dtype.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "tests/support/random_case.hpp"

namespace dilatron::test {

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

}  // namespace dilatron::test
