// Packed variable-length batches on the GPU: forward (O and LSE) and backward against the float64 host
// reference over the same packing (which tests/runtime/reference_varlen_test.cpp checks against every
// sequence run alone), with sequences of one row, shorter than the smallest segment, longer than the
// largest, and empty; then what a packed call refuses before writing anything, and what the kernels do
// with offsets the host cannot see. Outputs are poisoned first. Skipped without a GPU.
#include <gtest/gtest.h>

#include <dilatron/dilatron.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "tests/support/device_gradients.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

class GpuVarlen : public GpuTest {};

// A random packed batch: gpu_case's configuration over sequences of 1 row, fewer rows than the smallest
// segment, more than the largest, a random length and (every other trial) an empty one, shuffled.
struct PackedCase {
  RandomCase c;
  std::vector<std::int32_t> cu_seqlens;
  std::int32_t longest = 0;
};

PackedCase packed_case(std::mt19937_64& rng, int trial, const std::vector<std::int64_t>& head_dims) {
  PackedCase p{gpu_case(rng, trial, head_dims), {0}, 0};
  const auto [shortest, widest] = std::minmax_element(p.c.config.segments.begin(), p.c.config.segments.end());
  const auto uniform = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  std::vector<std::int64_t> lengths{1, std::max<std::int64_t>(1, *shortest - uniform(1, 8)),
                                    std::min<std::int64_t>(*widest + uniform(1, 40), gpu_or_emulated(2000, 640)),
                                    uniform(2, 300)};
  if (trial % 2 == 0) lengths.push_back(0);
  std::shuffle(lengths.begin(), lengths.end(), rng);
  for (std::int64_t n : lengths) {
    p.cu_seqlens.push_back(std::int32_t(p.cu_seqlens.back() + n));
    p.longest = std::max(p.longest, std::int32_t(n));
  }
  p.c.B = 1;
  p.c.N = p.cu_seqlens.back();
  fill_inputs(p.c, rng);
  return p;
}

class DeviceOffsets {
 public:
  explicit DeviceOffsets(const std::vector<std::int32_t>& cu) : buffer_(cu.size() * sizeof(std::int32_t)) {
    buffer_.upload(cu.data());
  }
  PackedSequences packing(std::int64_t sequences, std::int64_t max_seqlen) const {
    return {static_cast<const std::int32_t*>(buffer_.get()), sequences, max_seqlen};
  }

 private:
  DeviceBuffer buffer_;
};

Reference reference(PackedCase& p) {
  RandomCase& c = p.c;
  std::vector<float> out(std::size_t(c.N * c.H * c.D)), lse(std::size_t(c.H * c.N));
  const auto l = TensorView::contiguous(lse.data(), DType::f32, {1, c.H, c.N, 1});
  reference_forward_varlen(c.config, c.q_view(), c.k_view(), c.v_view(), p.cu_seqlens,
                           TensorView::contiguous(out.data(), DType::f32, c.q_shape()), &l);
  return {{out.begin(), out.end()}, {lse.begin(), lse.end()}};
}

Gradients reference_gradients(PackedCase& p, std::vector<std::byte>& dout) {
  RandomCase& c = p.c;
  std::vector<float> dq(std::size_t(c.N * c.H * c.D)), dk(std::size_t(c.N * c.Hkv * c.D)), dv(dk.size());
  const auto view = [](std::vector<float>& x, const Shape4& shape) { return TensorView::contiguous(x.data(), DType::f32, shape); };
  reference_backward_varlen(c.config, c.q_view(), c.k_view(), c.v_view(), p.cu_seqlens,
                            TensorView::contiguous(dout.data(), c.dtype, c.q_shape()), view(dq, c.q_shape()),
                            view(dk, c.kv_shape()), view(dv, c.kv_shape()));
  return {{dq.begin(), dq.end()}, {dk.begin(), dk.end()}, {dv.begin(), dv.end()}};
}

std::int64_t sequences(const PackedCase& p) { return std::int64_t(p.cu_seqlens.size()) - 1; }

bool all_nan(const std::vector<double>& x) {
  return std::all_of(x.begin(), x.end(), [](double v) { return std::isnan(v); });
}

}  // namespace

// max_seqlen alternates between unknown (0: the grid covers every row) and the longest sequence.
TEST_F(GpuVarlen, ForwardEqualsTheReferenceOverThePacking) {
  std::mt19937_64 rng(20261204);
  for (int trial = 0; trial < gpu_or_emulated(24, 6); ++trial) {
    PackedCase p = packed_case(rng, trial, {64, 128, 96, 256});
    SCOPED_TRACE(fmt::format("trial {}: {} cu_seqlens={}", trial, p.c.describe(), fmt::join(p.cu_seqlens, ",")));
    const DeviceCase device(p.c);
    const DeviceOffsets offsets(p.cu_seqlens);
    const TensorView lse = device.lse();
    DilatedAttention attention(p.c.config);
    attention.forward(device.q(), device.k(), device.v(), offsets.packing(sequences(p), trial % 2 ? p.longest : 0),
                      device.out(), &lse);
    DILATRON_CU(cuCtxSynchronize());
    expect_forward_close(device.result(), reference(p), p.c.dtype);
  }
}

