// DilatedKVCache on the device (the decode kernels; a prompt from position 0 on the forward's) in
// lockstep with the same cache on the host, which tests/runtime/kv_cache_test.cpp checks against the
// causal forward: every step's O and LSE, after a prompt, token by token and in chunks across segment
// boundaries, with rows reset, forked and rewound, both modes, GQA, float16 and bfloat16. The host side takes the device's rounded inputs in float64.
// Skipped without a GPU; on the emulated device with its hazard checks.
#include <gtest/gtest.h>

#include <dilatron/kv_cache.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/dtype.hpp"
#include "tests/support/device_case.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

class GpuDecode : public GpuTest {};

struct Case {
  Config config;
  std::int64_t heads, kv_heads, dim;
  DType dtype;
};

// The two caches and one step's tensors on both sides.
class Lockstep {
 public:
  explicit Lockstep(const Case& c, std::int64_t batch)
      : c_(c), batch_(batch), host_(c.config, {batch, c.heads, c.kv_heads, c.dim, DType::f64}),
        device_(c.config, {batch, c.heads, c.kv_heads, c.dim, c.dtype, std::numeric_limits<std::int64_t>::max(), true}) {}

  // n new rows per batch row, random; both caches decode them; O and LSE compared.
  void step(std::int64_t n, std::mt19937_64& rng) {
    const auto tensor = [&](std::int64_t heads) { return random_tensor(batch_ * n * heads * c_.dim, c_.dtype, 1.0, rng); };
    const std::vector<std::byte> q = tensor(c_.heads), k = tensor(c_.kv_heads), v = tensor(c_.kv_heads);
    const Shape4 q_shape{batch_, n, c_.heads, c_.dim}, kv_shape{batch_, n, c_.kv_heads, c_.dim};
    // The host: the same rounded values in float64.
    const auto widen = [&](const std::vector<std::byte>& x) {
      std::vector<double> out(x.size() / 2);
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(x.data(), c_.dtype, std::int64_t(i));
      return out;
    };
    std::vector<double> hq = widen(q), hk = widen(k), hv = widen(v), hout(hq.size());
    std::vector<float> hlse(std::size_t(batch_ * c_.heads * n));
    const TensorView hl = TensorView::contiguous(hlse.data(), DType::f32, {batch_, c_.heads, n, 1});
    host_.decode(TensorView::contiguous(hq.data(), DType::f64, q_shape), TensorView::contiguous(hk.data(), DType::f64, kv_shape),
                 TensorView::contiguous(hv.data(), DType::f64, kv_shape), TensorView::contiguous(hout.data(), DType::f64, q_shape),
                 &hl);
    // The device, outputs poisoned first.
    DeviceBuffer dq(q.size()), dk(k.size()), dv(v.size()), dout(q.size()), dlse(hlse.size() * 4);
    dq.upload(q.data());
    dk.upload(k.data());
    dv.upload(v.data());
    const std::vector<std::uint16_t> poison(q.size() / 2, DeviceCase::kPoison);
    dout.upload(poison.data());
    const std::vector<float> nan(hlse.size(), NAN);
    dlse.upload(nan.data());
    const TensorView l = TensorView::contiguous(dlse.get(), DType::f32, {batch_, c_.heads, n, 1});
    device_.decode(TensorView::contiguous(dq.get(), c_.dtype, q_shape), TensorView::contiguous(dk.get(), c_.dtype, kv_shape),
                   TensorView::contiguous(dv.get(), c_.dtype, kv_shape), TensorView::contiguous(dout.get(), c_.dtype, q_shape),
                   &l);
    DILATRON_CU(cuCtxSynchronize());
    std::vector<std::uint16_t> raw(q.size() / 2);
    dout.download(raw.data());
    std::vector<float> lse(hlse.size());
    dlse.download(lse.data());
    std::vector<double> got(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) got[i] = load_element(raw.data(), c_.dtype, std::int64_t(i));
    EXPECT_LE(l2_relative(got, hout), c_.dtype == DType::bf16 ? 1e-2 : 3e-3);
    for (std::size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(hlse[i])) ASSERT_EQ(lse[i], hlse[i]) << "lse " << i;
      else ASSERT_NEAR(lse[i], hlse[i], 2e-3 * std::max(1.0f, std::fabs(hlse[i]))) << "lse " << i;
    }
    for (std::int64_t b = 0; b < batch_; ++b) ASSERT_EQ(device_.position(b), host_.position(b));
  }

  template <class F>
  void both(F f) {
    f(host_);
    f(device_);
  }
  DilatedKVCache& device() { return device_; }
  DilatedKVCache& host() { return host_; }

 private:
  Case c_;
  std::int64_t batch_;
  DilatedKVCache host_, device_;
};

