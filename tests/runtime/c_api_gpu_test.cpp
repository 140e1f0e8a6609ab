// The C ABI's GPU calls (dilatron_forward, dilatron_backward) on device memory against the ABI's own
// float64 reference calls on the same rounded inputs. Skipped without a GPU; on the emulated device it
// runs as Emulated.CApiGpu.*.
#include <gtest/gtest.h>

#include <dilatron/c_api.h>

#include <random>
#include <vector>

#include "tests/support/device_gradients.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

class CApiGpu : public GpuTest {};

dilatron_tensor to_abi(const TensorView& t) {
  const int32_t dtype = t.dtype == DType::f16 ? DILATRON_F16 : t.dtype == DType::bf16 ? DILATRON_BF16 : DILATRON_F32;
  dilatron_tensor out{const_cast<void*>(t.data), dtype, {}, {}};
  for (int i = 0; i < 4; ++i) out.shape[i] = t.shape[std::size_t(i)], out.strides[i] = t.strides[std::size_t(i)];
  return out;
}

dilatron_tensor host_f32(std::vector<float>& data, const Shape4& shape) {
  return to_abi(TensorView::contiguous(data.data(), DType::f32, shape));
}

std::vector<double> doubles(const std::vector<float>& x) { return {x.begin(), x.end()}; }

}  // namespace

TEST_F(CApiGpu, ForwardAndBackwardMatchTheReferenceCalls) {
  std::mt19937_64 rng(21);
  RandomCase c;
  c.dtype = DType::f16;
  c.B = 2, c.N = 200, c.H = 4, c.Hkv = 2, c.D = 64;
  c.config.segments = {64, 128};
  c.config.dilations = {1, 3};
  c.config.causal = true;
  fill_inputs(c, rng);
  std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);

  dilatron_attention* attention = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0, &attention),
            DILATRON_OK) << dilatron_last_error();
  const DeviceCase device(c);
  const DeviceGradients grad(c, dout);
  const dilatron_tensor q = to_abi(device.q()), k = to_abi(device.k()), v = to_abi(device.v()), o = to_abi(device.out()),
                        lse = to_abi(device.lse()), d_o = to_abi(grad.dout()), dq = to_abi(grad.dq()), dk = to_abi(grad.dk()),
                        dv = to_abi(grad.dv());
  ASSERT_EQ(dilatron_forward(attention, &q, &k, &v, &o, &lse, nullptr), DILATRON_OK) << dilatron_last_error();
  ASSERT_EQ(dilatron_backward(attention, &q, &k, &v, &o, &lse, &d_o, &dq, &dk, &dv, nullptr), DILATRON_OK)
      << dilatron_last_error();
  DILATRON_CU(cuCtxSynchronize());
  const GpuResult got = device.result();
  const Gradients got_grad = grad.result();

  std::vector<float> want_o(c.q.size() / 2), want_lse(std::size_t(c.B * c.H * c.N)), want_dq(want_o.size()),
      want_dk(c.k.size() / 2), want_dv(want_dk.size());
  const dilatron_tensor hq = to_abi(c.q_view()), hk = to_abi(c.k_view()), hv = to_abi(c.v_view()),
                        hdo = to_abi(TensorView::contiguous(dout.data(), c.dtype, c.q_shape())),
                        ho = host_f32(want_o, c.q_shape()), hlse = host_f32(want_lse, {c.B, c.H, c.N, 1}),
                        hdq = host_f32(want_dq, c.q_shape()), hdk = host_f32(want_dk, c.kv_shape()),
                        hdv = host_f32(want_dv, c.kv_shape());
  ASSERT_EQ(dilatron_reference_forward(attention, &hq, &hk, &hv, &ho, &hlse), DILATRON_OK) << dilatron_last_error();
  ASSERT_EQ(dilatron_reference_backward(attention, &hq, &hk, &hv, &hdo, &hdq, &hdk, &hdv), DILATRON_OK)
      << dilatron_last_error();
  dilatron_destroy(attention);

  EXPECT_LE(l2_relative(got.out, doubles(want_o)), 2e-3);
  EXPECT_LE(l2_relative(got.lse, doubles(want_lse)), 1e-4);
  EXPECT_LE(l2_relative(got_grad.dq, doubles(want_dq)), 5e-3);
  EXPECT_LE(l2_relative(got_grad.dk, doubles(want_dk)), 5e-3);
  EXPECT_LE(l2_relative(got_grad.dv, doubles(want_dv)), 5e-3);

  // A bad call through the ABI is a status and a message, with nothing launched.
  dilatron_tensor wrong = q;
  wrong.shape[3] = 32;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0, &attention),
            DILATRON_OK);
  EXPECT_EQ(dilatron_forward(attention, &wrong, &k, &v, &o, &lse, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()), "");
  dilatron_destroy(attention);
}