TEST_F(GpuVarlen, GradientsEqualTheReferenceOverThePacking) {
  std::mt19937_64 rng(20261205);
  for (int trial = 0; trial < gpu_or_emulated(18, 6); ++trial) {
    PackedCase p = packed_case(rng, trial, {64, 128, 96});
    std::vector<std::byte> dout = random_tensor(p.c.N * p.c.H * p.c.D, p.c.dtype, 1.0, rng);
    SCOPED_TRACE(fmt::format("trial {}: {} cu_seqlens={}", trial, p.c.describe(), fmt::join(p.cu_seqlens, ",")));
    const DeviceCase device(p.c);
    const DeviceGradients grad(p.c, dout);
    const DeviceOffsets offsets(p.cu_seqlens);
    const PackedSequences packing = offsets.packing(sequences(p), trial % 2 ? 0 : p.longest);
    const TensorView lse = device.lse();
    DilatedAttention attention(p.c.config);
    attention.forward(device.q(), device.k(), device.v(), packing, device.out(), &lse);
    attention.backward(device.q(), device.k(), device.v(), device.out(), lse, grad.dout(), grad.dq(), grad.dk(),
                       grad.dv(), packing);
    DILATRON_CU(cuCtxSynchronize());
    expect_gradients_close(grad.result(), reference_gradients(p, dout), p.c.dtype);
  }
}

// Every check runs before a launch: the poisoned outputs stay poisoned.
TEST_F(GpuVarlen, RefusesBadPackingsBeforeWritingAnything) {
  std::mt19937_64 rng(7);
  PackedCase p = packed_case(rng, 1, {64});
  const DeviceCase device(p.c);
  const DeviceOffsets offsets(p.cu_seqlens);
  const TensorView lse = device.lse();
  DilatedAttention attention(p.c.config);
  const auto run = [&](const PackedSequences& packing) {
    attention.forward(device.q(), device.k(), device.v(), packing, device.out(), &lse);
  };
  const PackedSequences good = offsets.packing(sequences(p), 0);
  expect_error([&] { run({p.cu_seqlens.data(), good.sequences, 0}); }, {"cu_seqlens is not device memory"});
  expect_error([&] { run({nullptr, good.sequences, 0}); }, {"cu_seqlens is null"});
  expect_error([&] { run({good.cu_seqlens, 0, 0}); }, {"1 to 65535 sequences, not 0"});
  expect_error([&] { run({good.cu_seqlens, 70000, 0}); }, {"1 to 65535 sequences, not 70000"});
  expect_error([&] { run({good.cu_seqlens, good.sequences, p.c.N + 1}); }, {"max_seqlen", "outside [0,"});
  expect_error([&] { run({good.cu_seqlens, good.sequences, -1}); }, {"max_seqlen = -1"});
  expect_error([&] {
    run({reinterpret_cast<const std::int32_t*>(reinterpret_cast<const char*>(good.cu_seqlens) + 2), good.sequences, 0});
  }, {"not 4-byte aligned"});
  // Two batch elements are not a packing.
  RandomCase two = p.c;
  two.B = 2, two.N = p.c.N / 2;
  fill_inputs(two, rng);
  const DeviceCase batched(two);
  expect_error([&] { attention.forward(batched.q(), batched.k(), batched.v(), good, batched.out()); },
               {"one batch element", "B = 2"});
  DILATRON_CU(cuCtxSynchronize());
  EXPECT_TRUE(all_nan(device.result().out));
  EXPECT_TRUE(all_nan(device.result().lse));
}

// Offsets the host never reads: a sequence whose offsets are out of order or past the rows is attended
// by no kernel, nothing outside the tensors is touched (memcheck, on the emulator) and every other
// sequence is still right. What the bad sequence's rows hold is unspecified, so they are not compared.
TEST_F(GpuVarlen, KernelsSkipASequenceWithBadOffsets) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 2; ++trial) {  // one branch (O written directly) and several (an accumulator)
    PackedCase p = packed_case(rng, trial, {64});
    p.c.config.segments.resize(std::size_t(trial + 1), 24);
    p.c.config.dilations.resize(std::size_t(trial + 1), 2);
    if (p.c.config.mode == Mode::head_groups && p.c.H < trial + 1) p.c.config.mode = Mode::longnet;
    SCOPED_TRACE(fmt::format("trial {}: {} cu_seqlens={}", trial, p.c.describe(), fmt::join(p.cu_seqlens, ",")));
    Reference want = reference(p);
    std::vector<std::int32_t> bad = p.cu_seqlens;
    bad[1] = -5;                        // sequences 0 and 1 out of range: rows [0, cu[2]) unattended
    bad.push_back(bad.back() + 100);  // one more sequence, past the last row
    const DeviceCase device(p.c);
    const DeviceOffsets offsets(bad);
    const TensorView lse = device.lse();
    DilatedAttention attention(p.c.config);
    attention.forward(device.q(), device.k(), device.v(), offsets.packing(std::int64_t(bad.size()) - 1, 0), device.out(),
                      &lse);
    DILATRON_CU(cuCtxSynchronize());
    GpuResult got = device.result();
    const std::int64_t skipped = p.cu_seqlens[2];
    for (std::int64_t i = 0; i < skipped * p.c.H * p.c.D; ++i) got.out[std::size_t(i)] = want.out[std::size_t(i)] = 0;
    for (std::int64_t h = 0; h < p.c.H; ++h) {
      for (std::int64_t n = 0; n < skipped; ++n) got.lse[std::size_t(h * p.c.N + n)] = want.lse[std::size_t(h * p.c.N + n)] = 0;
    }
    expect_forward_close(got, want, p.c.dtype);
  }
}