const std::vector<Case> kCases = {
    {make_config({16, 32, 64}, {1, 2, 4}, Mode::longnet, true), 4, 2, 64, DType::bf16},
    {make_config({24, 40}, {3, 5}, Mode::longnet, true), 2, 2, 128, DType::f16},
    {make_config({20, 16, 36}, {1, 3, 2}, Mode::head_groups, true), 3, 1, 64, DType::f16},
    // Head dim 32: no forward kernel, so a prompt from position 0 takes the decode kernels too.
    {make_config({8, 24}, {1, 2}, Mode::longnet, true), 2, 1, 32, DType::bf16},
};

}  // namespace

TEST_F(GpuDecode, PromptThenTokensEqualTheHostCache) {
  std::mt19937_64 rng(41);
  for (std::size_t i = 0; i < kCases.size(); ++i) {
    SCOPED_TRACE(i);
    Lockstep s(kCases[i], 2);
    EXPECT_EQ(s.device().bytes(), s.host().bytes() / 8 * dtype_size(kCases[i].dtype)) << "the same blocks, 16-bit";
    s.step(21, rng);  // a prompt crossing segment boundaries
    for (int t = 0; t < gpu_or_emulated(60, 25); ++t) s.step(1, rng);
  }
}

TEST_F(GpuDecode, ChunksResetForkAndRewindEqualTheHostCache) {
  std::mt19937_64 rng(42);
  Lockstep s(kCases[0], 2);
  for (const std::int64_t n : {5, 13, 1, 30, 2}) s.step(n, rng);  // 51 rows: across 16-, 32- and 64-row segments
  s.both([](DilatedKVCache& c) { c.reset(1); });
  s.step(3, rng);
  s.both([](DilatedKVCache& c) { c.fork(0, 1); });
  s.step(4, rng);
  s.both([](DilatedKVCache& c) { c.rewind(0, c.position(0) - 2); });
  s.step(2, rng);
  s.both([](DilatedKVCache& c) { c.reset_all(); });
  s.step(7, rng);
}

TEST_F(GpuDecode, RefusesWhatTheKernelsCannotTake) {
  const Config c = make_config({16}, {1}, Mode::longnet, true);
  expect_error([&] { DilatedKVCache(c, {1, 2, 2, 64, DType::f32, 100, true}); }, {"float16 or bfloat16, not f32"});
  expect_error([&] { DilatedKVCache(c, {1, 2, 2, 72, DType::bf16, 100, true}); }, {"head_dim = 72"});
  expect_error([&] { DilatedKVCache(c, {70000, 2, 2, 64, DType::bf16, 100, true}); }, {"at most 65535 batch rows"});
  DilatedKVCache cache(c, {1, 2, 2, 64, DType::bf16, 100, true});
  DeviceBuffer q(2 * 64 * 2), out(2 * 64 * 2);
  const TensorView qv = TensorView::contiguous(q.get(), DType::bf16, {1, 1, 2, 64});
  expect_error([&] { cache.decode(qv, qv, qv, TensorView::contiguous(out.get(), DType::f16, {1, 1, 2, 64})); },
               {"out is f16; on the GPU it is the cache's bf16"});
  expect_error([&] { cache.decode(qv, qv, qv, qv); }, {"out overlaps q"});
  EXPECT_EQ(cache.position(0), 0);
}
