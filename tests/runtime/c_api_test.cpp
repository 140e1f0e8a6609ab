// The C ABI: status codes, per-thread messages, and the reference through it.
#include <gtest/gtest.h>

#include <dilatron/c_api.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>

#include "runtime/driver.hpp"
#include "tests/support/finite_differences.hpp"
#include "tests/support/random_case.hpp"

using namespace dilatron::test;

namespace {

dilatron_tensor tensor(void* data, dilatron_dtype dtype, std::int64_t b, std::int64_t n, std::int64_t h, std::int64_t d) {
  return {data, dtype, {b, n, h, d}, {n * h * d, h * d, d, 1}};
}

}  // namespace

TEST(CApi, BadConfigurationsReturnInvalidWithAMessage) {
  const std::int64_t w[] = {8, 0}, r[] = {1, 1};
  dilatron_attention* a = nullptr;
  EXPECT_EQ(dilatron_create(w, r, 2, DILATRON_LONGNET, 0, 0.0, &a), DILATRON_ERROR_INVALID);
  EXPECT_EQ(a, nullptr);
  EXPECT_NE(std::string(dilatron_last_error()).find("segments[1] = 0"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(dilatron_create(w, r, 1, 7, 0, 0.0, &a), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("mode code 7"), std::string::npos);
  std::string other_thread;
  std::thread([&] { other_thread = dilatron_last_error(); }).join();
  EXPECT_EQ(other_thread, "") << "messages are per thread";
  EXPECT_EQ(std::string(dilatron_version()), "0.1.0");
}

TEST(CApi, OnlyAZeroScaleMeansTheDefault) {
  const std::int64_t w[] = {8}, r[] = {1};
  const double inf = std::numeric_limits<double>::infinity();
  for (const double scale : {std::nan(""), -inf, inf, -0.5, -1e-300}) {
    SCOPED_TRACE(scale);
    dilatron_attention* a = nullptr;
    EXPECT_EQ(dilatron_create(w, r, 1, DILATRON_LONGNET, 0, scale, &a), DILATRON_ERROR_INVALID);
    EXPECT_EQ(a, nullptr);
    EXPECT_NE(std::string(dilatron_last_error()).find("scale"), std::string::npos) << dilatron_last_error();
  }
  for (const double scale : {0.0, 0.125}) {
    dilatron_attention* a = nullptr;
    ASSERT_EQ(dilatron_create(w, r, 1, DILATRON_LONGNET, 0, scale, &a), DILATRON_OK) << dilatron_last_error();
    dilatron_destroy(a);
  }
}

TEST(CApi, BranchCountsAndValuesBelowOneAreRefused) {
  const std::int64_t w[] = {8, 16}, r[] = {1, -4};
  dilatron_attention* a = nullptr;
  for (const std::int32_t branches : {0, -1}) {
    EXPECT_EQ(dilatron_create(w, r, branches, DILATRON_LONGNET, 0, 0.0, &a), DILATRON_ERROR_INVALID);
    EXPECT_NE(std::string(dilatron_last_error()).find("branches"), std::string::npos) << dilatron_last_error();
  }
  EXPECT_EQ(dilatron_create(w, r, 2, DILATRON_LONGNET, 0, 0.0, &a), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("dilations[1] = -4"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(a, nullptr);
}

TEST(CApi, ReferenceThroughTheAbiMatchesTheDenseDefinition) {
  std::mt19937_64 rng(3);
  RandomCase c;
  c.B = 1, c.N = 29, c.H = 4, c.Hkv = 2, c.D = 8;
  c.config.segments = {8, 29};
  c.config.dilations = {1, 3};
  c.config.causal = true;
  fill_inputs(c, rng);
  dilatron_attention* a = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0.0, &a),
            DILATRON_OK);
  std::vector<float> out(std::size_t(c.N * c.H * c.D)), lse(std::size_t(c.H * c.N));
  const auto q = tensor(c.q.data(), DILATRON_F32, 1, c.N, c.H, c.D), k = tensor(c.k.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D),
             v = tensor(c.v.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D), o = tensor(out.data(), DILATRON_F32, 1, c.N, c.H, c.D),
             l = tensor(lse.data(), DILATRON_F32, 1, c.H, c.N, 1);
  ASSERT_EQ(dilatron_reference_forward(a, &q, &k, &v, &o, &l), DILATRON_OK) << dilatron_last_error();
  const DenseResult want = dense_attention(c.config, c.dense());
  EXPECT_LE(relative_error({out.begin(), out.end()}, want.out), 1e-5);
  EXPECT_LE(relative_error({lse.begin(), lse.end()}, want.lse, 1.0), 1e-5);
  for (int ranks : {2, 5}) {
    std::fill(out.begin(), out.end(), NAN);
    ASSERT_EQ(dilatron_ring_reference_forward(a, ranks, &q, &k, &v, &o, &l), DILATRON_OK) << dilatron_last_error();
    EXPECT_LE(relative_error({out.begin(), out.end()}, want.out), 1e-5) << ranks << " ranks";
    EXPECT_LE(relative_error({lse.begin(), lse.end()}, want.lse, 1.0), 1e-5) << ranks << " ranks";
  }
  EXPECT_EQ(dilatron_ring_reference_forward(a, 30, &q, &k, &v, &o, &l), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("30"), std::string::npos) << dilatron_last_error();

  // The device ring's entry points refuse what cannot work with a status and a message.
  dilatron_ring* ring = nullptr;
  EXPECT_NE(dilatron_ring_from_nccl(nullptr, &ring), DILATRON_OK);
  EXPECT_EQ(ring, nullptr);
  EXPECT_FALSE(std::string(dilatron_last_error()).empty());
  if (!std::getenv("RANK") && !std::getenv("OMPI_COMM_WORLD_RANK") && !std::getenv("PMI_RANK") && !std::getenv("SLURM_PROCID")) {
    EXPECT_NE(dilatron_ring_from_launcher("/nonexistent/dilatron.id", &ring), DILATRON_OK);
    EXPECT_NE(std::string(dilatron_last_error()).find("OMPI_COMM_WORLD_RANK"), std::string::npos) << dilatron_last_error();
  }
  EXPECT_EQ(dilatron_ring_forward(a, nullptr, c.N, &q, &k, &v, &o, &l, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("NULL"), std::string::npos);
  EXPECT_EQ(dilatron_ring_backward(a, nullptr, c.N, &q, &k, &v, &o, &o, &k, &v, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("dilatron_ring_backward: NULL"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(dilatron_ring_backward_with_output(a, nullptr, c.N, &q, &k, &v, &o, &l, &o, &o, &k, &v, nullptr),
            DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("dilatron_ring_backward_with_output: NULL"), std::string::npos)
      << dilatron_last_error();
  const dilatron_exchange_fn never = [](void*, int32_t, const dilatron_message*, int32_t, const dilatron_message*,
                                        int32_t, char*, int64_t) { return int32_t(1); };
  ASSERT_EQ(dilatron_ring_from_callback(0, 1, never, nullptr, &ring), DILATRON_OK) << dilatron_last_error();
  EXPECT_EQ(dilatron_ring_backward_with_output(a, ring, c.N, &q, &k, &v, &o, nullptr, &o, &o, &k, &v, nullptr),
            DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("lse is NULL"), std::string::npos) << dilatron_last_error();
  dilatron_ring_destroy(ring);
  dilatron_ring_destroy(nullptr);

  if (dilatron::driver::probe().devices.empty()) {
    EXPECT_EQ(dilatron_forward(a, &q, &k, &v, &o, &l, nullptr), DILATRON_ERROR_INVALID)
        << "float32 tensors are refused before any driver call";
    std::vector<std::vector<std::uint16_t>> half(4, std::vector<std::uint16_t>(std::size_t(c.N * c.H * 64)));
    dilatron_tensor h[4];
    for (int i = 0; i < 4; ++i) h[i] = tensor(half[std::size_t(i)].data(), DILATRON_F16, 1, c.N, c.H, 64);
    EXPECT_EQ(dilatron_forward(a, &h[0], &h[1], &h[2], &h[3], nullptr, nullptr), DILATRON_ERROR_CUDA);
    EXPECT_NE(std::string(dilatron_last_error()).find("libcuda.so.1"), std::string::npos) << dilatron_last_error();
  }
  EXPECT_EQ(dilatron_forward(a, nullptr, &k, &v, &o, nullptr, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("q is NULL"), std::string::npos);
  dilatron_destroy(a);
}

// The packed reference through the ABI: each sequence equals the reference on it alone; bad offsets are a
// status and a message with nothing written.
TEST(CApi, PackedReferenceThroughTheAbi) {
  std::mt19937_64 rng(4);
  RandomCase c;
  c.B = 1, c.N = 23, c.H = 2, c.Hkv = 2, c.D = 8;
  c.config.segments = {4, 8};
  c.config.dilations = {1, 2};
  fill_inputs(c, rng);
  dilatron_attention* a = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 0, 0.0, &a),
            DILATRON_OK);
  std::vector<float> out(std::size_t(c.N * c.H * c.D), NAN);
  const auto q = tensor(c.q.data(), DILATRON_F32, 1, c.N, c.H, c.D), k = tensor(c.k.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D),
             v = tensor(c.v.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D), o = tensor(out.data(), DILATRON_F32, 1, c.N, c.H, c.D);
  std::int32_t cu[] = {0, 9, 9, 23};
  dilatron_packing packing{cu, 3, 0};
  ASSERT_EQ(dilatron_reference_forward_varlen(a, &q, &k, &v, &packing, &o, nullptr), DILATRON_OK) << dilatron_last_error();
  for (const auto& [begin, end] : {std::pair{0, 9}, std::pair{9, 23}}) {
    RandomCase alone = c;
    alone.N = end - begin;
    const std::size_t row = std::size_t(c.H * c.D) * sizeof(float), kv_row = std::size_t(c.Hkv * c.D) * sizeof(float);
    alone.q.assign(c.q.begin() + std::ptrdiff_t(begin * row), c.q.begin() + std::ptrdiff_t(end * row));
    alone.k.assign(c.k.begin() + std::ptrdiff_t(begin * kv_row), c.k.begin() + std::ptrdiff_t(end * kv_row));
    alone.v.assign(c.v.begin() + std::ptrdiff_t(begin * kv_row), c.v.begin() + std::ptrdiff_t(end * kv_row));
    const DenseResult want = dense_attention(alone.config, alone.dense());
    const auto first = out.begin() + begin * c.H * c.D, last = out.begin() + end * c.H * c.D;
    EXPECT_LE(relative_error({first, last}, want.out), 1e-5) << "sequence at " << begin;
  }
  std::fill(out.begin(), out.end(), NAN);
  cu[2] = 30;
  EXPECT_EQ(dilatron_reference_forward_varlen(a, &q, &k, &v, &packing, &o, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("cu_seqlens[3] = 23 is below cu_seqlens[2] = 30"), std::string::npos)
      << dilatron_last_error();
  packing.sequences = 0;
  EXPECT_EQ(dilatron_reference_forward_varlen(a, &q, &k, &v, &packing, &o, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("1 to 65535 sequences, not 0"), std::string::npos);
  EXPECT_EQ(dilatron_reference_forward_varlen(a, &q, &k, &v, nullptr, &o, nullptr), DILATRON_ERROR_INVALID);
  for (float x : out) ASSERT_TRUE(std::isnan(x)) << "nothing written";
  dilatron_destroy(a);
}

// The KV cache through the ABI: a prompt and then single tokens equal the reference forward's last rows.
TEST(CApi, KVCacheDecodesAsTheCausalForward) {
  std::mt19937_64 rng(6);
  RandomCase c;
  c.B = 1, c.N = 21, c.H = 4, c.Hkv = 2, c.D = 8, c.dtype = dilatron::DType::f64;
  c.config.segments = {4, 16};
  c.config.dilations = {1, 3};
  c.config.causal = true;
  fill_inputs(c, rng);
  dilatron_attention* a = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 1, 0.0, &a),
            DILATRON_OK);
  std::vector<double> want(std::size_t(c.N * c.H * c.D));
  const auto q = tensor(c.q.data(), DILATRON_F64, 1, c.N, c.H, c.D), k = tensor(c.k.data(), DILATRON_F64, 1, c.N, c.Hkv, c.D),
             v = tensor(c.v.data(), DILATRON_F64, 1, c.N, c.Hkv, c.D), o = tensor(want.data(), DILATRON_F64, 1, c.N, c.H, c.D);
  ASSERT_EQ(dilatron_reference_forward(a, &q, &k, &v, &o, nullptr), DILATRON_OK) << dilatron_last_error();

  dilatron_kv_cache* cache = nullptr;
  ASSERT_EQ(dilatron_kv_cache_create(a, 1, c.H, c.Hkv, c.D, DILATRON_F64, 0, 0, &cache), DILATRON_OK) << dilatron_last_error();
  std::vector<double> got(want.size(), NAN);
  // Rows [from, from + n) of the sequence as a [1, n, heads, D] view (row stride of the whole tensor).
  const auto rows = [&](const dilatron_tensor& t, std::int64_t from, std::int64_t n) {
    dilatron_tensor r = t;
    r.data = static_cast<double*>(t.data) + from * t.strides[1];
    r.shape[1] = n;
    return r;
  };
  const dilatron_tensor out = tensor(got.data(), DILATRON_F64, 1, c.N, c.H, c.D);
  for (std::int64_t at = 0, n = 9; at < c.N; at += n, n = 1) {
    const dilatron_tensor qs = rows(q, at, n), ks = rows(k, at, n), vs = rows(v, at, n), os = rows(out, at, n);
    ASSERT_EQ(dilatron_kv_cache_decode(cache, &qs, &ks, &vs, &os, nullptr, nullptr), DILATRON_OK) << dilatron_last_error();
  }
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-12) << i;
  std::int64_t position = 0, bytes = 0, per_row = 0;
  ASSERT_EQ(dilatron_kv_cache_position(cache, 0, &position), DILATRON_OK);
  EXPECT_EQ(position, c.N);
  ASSERT_EQ(dilatron_kv_cache_bytes(cache, &bytes), DILATRON_OK);
  ASSERT_EQ(dilatron_kv_cache_bytes_per_row(a, c.H, c.Hkv, c.D, DILATRON_F64, &per_row), DILATRON_OK);
  EXPECT_EQ(bytes, per_row);
  EXPECT_EQ(dilatron_kv_cache_rewind(cache, 0, 3, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("needs rows before 20"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(dilatron_kv_cache_fork(cache, 0, 1, nullptr), DILATRON_ERROR_INVALID);
  EXPECT_EQ(dilatron_kv_cache_reset(cache, -1, nullptr), DILATRON_OK);
  ASSERT_EQ(dilatron_kv_cache_position(cache, 0, &position), DILATRON_OK);
  EXPECT_EQ(position, 0);
  dilatron_kv_cache_destroy(cache);
  EXPECT_EQ(dilatron_kv_cache_decode(nullptr, &q, &k, &v, &o, nullptr, nullptr), DILATRON_ERROR_INVALID);
  dilatron_destroy(a);

  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 0, 0.0, &a),
            DILATRON_OK);
  EXPECT_EQ(dilatron_kv_cache_create(a, 1, c.H, c.Hkv, c.D, DILATRON_F64, 0, 0, &cache), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("must be causal"), std::string::npos) << dilatron_last_error();
  dilatron_destroy(a);
}

TEST(CApi, ReferenceBackwardThroughTheAbiEqualsFiniteDifferences) {
  std::mt19937_64 rng(4);
  RandomCase c;
  c.B = 1, c.N = 13, c.H = 2, c.Hkv = 1, c.D = 4;
  c.config.segments = {4, 13};
  c.config.dilations = {1, 3};
  fill_inputs(c, rng);
  std::vector<std::byte> g = random_tensor(c.N * c.H * c.D, c.dtype, 1.0, rng);
  dilatron_attention* a = nullptr;
  ASSERT_EQ(dilatron_create(c.config.segments.data(), c.config.dilations.data(), 2, DILATRON_LONGNET, 0, 0.0, &a),
            DILATRON_OK);
  std::vector<float> dq(std::size_t(c.N * c.H * c.D)), dk(std::size_t(c.N * c.Hkv * c.D)), dv(dk.size());
  const auto q = tensor(c.q.data(), DILATRON_F32, 1, c.N, c.H, c.D), k = tensor(c.k.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D),
             v = tensor(c.v.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D), dout = tensor(g.data(), DILATRON_F32, 1, c.N, c.H, c.D),
             dq_t = tensor(dq.data(), DILATRON_F32, 1, c.N, c.H, c.D), dk_t = tensor(dk.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D),
             dv_t = tensor(dv.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D);
  ASSERT_EQ(dilatron_reference_backward(a, &q, &k, &v, &dout, &dq_t, &dk_t, &dv_t), DILATRON_OK) << dilatron_last_error();
  std::vector<double> upstream(g.size() / 4);
  for (std::size_t i = 0; i < upstream.size(); ++i) upstream[i] = dilatron::load_element(g.data(), dilatron::DType::f32, std::int64_t(i));
  EXPECT_LE(relative_error({dq.begin(), dq.end()}, finite_differences(c.config, c.dense(), &Dense::q, upstream), kFiniteDifferenceFloor), 1e-4);
  EXPECT_LE(relative_error({dk.begin(), dk.end()}, finite_differences(c.config, c.dense(), &Dense::k, upstream), kFiniteDifferenceFloor), 1e-4);
  EXPECT_LE(relative_error({dv.begin(), dv.end()}, finite_differences(c.config, c.dense(), &Dense::v, upstream), kFiniteDifferenceFloor), 1e-4);
  const auto wrong = tensor(dq.data(), DILATRON_F32, 1, c.N, c.Hkv, c.D);
  EXPECT_EQ(dilatron_reference_backward(a, &q, &k, &v, &dout, &wrong, &dk_t, &dv_t), DILATRON_ERROR_INVALID);
  EXPECT_NE(std::string(dilatron_last_error()).find("dq shape"), std::string::npos) << dilatron_last_error();
  EXPECT_EQ(dilatron_backward(nullptr, &q, &k, &v, &q, &q, &dout, &dq_t, &dk_t, &dv_t, nullptr), DILATRON_ERROR_INVALID);
  dilatron_destroy(a);
}
