// The GPU ring executor against the float64 Host ring on the same data: P = 1..4 ranks on one GPU,
// each a thread running RingDilatedAttention::forward (and ::backward, against the single-device float64
// gradients) on its shard views of whole device tensors, the ranks exchanging device buffers over the
// library's Local transport or over transports of the test's own. Outputs are poisoned before every run.
// Skipped without a GPU.
#include <gtest/gtest.h>

#include <dilatron/dilatron.hpp>
#include <dilatron/error.hpp>
#include <dilatron/ring.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "common/env.hpp"
#include "emulator/cuda_driver.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/device_sync.hpp"
#include "runtime/ring/local_communicator.hpp"
#include "runtime/ring/partition.hpp"
#include "runtime/ring/plan.hpp"
#include "tests/support/device_gradients.hpp"
#include "tests/support/expect_error.hpp"

using namespace dilatron;
using namespace dilatron::test;

namespace {

// P ranks on one GPU: a sender posts its device buffer; the receiver copies it device to device once
// both have arrived; exchange returns when this rank's receives are copied and its sends were taken,
// so the executor may free or reuse every buffer of the step afterwards.
class DeviceMailbox {
 public:
  explicit DeviceMailbox(int ranks) : ranks_(ranks) {}

  std::unique_ptr<ring::Communicator> rank(int rank);

  void exchange(int me, int step, std::span<const ring::Message> sends, std::span<const ring::Message> receives) {
    std::map<int, int> nth_send, nth_receive;
    std::vector<Key> mine;
    {
      std::lock_guard lock(mutex_);
      for (const ring::Message& m : sends) {
        mine.push_back({step, me, m.peer, nth_send[m.peer]++});
        posted_[mine.back()] = {reinterpret_cast<CUdeviceptr>(m.data.data()), m.data.size(), false};
      }
    }
    changed_.notify_all();
    for (const ring::Message& m : receives) {
      const Key key{step, m.peer, me, nth_receive[m.peer]++};
      Posted source;
      {
        std::unique_lock lock(mutex_);
        wait(lock, [&] { return posted_.count(key) > 0; }, step, m.peer);
        source = posted_[key];
      }
      if (source.bytes != m.data.size()) {
        throw Error(fmt::format("step {}: rank {} sent {} bytes, rank {} expects {}", step, m.peer, source.bytes, me, m.data.size()));
      }
      DILATRON_CU(cuMemcpyDtoD(reinterpret_cast<CUdeviceptr>(m.data.data()), source.data, source.bytes));
      DILATRON_CU(cuCtxSynchronize());  // device-to-device copies may return before they land
      {
        std::lock_guard lock(mutex_);
        posted_[key].copied = true;
      }
      changed_.notify_all();
    }
    std::unique_lock lock(mutex_);
    for (const Key& key : mine) {
      wait(lock, [&] { return posted_.at(key).copied; }, step, std::get<2>(key));
      posted_.erase(key);
    }
  }

  void abort(const std::string& reason) {
    {
      std::lock_guard lock(mutex_);
      if (aborted_.empty()) aborted_ = reason;
    }
    changed_.notify_all();
  }

 private:
  using Key = std::tuple<int, int, int, int>;  // step, source, destination, nth message of the pair
  struct Posted {
    CUdeviceptr data = 0;
    std::size_t bytes = 0;
    bool copied = false;
  };

  template <class Ready>
  void wait(std::unique_lock<std::mutex>& lock, Ready ready, int step, int peer) {
    const bool done = changed_.wait_for(lock, std::chrono::seconds(60), [&] { return !aborted_.empty() || ready(); });
    if (!aborted_.empty()) throw Error("aborted: " + aborted_);
    if (!done) throw Error(fmt::format("step {}: peer {} did not answer within 60 s", step, peer));
  }

