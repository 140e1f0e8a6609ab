// RingDilatedAttention and the in-process ring: plans cached per shape, the Host executor on host
// memory and the device executor on device memory, every rank's failure passed to its peers through
// Communicator::abort.
#include <dilatron/error.hpp>
#include <dilatron/ring.hpp>

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <mutex>
#include <tuple>

#include "common/parallel.hpp"
#include "runtime/problem.hpp"
#include "runtime/ring/device_executor.hpp"
#include "runtime/ring/host_communicator.hpp"
#include "runtime/ring/host_executor.hpp"
#include "runtime/ring/nccl_bootstrap.hpp"
#include "runtime/ring/plan.hpp"
#include "runtime/ring/timeout.hpp"

namespace dilatron {

struct RingDilatedAttention::Impl {
  using Signature = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, DType>;
  Config config;
  ring::Communicator* communicator;
  std::mutex mutex;
  std::map<Signature, std::unique_ptr<const ring::RingPlan>> plans;

  const ring::RingPlan& plan(std::int64_t seq_len, const TensorView& q, const TensorView& k) {
    const Signature key{q.shape[0], seq_len, q.shape[2], k.shape[2], q.shape[3], q.dtype};
    std::lock_guard lock(mutex);
    auto& slot = plans[key];
    if (!slot) {
      const ring::Shape shape{q.shape[0], seq_len, q.shape[2], k.shape[2], q.shape[3], q.dtype};
      slot = std::make_unique<const ring::RingPlan>(ring::make_ring_plan(config, shape, communicator->size()));
    }
    return *slot;
  }

  // Runs one rank's executor; a failure reaches the peers before it reaches the caller.
  template <class Executor>
  void run(Executor&& executor, std::int64_t seq_len, const TensorView& q, const TensorView& k) {
    try {
      executor(plan(seq_len, q, k), *communicator);
    } catch (const std::exception& e) {
      communicator->abort(fmt::format("rank {} failed: {}", communicator->rank(), e.what()));
      throw;
    }
  }
};

RingDilatedAttention::RingDilatedAttention(Config config, ring::Communicator& communicator)
    : impl_(std::make_unique<Impl>()) {
  validate_config(config);
  impl_->config = std::move(config);
  impl_->communicator = &communicator;
}

RingDilatedAttention::~RingDilatedAttention() = default;
RingDilatedAttention::RingDilatedAttention(RingDilatedAttention&&) noexcept = default;
RingDilatedAttention& RingDilatedAttention::operator=(RingDilatedAttention&&) noexcept = default;

const Config& RingDilatedAttention::config() const noexcept { return impl_->config; }

void RingDilatedAttention::reference_forward(std::int64_t seq_len, const TensorView& q, const TensorView& k,
                                             const TensorView& v, const TensorView& out, const TensorView* lse) {
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::host_ring_forward(plan, comm, q, k, v, out, lse);
  }, seq_len, q, k);
}

void RingDilatedAttention::reference_backward(std::int64_t seq_len, const TensorView& q, const TensorView& k,
                                              const TensorView& v, const TensorView& dout, const TensorView& dq,
                                              const TensorView& dk, const TensorView& dv) {
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::host_ring_backward(plan, comm, q, k, v, dout, dq, dk, dv);
  }, seq_len, q, k);
}

void RingDilatedAttention::forward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                                   const TensorView& out, const TensorView* lse, Stream stream) {
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::device_ring_forward(plan, comm, q, k, v, out, lse, stream);
  }, seq_len, q, k);
}

void RingDilatedAttention::backward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                    const TensorView& dv, Stream stream) {
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::device_ring_backward(plan, comm, q, k, v, dout, dq, dk, dv, stream);
  }, seq_len, q, k);
}

std::unique_ptr<ring::Communicator> ring::nccl_communicator(void* nccl_comm) {
  return std::make_unique<NcclCommunicator>(static_cast<ncclComm_t>(nccl_comm));
}

std::unique_ptr<ring::Communicator> ring::nccl_communicator_from_launcher(const std::string& id_file) {
  return bootstrap_from_environment(id_file);
}

namespace {

// Runs `rank_work(attention, rows)` for every rank of a ring over whole host tensors, each rank a thread.
template <class RankWork>
void in_process_ring(const Config& config, int ranks, const Problem& p, DType dtype, double timeout_seconds,
                     RankWork&& rank_work) {
  // Planning first names a bad rank count before any thread starts.
  ring::make_ring_plan(config, {p.batch, p.seq_len, p.heads, p.kv_heads, p.head_dim, dtype}, ranks);
  const auto timeout = timeout_seconds > 0 ? std::chrono::milliseconds(std::int64_t(timeout_seconds * 1000))
                                           : ring::ring_timeout();
  ring::HostGroup group(ranks, timeout);
  parallel_for(ranks, unsigned(ranks), [&] {
    return [&](std::int64_t rank) {
      std::unique_ptr<ring::Communicator> comm = group.rank(int(rank));
      RingDilatedAttention attention(config, *comm);
      rank_work(attention, ring::shard(p.seq_len, ranks, int(rank)));
    };
  });
}

}  // namespace

void ring_reference_forward(const Config& config, int ranks, const TensorView& q, const TensorView& k,
                            const TensorView& v, const TensorView& out, const TensorView* lse,
                            double timeout_seconds) {
  const Problem p = validate(config, q, k, v, out, lse);
  in_process_ring(config, ranks, p, q.dtype, timeout_seconds, [&](RingDilatedAttention& attention, ring::RowRange rows) {
    const TensorView lse_shard = lse ? ring::rows_of(*lse, rows, 2) : TensorView{};
    attention.reference_forward(p.seq_len, ring::rows_of(q, rows, 1), ring::rows_of(k, rows, 1), ring::rows_of(v, rows, 1),
                                ring::rows_of(out, rows, 1), lse ? &lse_shard : nullptr);
  });
}

void ring_reference_backward(const Config& config, int ranks, const TensorView& q, const TensorView& k,
                             const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                             const TensorView& dv, double timeout_seconds) {
  const Problem p = validate_backward(config, q, k, v, dout, dq, dk, dv);
  in_process_ring(config, ranks, p, q.dtype, timeout_seconds, [&](RingDilatedAttention& attention, ring::RowRange rows) {
    const auto shard = [&](const TensorView& t) { return ring::rows_of(t, rows, 1); };
    attention.reference_backward(p.seq_len, shard(q), shard(k), shard(v), shard(dout), shard(dq), shard(dk), shard(dv));
  });
}

}  // namespace dilatron
