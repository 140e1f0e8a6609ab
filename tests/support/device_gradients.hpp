// The backward's tensors in device memory for the GPU tests, beside DeviceCase: dO uploaded, dQ, dK and
// dV poisoned (NaN in every dtype) and read back as doubles; and the float64 reference's gradients of
// the same rounded inputs.
#pragma once

#include <dilatron/reference.hpp>

#include <vector>

#include "tests/support/device_case.hpp"

namespace dilatron::test {

struct Gradients {
  std::vector<double> dq, dk, dv;
};

class DeviceGradients {
 public:
  DeviceGradients(const RandomCase& c, const std::vector<std::byte>& dout)
      : c_(c), dout_(dout.size()), dq_(c.q.size()), dk_(c.k.size()), dv_(c.k.size()) {
    dout_.upload(dout.data());
    for (DeviceBuffer* b : {&dq_, &dk_, &dv_}) {
      const std::vector<std::uint16_t> poison(b->bytes() / 2, DeviceCase::kPoison);
      b->upload(poison.data());
    }
  }

  TensorView dout() const { return view(dout_, c_.q_shape()); }
  TensorView dq() const { return view(dq_, c_.q_shape()); }
  TensorView dk() const { return view(dk_, c_.kv_shape()); }
  TensorView dv() const { return view(dv_, c_.kv_shape()); }

  Gradients result() const { return {download(dq_), download(dk_), download(dv_)}; }

 private:
  TensorView view(const DeviceBuffer& b, const Shape4& shape) const { return TensorView::contiguous(b.get(), c_.dtype, shape); }

  std::vector<double> download(const DeviceBuffer& b) const {
    std::vector<std::uint16_t> raw(b.bytes() / 2);
    b.download(raw.data());
    std::vector<double> out(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) out[i] = load_element(raw.data(), c_.dtype, std::int64_t(i));
    return out;
  }

  const RandomCase& c_;
  DeviceBuffer dout_, dq_, dk_, dv_;
};

inline Gradients reference_gradients(RandomCase& c, std::vector<std::byte>& dout) {
  std::vector<float> dq(std::size_t(c.B * c.N * c.H * c.D)), dk(std::size_t(c.B * c.N * c.Hkv * c.D)), dv(dk.size());
  const auto view = [](std::vector<float>& x, const Shape4& shape) { return TensorView::contiguous(x.data(), DType::f32, shape); };
  reference_backward(c.config, c.q_view(), c.k_view(), c.v_view(), TensorView::contiguous(dout.data(), c.dtype, c.q_shape()),
                     view(dq, c.q_shape()), view(dk, c.kv_shape()), view(dv, c.kv_shape()));
  return {{dq.begin(), dq.end()}, {dk.begin(), dk.end()}, {dv.begin(), dv.end()}};
}

inline void expect_gradients_close(const Gradients& got, const Gradients& want, DType dtype) {
  // P and dS are rounded to the input dtype before their MMAs, as in FlashAttention's backward.
  const double bound = dtype == DType::bf16 ? 2e-2 : 5e-3;
  EXPECT_LE(l2_relative(got.dq, want.dq), bound) << "dq";
  EXPECT_LE(l2_relative(got.dk, want.dk), bound) << "dk";
  EXPECT_LE(l2_relative(got.dv, want.dv), bound) << "dv";
}

}  // namespace dilatron::test