  int ranks_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Key, Posted> posted_;
  std::string aborted_;
};

class DeviceRank : public ring::Communicator {
 public:
  DeviceRank(DeviceMailbox& box, int rank, int size) : box_(box), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void exchange(int step, std::span<const ring::Message> sends, std::span<const ring::Message> receives) override {
    box_.exchange(rank_, step, sends, receives);
  }
  void abort(const std::string& reason) override { box_.abort(reason); }

 private:
  DeviceMailbox& box_;
  int rank_, size_;
};

// A stream-ordered transport of the test's own: enqueue only records a step, make_wait and wait carry
// out what was recorded. The executor runs it unchanged; reading a step's buffers before make_wait would
// read stale data, and the calls are logged so the test sees step s + 1 queued before step s is read.
class DeferredRank : public DeviceRank {
 public:
  DeferredRank(DeviceMailbox& box, int rank, int size, std::vector<std::string>& log) : DeviceRank(box, rank, size), log_(log) {}
  void enqueue(int step, std::span<const ring::Message> sends, std::span<const ring::Message> receives, dilatron::Stream) override {
    log_.push_back(fmt::format("enqueue {}", step));
    pending_.push_back({step, {sends.begin(), sends.end()}, {receives.begin(), receives.end()}});
  }
  void make_wait(dilatron::Stream) override {
    log_.push_back("make_wait");
    run_pending();
  }
  void wait() override {
    log_.push_back("wait");
    run_pending();
  }

