// RingDilatedAttention and the in-process ring: plans cached per shape, the Host executor on host
// memory and the device executor on device memory, every rank's failure passed to its peers through
// Communicator::abort; ring_reference_forward/backward step all ranks of one plan together.
#include <dilatron/dilatron.hpp>
#include <dilatron/error.hpp>
#include <dilatron/ring.hpp>

#include <fmt/format.h>

#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "common/dtype.hpp"
#include "runtime/device_buffer.hpp"
#include "runtime/driver.hpp"
#include "runtime/problem.hpp"
#include "runtime/ring/device_executor.hpp"
#include "runtime/ring/device_sync.hpp"
#include "runtime/ring/host_executor.hpp"
#include "runtime/ring/nccl.hpp"
#include "runtime/ring/nccl_bootstrap.hpp"
#include "runtime/ring/plan.hpp"

namespace dilatron {

struct RingDilatedAttention::Impl {
  using Signature = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, DType>;
  Config config;
  ring::Communicator* communicator;
  std::mutex mutex;
  std::map<Signature, std::unique_ptr<const ring::RingPlan>> plans;
  std::unique_ptr<DilatedAttention> single;  // one rank's passes

  // One rank holding the whole sequence is DilatedAttention's call: the ring then launches exactly what
  // it launches. `check` runs the GPU checks of the call; where they fail (an LSE shard that is a
  // strided view, say) the ring's executor takes the call and reports the error if it has one too.
  template <class Check>
  DilatedAttention* single_device(std::int64_t seq_len, const TensorView& q, Check check) {
    if (communicator->size() != 1 || q.shape[1] != seq_len) return nullptr;
    try {
      check();
    } catch (const Error&) {
      return nullptr;
    }
    std::lock_guard lock(mutex);
    if (!single) single = std::make_unique<DilatedAttention>(config);
    return single.get();
  }

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
  const auto checks = [&] { validate_for_gpu(validate(impl_->config, q, k, v, out, lse), q, k, v, out, lse); };
  if (DilatedAttention* single = impl_->single_device(seq_len, q, checks)) {
    single->forward(q, k, v, out, lse, stream);
    DILATRON_CU(cuStreamSynchronize(stream));  // returns when the output is written, as the ring does
    return;
  }
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::device_ring_forward(plan, comm, q, k, v, out, lse, stream);
  }, seq_len, q, k);
}

void RingDilatedAttention::backward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& dout, const TensorView& dq, const TensorView& dk,
                                    const TensorView& dv, Stream stream) {
  const auto checks = [&] {
    validate_gradients_for_gpu(validate_backward(impl_->config, q, k, v, dout, dq, dk, dv), q, k, v, dout, dq, dk, dv);
  };
  if (DilatedAttention* single = impl_->single_device(seq_len, q, checks)) {
    // The ring recomputes O and LSE; one rank does it with DilatedAttention's forward, then its backward.
    const std::int64_t B = q.shape[0], N = q.shape[1], H = q.shape[2];
    const DeviceBuffer out(std::size_t(q.numel()) * dtype_size(q.dtype)), lse(std::size_t(B * H * N) * sizeof(float));
    const ring::Drain drain{stream};
    const TensorView out_view = TensorView::contiguous(out.get(), q.dtype, q.shape);
    const TensorView lse_view = TensorView::contiguous(lse.get(), DType::f32, {B, H, N, 1});
    single->forward(q, k, v, out_view, &lse_view, stream);
    single->backward(q, k, v, out_view, lse_view, dout, dq, dk, dv, stream);
    DILATRON_CU(cuStreamSynchronize(stream));
    return;
  }
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::device_ring_backward(plan, comm, q, k, v, dout, dq, dk, dv, stream);
  }, seq_len, q, k);
}

void RingDilatedAttention::backward(std::int64_t seq_len, const TensorView& q, const TensorView& k, const TensorView& v,
                                    const TensorView& out, const TensorView& lse, const TensorView& dout,
                                    const TensorView& dq, const TensorView& dk, const TensorView& dv, Stream stream) {
  const ring::ForwardOutput forward{out, lse};
  const auto checks = [&] {
    validate_backward_for_gpu(validate_backward(impl_->config, q, k, v, dout, dq, dk, dv), q, k, v, out, lse, dout, dq,
                              dk, dv);
  };
  if (DilatedAttention* single = impl_->single_device(seq_len, q, checks)) {
    single->backward(q, k, v, out, lse, dout, dq, dk, dv, stream);
    DILATRON_CU(cuStreamSynchronize(stream));
    return;
  }
  impl_->run([&](const ring::RingPlan& plan, ring::Communicator& comm) {
    ring::device_ring_backward(plan, comm, q, k, v, dout, dq, dk, dv, stream, &forward);
  }, seq_len, q, k);
}

std::unique_ptr<ring::Communicator> ring::nccl_communicator(void* nccl_comm) {
  return std::make_unique<NcclCommunicator>(static_cast<ncclComm_t>(nccl_comm));
}

std::unique_ptr<ring::Communicator> ring::nccl_communicator_from_launcher(const std::string& id_file) {
  return bootstrap_from_environment(id_file);
}

ring::NcclId ring::nccl_unique_id() {
  static_assert(sizeof(ncclUniqueId) == sizeof(NcclId));
  ncclUniqueId id{};
  DILATRON_NCCL(ncclGetUniqueId(&id));
  NcclId out;
  std::memcpy(out.data(), &id, sizeof id);
  return out;
}

std::unique_ptr<ring::Communicator> ring::nccl_communicator(const NcclId& id, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) throw Error(fmt::format("NCCL rank {} of {}: needs 0 <= rank < size", rank, size));
  ncclUniqueId nccl{};
  std::memcpy(&nccl, id.data(), sizeof nccl);
  return NcclCommunicator::create(nccl, rank, size);
}

namespace {

ring::RingPlan whole_plan(const Config& config, int ranks, const Problem& p, DType dtype) {
  return ring::make_ring_plan(config, {p.batch, p.seq_len, p.heads, p.kv_heads, p.head_dim, dtype}, ranks);
}

}  // namespace

void ring_reference_forward(const Config& config, int ranks, const TensorView& q, const TensorView& k,
                            const TensorView& v, const TensorView& out, const TensorView* lse,
                            const RingProgress& progress) {
  const Problem p = validate(config, q, k, v, out, lse);
  ring::lockstep_ring_forward(whole_plan(config, ranks, p, q.dtype), {q, k, v}, out, lse, 0, progress);
}

void ring_reference_backward(const Config& config, int ranks, const TensorView& q, const TensorView& k,
                             const TensorView& v, const TensorView& dout, const TensorView& dq, const TensorView& dk,
                             const TensorView& dv, const RingProgress& progress) {
  const Problem p = validate_backward(config, q, k, v, dout, dq, dk, dv);
  ring::lockstep_ring_backward(whole_plan(config, ranks, p, q.dtype), {q, k, v}, {dout, dq, dk, dv}, 0, progress);
}

}  // namespace dilatron
