// The ring on the Host transport: split across P ranks, exchanging only spanning segments' selected
// rows, it computes what one device computes (checked against the independent dense definition), and
// bad input, a failing transport or a stalled peer end in a clear error, never a hang.
#include <gtest/gtest.h>

#include <dilatron/error.hpp>
#include <dilatron/ring.hpp>

#include <chrono>
#include <random>
#include <thread>

#include "runtime/ring/host_communicator.hpp"
#include "runtime/ring/host_executor.hpp"
#include "tests/support/random_case.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

struct Output {
  std::vector<float> out, lse;
};

Output run_ring(RandomCase& c, int ranks) {
  Output o{std::vector<float>(std::size_t(c.B * c.N * c.H * c.D), NAN), std::vector<float>(std::size_t(c.B * c.H * c.N), NAN)};
  const auto out = TensorView::contiguous(o.out.data(), DType::f32, c.q_shape());
  const auto lse = TensorView::contiguous(o.lse.data(), DType::f32, {c.B, c.H, c.N, 1});
  ring_reference_forward(c.config, ranks, c.q_view(), c.k_view(), c.v_view(), out, &lse);
  return o;
}

std::vector<double> widen(const std::vector<float>& x) { return {x.begin(), x.end()}; }

}  // namespace

TEST(RingHost, EqualsTheDefinitionForEveryRankCount) {
  std::mt19937_64 rng(20261123);
  int spanning = 0, uneven = 0, causal = 0, head_groups = 0, gqa = 0, small_w = 0, large_w = 0;
  for (int trial = 0; trial < 120; ++trial) {
    RandomCase c = random_case(rng);
    const DenseResult want = dense_attention(c.config, c.dense());
    for (int ranks = 1; ranks <= std::min<std::int64_t>(8, c.N); ++ranks) {
      SCOPED_TRACE(fmt::format("trial {} ranks {}: {}", trial, ranks, c.describe()));
      const Output got = run_ring(c, ranks);
      ASSERT_LE(relative_error(widen(got.out), want.out), 1e-5);
      ASSERT_LE(relative_error(widen(got.lse), want.lse, 1.0), 1e-5);
      uneven += c.N % ranks != 0;
      for (std::int64_t w : c.config.segments) {
        const std::int64_t per_rank = c.N / ranks;
        spanning += ranks > 1 && w > per_rank;
        small_w += w < per_rank;
        large_w += ranks > 1 && w >= c.N;
      }
    }
    causal += c.config.causal;
    head_groups += c.config.mode == Mode::head_groups;
    gqa += c.Hkv < c.H;
  }
  // The corners reached, so a weakened generator fails loudly.
  for (int tally : {spanning, uneven, causal, head_groups, gqa, small_w, large_w}) EXPECT_GE(tally, 15);
}

TEST(RingHost, LongNetScheduleOnALongerSequence) {
  std::mt19937_64 rng(9);
  RandomCase c;
  c.B = 2, c.N = 389, c.H = 8, c.Hkv = 2, c.D = 8, c.dtype = DType::bf16;
  c.config.segments = {32, 64, 128, 256, 512};  // 512 > N: one partial segment spanning every rank
  c.config.dilations = {1, 2, 4, 6, 12};
  for (bool is_causal : {false, true}) {
    c.config.causal = is_causal;
    fill_inputs(c, rng);
    const DenseResult want = dense_attention(c.config, c.dense());
    for (int ranks : {3, 7}) {
      SCOPED_TRACE(fmt::format("causal {} ranks {}", is_causal, ranks));
      const Output got = run_ring(c, ranks);
      EXPECT_LE(relative_error(widen(got.out), want.out), 1e-5);
      EXPECT_LE(relative_error(widen(got.lse), want.lse, 1.0), 1e-5);
    }
  }
}

TEST(RingHost, BadRankCountsAreClearErrorsAndTouchNothing) {
  std::mt19937_64 rng(4);
  RandomCase c = random_case(rng);
  c.config.dilations.back() = std::max<std::int64_t>(1, c.config.dilations.back());
  for (int ranks : {0, -2, int(c.N) + 1}) {
    std::vector<float> out(std::size_t(c.B * c.N * c.H * c.D), 42.0f);
    try {
      ring_reference_forward(c.config, ranks, c.q_view(), c.k_view(), c.v_view(),
                             TensorView::contiguous(out.data(), DType::f32, c.q_shape()));
      ADD_FAILURE() << "ranks " << ranks << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(ranks)), std::string::npos) << e.what();
    }
    for (float x : out) ASSERT_EQ(x, 42.0f);
  }
}

namespace {

// A transport that breaks in one step on one rank.
class Failing final : public ring::Communicator {
 public:
  Failing(std::unique_ptr<ring::Communicator> inner, int fail_step) : inner_(std::move(inner)), fail_step_(fail_step) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void exchange(int step, std::span<const ring::Message> sends, std::span<const ring::Message> receives) override {
    if (step == fail_step_) throw Error(fmt::format("injected transport failure in step {}", step));
    inner_->exchange(step, sends, receives);
  }
  void abort(const std::string& reason) override { inner_->abort(reason); }