 private:
  struct Step {
    int step;
    std::vector<ring::Message> sends, receives;
  };
  void run_pending() {
    DILATRON_CU(cuCtxSynchronize());  // the packing each step was queued behind
    for (const Step& p : pending_) exchange(p.step, p.sends, p.receives);
    pending_.clear();
  }
  std::vector<std::string>& log_;
  std::vector<Step> pending_;
};

std::unique_ptr<ring::Communicator> DeviceMailbox::rank(int rank) { return std::make_unique<DeviceRank>(*this, rank, ranks_); }

class GpuRing : public GpuTest {};

GpuResult host_ring(RandomCase& c) {
  std::vector<float> out(std::size_t(c.B * c.N * c.H * c.D), NAN), lse(std::size_t(c.B * c.H * c.N), NAN);
  const auto lse_view = TensorView::contiguous(lse.data(), DType::f32, {c.B, c.H, c.N, 1});
  ring_reference_forward(c.config, 1, c.q_view(), c.k_view(), c.v_view(),
                         TensorView::contiguous(out.data(), DType::f32, c.q_shape()), &lse_view);
  return {{out.begin(), out.end()}, {lse.begin(), lse.end()}};
}

// How a test's ranks talk: the test's mailbox (blocking exchange on the null stream), its deferred
// transport (stream-ordered calls, logged into `logs`), or the library's Local transport (each rank on
// its own stream, as `run --ranks` and `bench --ranks` run them).
struct Transport {
  enum Kind { mailbox, deferred, local } kind = mailbox;
  std::vector<std::vector<std::string>>* logs = nullptr;
};

// Runs work(attention, rows, stream) for every rank, each a thread; expects no rank to fail.
template <class Work>
void on_every_rank(const Config& config, int ranks, std::int64_t seq_len, Work&& work, Transport transport = {}) {
  DeviceMailbox box(ranks);
  if (transport.logs) transport.logs->assign(std::size_t(ranks), {});
  std::vector<std::unique_ptr<ring::LocalCommunicator>> local;
  if (transport.kind == Transport::local) local = ring::LocalCommunicator::group(ranks);
  const CUcontext context = driver::current_context();
  std::vector<std::string> errors(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < ranks; ++rank) {
    threads.emplace_back([&, rank] {
      try {
        const ring::ContextScope scope(context);
        std::unique_ptr<ring::Communicator> own;
        if (transport.kind == Transport::deferred) {
          own = std::make_unique<DeferredRank>(box, rank, ranks, (*transport.logs)[std::size_t(rank)]);
        } else if (transport.kind == Transport::mailbox) {
          own = box.rank(rank);
        }
        ring::Communicator& comm = own ? *own : *local[std::size_t(rank)];
        RingDilatedAttention attention(config, comm);
        work(attention, ring::shard(seq_len, ranks, rank), own ? CUstream{} : local[std::size_t(rank)]->stream());
      } catch (const std::exception& e) {
        errors[std::size_t(rank)] = e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int rank = 0; rank < ranks; ++rank) EXPECT_EQ(errors[std::size_t(rank)], "") << "rank " << rank;
  DILATRON_CU(cuCtxSynchronize());
}

GpuResult gpu_ring(RandomCase& c, int ranks, Transport transport = {}) {
  const DeviceCase device(c);
  const TensorView lse_view = device.lse();
  on_every_rank(c.config, ranks, c.N, [&](RingDilatedAttention& attention, ring::RowRange rows, CUstream stream) {
    const TensorView lse_shard = ring::rows_of(lse_view, rows, 2);
    attention.forward(c.N, ring::rows_of(device.q(), rows, 1), ring::rows_of(device.k(), rows, 1),
                      ring::rows_of(device.v(), rows, 1), ring::rows_of(device.out(), rows, 1), &lse_shard, stream);
  }, transport);
  return device.result();
}

// Every rank's backward on its shards of whole device tensors.
Gradients gpu_ring_gradients(RandomCase& c, const std::vector<std::byte>& dout, int ranks, Transport transport = {}) {
  const DeviceCase device(c);
  const DeviceGradients grad(c, dout);
  on_every_rank(c.config, ranks, c.N, [&](RingDilatedAttention& attention, ring::RowRange rows, CUstream stream) {
    const auto shard = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
    attention.backward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(grad.dout()), shard(grad.dq()),
                       shard(grad.dk()), shard(grad.dv()), stream);
  }, transport);
  return grad.result();
}

// How the test tampers with the forward's results before the backward reads them.
enum class Tamper { none, zero_out, raise_lse };

// The forward, then every rank's backward given its shards of the forward's O and LSE, as a training
// step that kept them runs it.
Gradients gpu_ring_gradients_given_forward(RandomCase& c, const std::vector<std::byte>& dout, int ranks,
                                           Transport transport = {}, Tamper tamper = Tamper::none) {
  const DeviceCase device(c);
  const DeviceGradients grad(c, dout);
  const TensorView lse = device.lse(), out = device.out();
  on_every_rank(c.config, ranks, c.N, [&](RingDilatedAttention& attention, ring::RowRange rows, CUstream stream) {
    const TensorView lse_shard = ring::rows_of(lse, rows, 2);
    attention.forward(c.N, ring::rows_of(device.q(), rows, 1), ring::rows_of(device.k(), rows, 1),
                      ring::rows_of(device.v(), rows, 1), ring::rows_of(out, rows, 1), &lse_shard, stream);
  }, transport);
  const auto at = [](const TensorView& t) { return reinterpret_cast<CUdeviceptr>(t.data); };
  if (tamper == Tamper::zero_out) DILATRON_CU(cuMemsetD8Async(at(out), 0, std::size_t(out.numel()) * dtype_size(c.dtype), nullptr));
  if (tamper == Tamper::raise_lse) {
    std::vector<float> host(std::size_t(lse.numel()));
    DILATRON_CU(cuMemcpyDtoH(host.data(), at(lse), host.size() * sizeof(float)));
    for (float& x : host) x += 1.0f;
    DILATRON_CU(cuMemcpyHtoD(at(lse), host.data(), host.size() * sizeof(float)));
  }
  DILATRON_CU(cuCtxSynchronize());
  on_every_rank(c.config, ranks, c.N, [&](RingDilatedAttention& attention, ring::RowRange rows, CUstream stream) {
    const auto shard = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
    attention.backward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(out), ring::rows_of(lse, rows, 2),
                       shard(grad.dout()), shard(grad.dq()), shard(grad.dk()), shard(grad.dv()), stream);
  }, transport);
  return grad.result();
}

void expect_gradients_close(const Gradients& got, const Gradients& want, double tolerance) {
  EXPECT_LE(l2_relative(got.dq, want.dq), tolerance) << "dq";
  EXPECT_LE(l2_relative(got.dk, want.dk), tolerance) << "dk";
  EXPECT_LE(l2_relative(got.dv, want.dv), tolerance) << "dv";
}

RandomCase make_case(Config config, std::int64_t B, std::int64_t N, std::int64_t H, std::int64_t Hkv, std::int64_t D,
                     DType dtype, std::mt19937_64& rng) {
  RandomCase c;
  c.config = std::move(config);
  c.B = B, c.N = N, c.H = H, c.Hkv = Hkv, c.D = D, c.dtype = dtype;
  fill_inputs(c, rng, 1.5);
  return c;
}

// The configurations both the forward and the backward test take through the ring.
std::vector<RandomCase> ring_cases() {
  std::mt19937_64 rng(2024);
  std::vector<RandomCase> cases;
  // Spanning segments of several lengths, GQA, causal skipping.
  cases.push_back(make_case(make_config({16, 48, 96}, {1, 2, 4}, Mode::longnet, true), 2, 96, 8, 2, 64, DType::bf16, rng));
  // head_groups averaging, r not dividing w, a partial last segment.
  cases.push_back(make_case(make_config({32, 64, 100}, {1, 3, 2}, Mode::head_groups, false), 1, 100, 6, 6, 128, DType::f16, rng));
  // No branch with r = 1: rows no offset selects stay O = 0, LSE = -inf.
  cases.push_back(make_case(make_config({40, 80}, {2, 3}, Mode::longnet, false), 2, 83, 4, 1, 64, DType::f16, rng));
  // A prime N, r larger than a shard, a custom scale.
  RandomCase custom = make_case(make_config({61, 20}, {5, 1}, Mode::head_groups, true), 1, 61, 4, 2, 128, DType::bf16, rng);
  custom.config.scale = 0.3;
  cases.push_back(std::move(custom));
  return cases;
}

}  // namespace

// Over the library's Local transport, and over the test's mailbox (the blocking defaults of a transport
// that only implements exchange).
TEST_F(GpuRing, EqualsTheHostRingForOneToFourRanks) {
  std::vector<RandomCase> cases = ring_cases();
  for (RandomCase& c : cases) {
    const GpuResult want = host_ring(c);
    const double tolerance = c.dtype == DType::bf16 ? 1e-2 : 3e-3;
    for (const auto kind : {Transport::local, Transport::mailbox}) {
      for (int ranks = 1; ranks <= 4; ++ranks) {
        SCOPED_TRACE(fmt::format("ranks {} over {}: {}", ranks, kind == Transport::local ? "Local" : "the mailbox", c.describe()));
        const GpuResult got = gpu_ring(c, ranks, {kind});
        EXPECT_LE(relative_error(got.out, want.out), tolerance);
        EXPECT_LE(relative_error(got.lse, want.lse, 1.0), tolerance);
      }
    }
  }
}

// The ring's backward runs in fp32 from the 16-bit inputs, so its error is the gradients' rounding. Both
// ways: running the forward again, and given the forward's O and LSE (then nothing is attended on the
// blocks' way, which still travel for the backward to attend to). Over the Local transport, and the given
// way over the mailbox's blocking path too; what the given way reads is the O and LSE given: a zeroed O
// or a raised LSE changes the gradients.
TEST_F(GpuRing, BackwardEqualsTheSingleDeviceReferenceForOneToFourRanks) {
  std::mt19937_64 rng(77);
  for (RandomCase& c : ring_cases()) {
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    const Gradients want = reference_gradients(c, dout);
    const double tolerance = c.dtype == DType::bf16 ? 1e-2 : 3e-3;
    for (int ranks = 1; ranks <= 4; ++ranks) {
      SCOPED_TRACE(fmt::format("ranks {}: {}", ranks, c.describe()));
      expect_gradients_close(gpu_ring_gradients(c, dout, ranks, {Transport::local}), want, tolerance);
      const auto given = ranks == 3 ? Transport::mailbox : Transport::local;
      SCOPED_TRACE(fmt::format("given the forward's O and LSE, over {}", ranks == 3 ? "the mailbox" : "Local"));
      expect_gradients_close(gpu_ring_gradients_given_forward(c, dout, ranks, {given}), want, tolerance);
    }
    SCOPED_TRACE(c.describe());
    const Gradients zero_out = gpu_ring_gradients_given_forward(c, dout, 2, {Transport::local}, Tamper::zero_out);
    EXPECT_GT(l2_relative(zero_out.dq, want.dq), 10 * tolerance) << "delta = dO . O comes from the O given";
    const Gradients raised = gpu_ring_gradients_given_forward(c, dout, 2, {Transport::local}, Tamper::raise_lse);
    EXPECT_GT(l2_relative(raised.dv, want.dv), 10 * tolerance) << "P = exp(S - LSE) comes from the LSE given";
  }
}

// A transport that overrides the stream-ordered calls runs without an edit in the executor, which
// queues step s + 1 before it waits for (and reads) step s: "enqueue 1", then per step "make_wait" and
// the next "enqueue", then one "wait". The backward's return leg runs through the same calls.
TEST_F(GpuRing, AStreamOrderedTransportOfItsOwnOverlapsTheSteps) {
  std::vector<RandomCase> cases = ring_cases();
  RandomCase& c = cases.front();
  const GpuResult want = host_ring(c);
  for (int ranks = 2; ranks <= 3; ++ranks) {
    SCOPED_TRACE(fmt::format("ranks {}", ranks));
    std::vector<std::vector<std::string>> logs;
    const GpuResult got = gpu_ring(c, ranks, {Transport::deferred, &logs});
    EXPECT_LE(relative_error(got.out, want.out), 1e-2);
    EXPECT_LE(relative_error(got.lse, want.lse, 1.0), 1e-2);
    const int steps = ring::make_ring_plan(c.config, {c.B, c.N, c.H, c.Hkv, c.D, c.dtype}, ranks).steps;
    ASSERT_GE(steps, 1);
    std::vector<std::string> expected{"enqueue 1"};
    for (int step = 1; step <= steps; ++step) {
      expected.push_back("make_wait");
      if (step < steps) expected.push_back(fmt::format("enqueue {}", step + 1));
    }
    expected.push_back("wait");
    for (const auto& log : logs) EXPECT_EQ(log, expected);
    // The backward's return leg through the same calls: its arrivals are added only after make_wait.
    std::mt19937_64 rng(3);
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    const Gradients want_grad = reference_gradients(c, dout), got_grad = gpu_ring_gradients(c, dout, ranks, {Transport::deferred, &logs});
    EXPECT_LE(l2_relative(got_grad.dk, want_grad.dk), 1e-2);
    EXPECT_LE(l2_relative(got_grad.dv, want_grad.dv), 1e-2);
    EXPECT_LE(l2_relative(got_grad.dq, want_grad.dq), 1e-2);
  }
}

// Each rank allocates exactly the workspace its plan states (RankPlan::forward_workspace_bytes and
// backward_workspace_bytes), counted by the emulated device per rank thread; one rank runs
// DilatedAttention, which needs no more.
TEST_F(GpuRing, RanksAllocateExactlyTheWorkspaceThePlanStates) {
  if (!env::emulated_device()) GTEST_SKIP() << "counts the emulated device's allocations";
  std::mt19937_64 rng(5);
  std::vector<RandomCase> cases = ring_cases();
  cases.resize(2);  // GQA and causal skipping; head_groups and a partial last segment
  for (RandomCase& c : cases) {
    std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
    for (int ranks = 1; ranks <= 4; ++ranks) {
      SCOPED_TRACE(fmt::format("ranks {}: {}", ranks, c.describe()));
      const ring::RingPlan plan = ring::make_ring_plan(c.config, {c.B, c.N, c.H, c.Hkv, c.D, c.dtype}, ranks);
      const DeviceCase device(c);
      const DeviceGradients grad(c, dout);
      std::vector<std::int64_t> forward(std::size_t(ranks), -1), backward(std::size_t(ranks), -1),
          given(std::size_t(ranks), -1);
      const TensorView lse = device.lse();
      on_every_rank(c.config, ranks, c.N, [&](RingDilatedAttention& attention, ring::RowRange rows, CUstream) {
        const auto shard = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
        const std::size_t rank = std::size_t(std::find_if(plan.per_rank.begin(), plan.per_rank.end(), [&](const auto& p) {
                                                return p.rows.begin == rows.begin;
                                              }) - plan.per_rank.begin());
        emulator::cuda::ThreadAllocations& mine = emulator::cuda::thread_allocations();
        const std::int64_t before = mine.live;
        mine.peak = before;
        const TensorView lse_shard = ring::rows_of(lse, rows, 2);
        attention.forward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(device.out()),
                          &lse_shard, nullptr);
        forward[rank] = mine.peak - before;
        mine.peak = before;
        attention.backward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(grad.dout()),
                           shard(grad.dq()), shard(grad.dk()), shard(grad.dv()), nullptr);
        backward[rank] = mine.peak - before;
        mine.peak = before;
        attention.backward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(device.out()), lse_shard,
                           shard(grad.dout()), shard(grad.dq()), shard(grad.dk()), shard(grad.dv()), nullptr);
        given[rank] = mine.peak - before;
        EXPECT_EQ(mine.live, before) << "rank " << rank << " kept device memory";
      });
      for (int r = 0; r < ranks; ++r) {
        const ring::RankPlan& p = plan.per_rank[std::size_t(r)];
        // One rank's passes are DilatedAttention's, whose workspace is at most the ring's.
        if (ranks == 1) {
          EXPECT_LE(forward[0], p.forward_workspace_bytes);
          EXPECT_LE(backward[0], p.backward_workspace_bytes);
          EXPECT_GT(backward[0], 0);
          EXPECT_LE(given[0], p.backward_given_forward_workspace_bytes);
          EXPECT_GT(given[0], 0);
        } else {
          EXPECT_EQ(forward[std::size_t(r)], p.forward_workspace_bytes) << "rank " << r;
          EXPECT_EQ(backward[std::size_t(r)], p.backward_workspace_bytes) << "rank " << r;
          EXPECT_EQ(given[std::size_t(r)], p.backward_given_forward_workspace_bytes) << "rank " << r;
        }
      }
    }
  }
}

