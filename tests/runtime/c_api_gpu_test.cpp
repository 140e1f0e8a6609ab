// The C ABI's GPU calls (dilatron_forward, dilatron_backward) on device memory against the ABI's own
// float64 reference calls on the same rounded inputs. Skipped without a GPU; on the emulated device it
// runs as Emulated.CApiGpu.*.
#include <gtest/gtest.h>

#include <dilatron/c_api.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/env.hpp"
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

// The ABI's forward and backward on the device and its reference calls on the host, for the same
// inputs; with `cu_seqlens`, the packed calls (offsets on the device and on the host).
struct AbiResults {
  GpuResult got;
  Gradients got_grad;
  std::vector<float> out, lse, dq, dk, dv;  // the reference's
};

AbiResults run_both(dilatron_attention* attention, RandomCase& c, std::vector<std::byte>& dout,
                    const std::vector<std::int32_t>* cu_seqlens = nullptr) {
  const DeviceCase device(c);
  const DeviceGradients grad(c, dout);
  const dilatron_tensor q = to_abi(device.q()), k = to_abi(device.k()), v = to_abi(device.v()), o = to_abi(device.out()),
                        lse = to_abi(device.lse()), d_o = to_abi(grad.dout()), dq = to_abi(grad.dq()), dk = to_abi(grad.dk()),
                        dv = to_abi(grad.dv());
  AbiResults r;
  r.out.resize(c.q.size() / 2), r.lse.resize(std::size_t(c.B * c.H * c.N)), r.dq.resize(r.out.size());
  r.dk.resize(c.k.size() / 2), r.dv.resize(r.dk.size());
  const dilatron_tensor hq = to_abi(c.q_view()), hk = to_abi(c.k_view()), hv = to_abi(c.v_view()),
                        hdo = to_abi(TensorView::contiguous(dout.data(), c.dtype, c.q_shape())),
                        ho = host_f32(r.out, c.q_shape()), hlse = host_f32(r.lse, {c.B, c.H, c.N, 1}),
                        hdq = host_f32(r.dq, c.q_shape()), hdk = host_f32(r.dk, c.kv_shape()),
                        hdv = host_f32(r.dv, c.kv_shape());
  if (cu_seqlens) {
    DeviceBuffer offsets(cu_seqlens->size() * sizeof(std::int32_t));
    offsets.upload(cu_seqlens->data());
    const std::int64_t sequences = std::int64_t(cu_seqlens->size()) - 1;
    const dilatron_packing on_device{static_cast<const std::int32_t*>(offsets.get()), sequences, 0},
        on_host{cu_seqlens->data(), sequences, 0};
    EXPECT_EQ(dilatron_forward_varlen(attention, &q, &k, &v, &on_device, &o, &lse, nullptr), DILATRON_OK)
        << dilatron_last_error();
    EXPECT_EQ(dilatron_backward_varlen(attention, &q, &k, &v, &o, &lse, &d_o, &dq, &dk, &dv, &on_device, nullptr),
              DILATRON_OK) << dilatron_last_error();
    EXPECT_EQ(dilatron_reference_forward_varlen(attention, &hq, &hk, &hv, &on_host, &ho, &hlse), DILATRON_OK)
        << dilatron_last_error();
    EXPECT_EQ(dilatron_reference_backward_varlen(attention, &hq, &hk, &hv, &on_host, &hdo, &hdq, &hdk, &hdv), DILATRON_OK)
        << dilatron_last_error();
  } else {
    EXPECT_EQ(dilatron_forward(attention, &q, &k, &v, &o, &lse, nullptr), DILATRON_OK) << dilatron_last_error();
    EXPECT_EQ(dilatron_backward(attention, &q, &k, &v, &o, &lse, &d_o, &dq, &dk, &dv, nullptr), DILATRON_OK)
        << dilatron_last_error();
    EXPECT_EQ(dilatron_reference_forward(attention, &hq, &hk, &hv, &ho, &hlse), DILATRON_OK) << dilatron_last_error();
    EXPECT_EQ(dilatron_reference_backward(attention, &hq, &hk, &hv, &hdo, &hdq, &hdk, &hdv), DILATRON_OK)
        << dilatron_last_error();
  }
  DILATRON_CU(cuCtxSynchronize());
  r.got = device.result();
  r.got_grad = grad.result();
  return r;
}

