// The in-process ring (all ranks stepped together on a bounded pool of threads) against the ring as a
// distributed job runs it (each rank on its own thread over a transport), against one device in
// float64, and at rank counts far beyond the machine's threads.
#include <gtest/gtest.h>

#include <dilatron/reference.hpp>
#include <dilatron/ring.hpp>

#include <filesystem>
#include <random>
#include <thread>

#include "runtime/ring/host_communicator.hpp"
#include "runtime/ring/partition.hpp"
#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

struct Results {
  std::vector<double> out, lse, dq, dk, dv;
};

std::vector<double> decode(const std::vector<std::byte>& raw, DType dtype) {
  std::vector<double> out(raw.size() / dtype_size(dtype));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_element(raw.data(), dtype, std::int64_t(i));
  return out;
}

struct Buffers {
  std::vector<std::byte> out, lse, dq, dk, dv;
  TensorView out_v, lse_v, dq_v, dk_v, dv_v;
  Buffers(RandomCase& c)
      : out(c.q.size()), lse(std::size_t(c.B * c.H * c.N) * 4), dq(c.q.size()), dk(c.k.size()), dv(c.k.size()) {
    out_v = TensorView::contiguous(out.data(), c.dtype, c.q_shape());
    lse_v = TensorView::contiguous(lse.data(), DType::f32, {c.B, c.H, c.N, 1});
    dq_v = TensorView::contiguous(dq.data(), c.dtype, c.q_shape());
    dk_v = TensorView::contiguous(dk.data(), c.dtype, c.kv_shape());
    dv_v = TensorView::contiguous(dv.data(), c.dtype, c.kv_shape());
  }
  Results results(DType dtype) const {
    return {decode(out, dtype), decode(lse, DType::f32), decode(dq, dtype), decode(dk, dtype), decode(dv, dtype)};
  }
};

// ranks 0: one device (reference_forward/backward); otherwise the in-process ring, the backward
// reporting to `progress`.
Results run(RandomCase& c, const TensorView& dout, int ranks, const RingProgress& progress = {}) {
  Buffers b(c);
  if (ranks == 0) {
    reference_forward(c.config, c.q_view(), c.k_view(), c.v_view(), b.out_v, &b.lse_v);
    reference_backward(c.config, c.q_view(), c.k_view(), c.v_view(), dout, b.dq_v, b.dk_v, b.dv_v);
  } else {
    ring_reference_forward(c.config, ranks, c.q_view(), c.k_view(), c.v_view(), b.out_v, &b.lse_v);
    ring_reference_backward(c.config, ranks, c.q_view(), c.k_view(), c.v_view(), dout, b.dq_v, b.dk_v, b.dv_v, progress);
  }
  return b.results(c.dtype);
}

// Every rank on its own thread with its own RingDilatedAttention over the Host transport.
Results run_threads(RandomCase& c, const TensorView& dout, int ranks) {
  Buffers b(c);
  ring::HostGroup group(ranks, std::chrono::seconds(60));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < ranks; ++rank) {
    threads.emplace_back([&, rank, comm = group.rank(rank)] {
      const ring::RowRange rows = ring::shard(c.N, ranks, rank);
      const auto shard = [&](const TensorView& t, int dim = 1) { return ring::rows_of(t, rows, dim); };
      RingDilatedAttention attention(c.config, *comm);
      const TensorView lse = shard(b.lse_v, 2);
      attention.reference_forward(c.N, shard(c.q_view()), shard(c.k_view()), shard(c.v_view()), shard(b.out_v), &lse);
      attention.reference_backward(c.N, shard(c.q_view()), shard(c.k_view()), shard(c.v_view()), shard(dout),
                                   shard(b.dq_v), shard(b.dk_v), shard(b.dv_v));
    });
  }
  for (std::thread& t : threads) t.join();
  return b.results(c.dtype);
}