// Every step runs on the tiled kernels. One rank launches exactly what DilatedAttention launches
// (its backward: the forward that recomputes O and LSE, then DilatedAttention's backward). With more,
// each rank's own rows take one attention_partial_merge per branch (attention_backward in the
// backward) on views starting at its first row, and every received block attention_block
// (attention_block_backward); nothing else attends. Head dims the tiled kernels lack are refused.
TEST_F(GpuRing, EveryStepRunsOnTheTiledKernels) {
  if (!env::emulated_device()) GTEST_SKIP() << "reads the emulated device's launch log";
  const auto op_of = [](const std::string& line) { return line.substr(0, line.find(' ')); };
  const auto count = [&](const std::vector<std::string>& log, const std::string& op) {
    return std::count_if(log.begin(), log.end(), [&](const std::string& l) { return op_of(l) == op; });
  };
  std::vector<RandomCase> cases = ring_cases();
  RandomCase& c = cases.front();
  std::mt19937_64 rng(40);
  const std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
  std::vector<std::string> single, single_backward;
  {
    const DeviceCase device(c);
    const DeviceGradients grad(c, dout);
    const TensorView lse = device.lse();
    emulator::cuda::thread_launch_log() = &single;
    DilatedAttention attention(c.config);
    attention.forward(device.q(), device.k(), device.v(), device.out(), &lse, nullptr);
    single_backward = single;
    emulator::cuda::thread_launch_log() = &single_backward;
    attention.backward(device.q(), device.k(), device.v(), device.out(), lse, grad.dout(), grad.dq(), grad.dk(),
                       grad.dv(), nullptr);
    emulator::cuda::thread_launch_log() = nullptr;
  }
  ASSERT_FALSE(single.empty());
  ASSERT_GT(single_backward.size(), single.size());
  for (const int ranks : {1, 3}) {
    SCOPED_TRACE(fmt::format("ranks {}", ranks));
    const DeviceCase device(c);
    const DeviceGradients grad(c, dout);
    const TensorView lse = device.lse();
    std::vector<std::vector<std::string>> logs(static_cast<std::size_t>(ranks)), backward_logs(logs.size());
    std::mutex mutex;
    on_every_rank(c.config, ranks, c.N, [&](RingDilatedAttention& attention, ring::RowRange rows, CUstream) {
      const auto shard = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
      std::vector<std::string> mine, backward;
      emulator::cuda::thread_launch_log() = &mine;
      const TensorView lse_shard = ring::rows_of(lse, rows, 2);
      attention.forward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(device.out()), &lse_shard,
                        nullptr);
      emulator::cuda::thread_launch_log() = &backward;
      attention.backward(c.N, shard(device.q()), shard(device.k()), shard(device.v()), shard(grad.dout()),
                         shard(grad.dq()), shard(grad.dk()), shard(grad.dv()), nullptr);
      emulator::cuda::thread_launch_log() = nullptr;
      const std::lock_guard lock(mutex);
      int rank = 0;
      while (ring::shard(c.N, ranks, rank).begin != rows.begin) ++rank;
      logs[std::size_t(rank)] = std::move(mine);
      backward_logs[std::size_t(rank)] = std::move(backward);
    });
    if (ranks == 1) {
      EXPECT_EQ(logs[0], single);
      EXPECT_EQ(backward_logs[0], single_backward);
    } else {
      const std::set<std::string> forward_ops{"clear_output", "attention_partial_merge", "ring_pack", "attention_block",
                                              "finish_output"};
      std::set<std::string> backward_ops = forward_ops;
      backward_ops.insert({"gradient_prepare", "attention_backward", "attention_block_backward", "ring_unpack_add"});
      std::int64_t blocks = 0, block_gradients = 0;
      for (int rank = 0; rank < ranks; ++rank) {
        const auto& log = logs[std::size_t(rank)];
        const auto& backward = backward_logs[std::size_t(rank)];
        EXPECT_EQ(count(log, "attention_partial_merge"), 3) << fmt::format("{}", fmt::join(log, "\n"));
        EXPECT_EQ(count(backward, "attention_backward"), 3) << fmt::format("{}", fmt::join(backward, "\n"));
        for (const std::string& l : log) EXPECT_TRUE(forward_ops.count(op_of(l))) << l;
        for (const std::string& l : backward) EXPECT_TRUE(backward_ops.count(op_of(l))) << l;
        blocks += count(log, "attention_block");
        block_gradients += count(backward, "attention_block_backward");
      }
      EXPECT_GT(blocks, 0) << "the case spans ranks";
      EXPECT_EQ(block_gradients, blocks) << "every block attended has its gradients";
    }
    const GpuResult want = host_ring(c), got = device.result();
    EXPECT_LE(relative_error(got.out, want.out), 1e-2);
  }
  Config narrow;
  narrow.segments = {16, 48};
  narrow.dilations = {1, 2};
  RandomCase odd = make_case(narrow, 1, 64, 2, 2, 40, DType::f16, rng);
  const DeviceCase device(odd);
  DeviceMailbox box(1);
  const std::unique_ptr<ring::Communicator> comm = box.rank(0);
  RingDilatedAttention attention(narrow, *comm);
  test::expect_error([&] { attention.forward(odd.N, device.q(), device.k(), device.v(), device.out(), nullptr, nullptr); },
                     {"head dim 40", "64, 96, 128 or 256"});
}