void expect_close(const AbiResults& r) {
  EXPECT_LE(l2_relative(r.got.out, doubles(r.out)), 2e-3);
  EXPECT_LE(l2_relative(r.got.lse, doubles(r.lse)), 1e-4);
  EXPECT_LE(l2_relative(r.got_grad.dq, doubles(r.dq)), 5e-3);
  EXPECT_LE(l2_relative(r.got_grad.dk, doubles(r.dk)), 5e-3);
  EXPECT_LE(l2_relative(r.got_grad.dv, doubles(r.dv)), 5e-3);
}

RandomCase abi_case(std::mt19937_64& rng, std::int64_t batch, std::int64_t rows) {
  RandomCase c;
  c.dtype = DType::f16;
  c.B = batch, c.N = rows, c.H = 4, c.Hkv = 2, c.D = 64;
  c.config.segments = {64, 128};
  c.config.dilations = {1, 3};
  c.config.causal = true;
  fill_inputs(c, rng);
  return c;
}

}  // namespace

TEST_F(CApiGpu, ForwardAndBackwardMatchTheReferenceCalls) {
  std::mt19937_64 rng(21);
  RandomCase c = abi_case(rng, 2, 200);
  std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
  dilatron_attention* attention = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0, &attention),
            DILATRON_OK) << dilatron_last_error();
  expect_close(run_both(attention, c, dout));
  dilatron_destroy(attention);

  // A bad call through the ABI is a status and a message, with nothing launched.
  const DeviceCase device(c);
  const dilatron_tensor q = to_abi(device.q()), k = to_abi(device.k()), v = to_abi(device.v()), o = to_abi(device.out()),
                        lse = to_abi(device.lse());
  dilatron_tensor wrong = q;
  wrong.shape[3] = 32;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0, &attention),
            DILATRON_OK);
  EXPECT_EQ(dilatron_forward(attention, &wrong, &k, &v, &o, &lse, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()), "");
  dilatron_destroy(attention);
}

// Sequences of 1, 50 and 149 rows (a partial segment past the largest) and an empty one, packed. On the
// emulated device the ABI's library holds an emulated device of its own (docs/EMULATOR.md), to which
// this test's allocations are not device memory: there only the refusals run, and the packed kernels are
// checked through the C++ API (GpuVarlen.*).
TEST_F(CApiGpu, PackedCallsMatchTheReferenceCalls) {
  std::mt19937_64 rng(22);
  const std::vector<std::int32_t> cu_seqlens{0, 1, 51, 51, 200};
  RandomCase c = abi_case(rng, 1, cu_seqlens.back());
  std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
  dilatron_attention* attention = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0, &attention),
            DILATRON_OK) << dilatron_last_error();
  if (!env::emulated_device()) expect_close(run_both(attention, c, dout, &cu_seqlens));

  // Offsets in host memory are refused by the GPU call, and a missing packing.
  const DeviceCase device(c);
  const dilatron_tensor q = to_abi(device.q()), k = to_abi(device.k()), v = to_abi(device.v()), o = to_abi(device.out());
  const dilatron_packing on_host{cu_seqlens.data(), 4, 0};
  EXPECT_EQ(dilatron_forward_varlen(attention, &q, &k, &v, &on_host, &o, nullptr, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("not device memory"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(dilatron_forward_varlen(attention, &q, &k, &v, nullptr, &o, nullptr, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("packing is NULL"), std::string::npos) << dilatron_last_error();
  DILATRON_CU(cuCtxSynchronize());
  for (double x : device.result().out) ASSERT_TRUE(std::isnan(x)) << "nothing written";
  dilatron_destroy(attention);
}