void expect_close(const Results& got, const Results& want, double tolerance) {
  EXPECT_LE(relative_error(got.out, want.out), tolerance);
  EXPECT_LE(relative_error(got.lse, want.lse), tolerance);
  EXPECT_LE(relative_error(got.dq, want.dq), tolerance);
  EXPECT_LE(relative_error(got.dk, want.dk), tolerance);
  EXPECT_LE(relative_error(got.dv, want.dv), tolerance);
}

}  // namespace

TEST(RingLockstep, IsBlockForBlockTheRingEachRankRunsOverATransport) {
  std::mt19937_64 rng(20261203);
  for (int trial = 0; trial < 12; ++trial) {
    RandomCase c = random_case(rng);
    const std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    const TensorView g = TensorView::contiguous(const_cast<std::byte*>(dout.data()), c.dtype, c.q_shape());
    for (int ranks = 2; ranks <= std::min<std::int64_t>(4, c.N); ++ranks) {
      SCOPED_TRACE(fmt::format("trial {} ranks {}: {}", trial, ranks, c.describe()));
      const Results a = run(c, g, ranks), b = run_threads(c, g, ranks);
      EXPECT_EQ(a.out, b.out);
      EXPECT_EQ(a.lse, b.lse);
      EXPECT_EQ(a.dq, b.dq);
      EXPECT_EQ(a.dk, b.dk);
      EXPECT_EQ(a.dv, b.dv);
    }
  }
}

// Float64 inputs: the travelling dK and dV are float64 too, so P ranks equal one to rounding, also
// where float32 would overflow.
TEST(RingLockstep, Float64RanksEqualOneDeviceTo1e12) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 8; ++trial) {
    RandomCase c = random_case(rng);
    c.dtype = DType::f64;
    fill_inputs(c, rng, 1.5);
    const double big = trial % 2 ? 1e44 : 1.0;  // dO near 1e44: dK and dV far beyond float32
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, DType::f64, big, rng);
    const TensorView g = TensorView::contiguous(dout.data(), DType::f64, c.q_shape());
    const Results want = run(c, g, 0);
    for (int ranks = 2; ranks <= std::min<std::int64_t>(5, c.N); ++ranks) {
      SCOPED_TRACE(fmt::format("trial {} ranks {}: {}", trial, ranks, c.describe()));
      const Results got = run(c, g, ranks);
      for (double x : got.dk) ASSERT_TRUE(std::isfinite(x));
      expect_close(got, want, 1e-12);
    }
  }
}

// Far more ranks than threads: 512 rows, one segment spanning all 128 ranks (each rank needs every
// other's rows). The ranks share a pool of the machine's threads, and report their steps.
TEST(RingLockstep, ManyRanksShareABoundedPoolAndReportProgress) {
  std::mt19937_64 rng(11);
  RandomCase c;
  c.N = 512;
  c.dtype = DType::f64;
  c.config.segments = {512};
  c.config.dilations = {1};
  fill_inputs(c, rng);
  std::vector<std::byte> dout = random_tensor(c.N, DType::f64, 1.0, rng);
  const TensorView g = TensorView::contiguous(dout.data(), DType::f64, c.q_shape());
  const auto threads_now = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/task"), std::filesystem::directory_iterator{});
  };
  const std::int64_t before = threads_now();
  std::int64_t most_threads = 0, last_done = 0, calls = 0, total = 0;
  const Results got = run(c, g, 128, [&](std::int64_t done, std::int64_t all) {
    most_threads = std::max<std::int64_t>(most_threads, threads_now());
    EXPECT_GE(done, last_done);
    last_done = done;
    total = all;
    ++calls;
  });
  expect_close(got, run(c, g, 0), 1e-12);
  EXPECT_GT(calls, 100) << "a step at a time";
  EXPECT_EQ(last_done, total);
  EXPECT_LE(most_threads - before, std::int64_t(std::max(1u, std::thread::hardware_concurrency())))
      << "no thread per rank";
}