// The tensors the ring writes (and dO) must have the layout the kernels write: a head stride of 66
// elements or a pointer 2 bytes off is an error naming the tensor, before anything is written.
TEST_F(GpuRing, TensorsInALayoutTheKernelsCannotWriteAreRefused) {
  std::vector<RandomCase> cases = ring_cases();
  RandomCase& c = cases.front();  // D = 64
  const DeviceCase device(c);
  const std::size_t padded = std::size_t(c.B * c.N * c.H * 66) * 2 + 16;
  DeviceBuffer out(padded);
  const std::vector<std::uint8_t> poison(padded, 0x7f);
  out.upload(poison.data());
  TensorView wide = TensorView::contiguous(out.get(), c.dtype, c.q_shape());
  wide.strides = {c.N * c.H * 66, c.H * 66, 66, 1};
  TensorView shifted = TensorView::contiguous(static_cast<std::byte*>(out.get()) + 2, c.dtype, c.q_shape());
  DeviceMailbox box(1);
  const std::unique_ptr<ring::Communicator> comm = box.rank(0);
  RingDilatedAttention attention(c.config, *comm);
  test::expect_error([&] { attention.forward(c.N, device.q(), device.k(), device.v(), wide, nullptr, nullptr); },
                     {"out: stride[2] = 66"});
  test::expect_error([&] { attention.forward(c.N, device.q(), device.k(), device.v(), shifted, nullptr, nullptr); },
                     {"out: data is not 16-byte aligned"});
  std::mt19937_64 rng(1);
  const std::vector<std::byte> dout = random_tensor(c.B * c.N * c.H * c.D, c.dtype, 1.0, rng);
  const DeviceGradients grad(c, dout);
  EXPECT_THROW(attention.backward(c.N, device.q(), device.k(), device.v(), grad.dout(), shifted, grad.dk(), grad.dv(), nullptr),
               Error);
  // The forward's results given to the backward: the LSE read in rows of innermost stride 1, O in q's dtype.
  TensorView spaced_lse = device.lse();
  spaced_lse.shape[2] = c.N / 2;
  spaced_lse.strides = {c.H * c.N, c.N, 2, 1};
  const std::int64_t half = c.N / 2;
  const auto first_half = [&](TensorView t, int axis) { return ring::rows_of(t, {0, half}, axis); };
  // Half the rows: a rank of two, whose backward the ring runs (one rank of one is DilatedAttention's).
  DeviceMailbox two(2);
  const std::unique_ptr<ring::Communicator> first = two.rank(0);
  RingDilatedAttention pair(c.config, *first);
  test::expect_error([&] {
    pair.backward(c.N, first_half(device.q(), 1), first_half(device.k(), 1), first_half(device.v(), 1),
                  first_half(device.out(), 1), spaced_lse, first_half(grad.dout(), 1), first_half(grad.dq(), 1),
                  first_half(grad.dk(), 1), first_half(grad.dv(), 1), nullptr);
  }, {"lse strides", "innermost stride 1"});
  TensorView f32_out = device.out();
  f32_out.dtype = DType::f32;
  test::expect_error([&] {
    pair.backward(c.N, first_half(device.q(), 1), first_half(device.k(), 1), first_half(device.v(), 1),
                  first_half(f32_out, 1), first_half(device.lse(), 2), first_half(grad.dout(), 1),
                  first_half(grad.dq(), 1), first_half(grad.dk(), 1), first_half(grad.dv(), 1), nullptr);
  }, {"out is f32", "q's dtype"});
  test::expect_error([&] {
    attention.backward(c.N, device.q(), device.k(), device.v(), shifted, device.lse(), grad.dout(), grad.dq(), grad.dk(),
                       grad.dv(), nullptr);
  }, {"out: data is not 16-byte aligned"});
  DILATRON_CU(cuCtxSynchronize());
  std::vector<std::uint8_t> after(padded);
  out.download(after.data());
  EXPECT_EQ(after, poison) << "nothing written";
}