 private:
  std::unique_ptr<ring::Communicator> inner_;
  int fail_step_;
};

// Runs every rank of a 4-rank ring of one spanning segment in its own thread; rank `odd_one` gets
// `make_odd` (or does not run at all when it returns null). Returns each rank's error text.
std::vector<std::string> run_four(ring::HostGroup& group, int odd_one,
                                  const std::function<std::unique_ptr<ring::Communicator>(std::unique_ptr<ring::Communicator>)>& make_odd) {
  constexpr std::int64_t N = 64, H = 2, D = 4;
  Config config;
  config.segments = {N};
  config.dilations = {2};
  std::mt19937_64 rng(8);
  const auto q = random_tensor(N * H * D, DType::f32, 1.0, rng), k = random_tensor(N * H * D, DType::f32, 1.0, rng);
  std::vector<float> out(std::size_t(N * H * D));
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 4; ++rank) {
    std::unique_ptr<ring::Communicator> comm = group.rank(rank);
    if (rank == odd_one && !(comm = make_odd(std::move(comm)))) continue;
    threads.emplace_back([&, rank, comm = std::move(comm)]() mutable {
      const ring::RowRange rows = ring::shard(N, 4, rank);
      auto shard = [&](const void* data) {
        return TensorView::contiguous(const_cast<std::byte*>(static_cast<const std::byte*>(data)) + rows.begin * H * D * 4,
                                      DType::f32, {1, rows.size(), H, D});
      };
      try {
        RingDilatedAttention(config, *comm).reference_forward(N, shard(q.data()), shard(k.data()), shard(k.data()),
                                                              shard(out.data()));
      } catch (const Error& e) {
        errors[std::size_t(rank)] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

}  // namespace

TEST(RingHost, AFailingTransportEndsEveryRankWithAClearError) {
  ring::HostGroup group(4, std::chrono::seconds(60));
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_four(group, 2, [](auto comm) { return std::make_unique<Failing>(std::move(comm), 1); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10)) << "peers stopped at once, not at the timeout";
  EXPECT_NE(errors[2].find("injected transport failure in step 1"), std::string::npos) << errors[2];
  int told = 0;
  for (int rank : {0, 1, 3}) told += errors[std::size_t(rank)].find("rank 2 failed") != std::string::npos;
  EXPECT_GE(told, 1) << "the ranks waiting for rank 2 learn why: " << errors[0] << " | " << errors[1] << " | " << errors[3];
}

TEST(RingHost, AStalledPeerIsATimeoutNamingStepAndPeer) {
  ring::HostGroup group(4, std::chrono::milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_four(group, 1, [](auto) { return std::unique_ptr<ring::Communicator>(); });  // never runs
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  // Waits chain (rank 0 may wait for rank 2, which waits for rank 1), so the first to time out names
  // the peer it waited for; every other rank stops with that reason.
  bool named = false;
  for (int rank : {0, 2, 3}) {
    const std::string& e = errors[std::size_t(rank)];
    EXPECT_FALSE(e.empty()) << "rank " << rank << " finished without its peer";
    named |= e.find("received nothing from rank") != std::string::npos && e.find("within 0.3 s") != std::string::npos;
  }
  EXPECT_TRUE(named) << errors[0] << " | " << errors[2] << " | " << errors[3];
}

TEST(HostGroup, DeliversEveryMessageToItsRankAndChecksSizes) {
  constexpr int kRanks = 5;
  ring::HostGroup group(kRanks, std::chrono::seconds(20));
  std::vector<std::string> errors(kRanks);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < kRanks; ++rank) {
    threads.emplace_back([&, rank] {
      auto comm = group.rank(rank);
      try {
        for (int step = 1; step < kRanks; ++step) {  // every rank sends a distinct pattern to rank + step
          const int to = (rank + step) % kRanks, from = (rank - step + kRanks) % kRanks;
          std::vector<std::byte> out(std::size_t(16 + to + rank * 3)), in(std::size_t(16 + rank + from * 3 + (step == 3 && rank == 0)));
          for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::byte(rank * 31 + step * 7 + int(i));
          const ring::Message send{to, out}, receive{from, in};
          comm->exchange(step, {&send, 1}, {&receive, 1});
          for (std::size_t i = 0; i < in.size(); ++i) ASSERT_EQ(in[i], std::byte(from * 31 + step * 7 + int(i)));
        }
      } catch (const Error& e) {
        errors[std::size_t(rank)] = e.what();
        comm->abort(e.what());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_NE(errors[0].find("ring step 3: rank 2 sent 22 bytes to rank 0, which expected 23"), std::string::npos)
      << errors[0];
  EXPECT_THROW(group.rank(kRanks), Error);
}

TEST(RingNccl, PublicFactoriesRefuseWhatCannotWork) {
  EXPECT_THROW(ring::nccl_communicator(nullptr), Error);
  // No launcher variables in the test environment: a clear error, and no NCCL call.
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (std::getenv(name)) GTEST_SKIP() << name << " is set: this process runs under a launcher";
  }
  try {
    ring::nccl_communicator_from_launcher("/nonexistent/dilatron-nccl-id");
    ADD_FAILURE() << "bootstrapped without a launcher";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("OMPI_COMM_WORLD_RANK"), std::string::npos) << e.what();
  }
}
