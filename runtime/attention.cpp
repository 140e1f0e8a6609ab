// DilatedAttention: validation, the plan cache (per context and shape signature), and launches. The
// only shared state is the plan map, behind the mutex; plans are immutable once built and each call
// takes its own stream-ordered workspace, so calls on several threads and streams run at once.
#include <dilatron/dilatron.hpp>

#include <map>
#include <mutex>
#include <tuple>

#include "runtime/backward_plan.hpp"
#include "runtime/driver.hpp"
#include "runtime/plan.hpp"
#include "runtime/problem.hpp"
#include "runtime/stream_workspace.hpp"

namespace dilatron {

struct DilatedAttention::Impl {
  using Signature = std::tuple<CUcontext, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, DType, bool>;
  Config config;
  std::mutex mutex;
  std::map<Signature, std::unique_ptr<ForwardPlan>> plans;
  std::map<Signature, std::unique_ptr<BackwardPlan>> backward_plans;

  // The calls of both kinds, a packed batch when `packing` is set.
  void forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const TensorView* lse, Stream stream, const PackedSequences* packing);
  void backward(const BackwardTensors& t, const TensorView& lse, Stream stream, const PackedSequences* packing);
};

namespace {

// A packed call's host-side checks; its offsets stay on the device (index.cuh's sequence_rows guards them).
void check_packing(const TensorView& q, const PackedSequences& packing) {
  validate_packing(q, packing);
  driver::require_device_memory(packing.cu_seqlens, "cu_seqlens");
}

}  // namespace

DilatedAttention::DilatedAttention(Config config) : impl_(std::make_unique<Impl>()) {
  validate_config(config);
  impl_->config = std::move(config);
}

DilatedAttention::~DilatedAttention() = default;
DilatedAttention::DilatedAttention(DilatedAttention&&) noexcept = default;
DilatedAttention& DilatedAttention::operator=(DilatedAttention&&) noexcept = default;

const Config& DilatedAttention::config() const noexcept { return impl_->config; }

void DilatedAttention::forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                               const TensorView* lse, Stream stream) {
  impl_->forward(q, k, v, out, lse, stream, nullptr);
}

void DilatedAttention::forward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const PackedSequences& packing, const TensorView& out, const TensorView* lse,
                               Stream stream) {
  impl_->forward(q, k, v, out, lse, stream, &packing);
}

void DilatedAttention::backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                const TensorView& lse, const TensorView& dout, const TensorView& dq,
                                const TensorView& dk, const TensorView& dv, Stream stream) {
  impl_->backward({q, k, v, out, dout, dq, dk, dv, static_cast<const float*>(lse.data)}, lse, stream, nullptr);
}

void DilatedAttention::backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                const TensorView& lse, const TensorView& dout, const TensorView& dq,
                                const TensorView& dk, const TensorView& dv, const PackedSequences& packing,
                                Stream stream) {
  impl_->backward({q, k, v, out, dout, dq, dk, dv, static_cast<const float*>(lse.data)}, lse, stream, &packing);
}

void DilatedAttention::Impl::forward(const TensorView& q, const TensorView& k, const TensorView& v,
                                     const TensorView& out, const TensorView* lse, Stream stream,
                                     const PackedSequences* packing) {
  const Problem p = validate(config, q, k, v, out, lse);
  validate_for_gpu(p, q, k, v, out, lse);
  const CUcontext context = driver::current_context();  // before check_packing, which asks about this device
  if (packing) check_packing(q, *packing);
  const Signature signature{context, p.batch, p.seq_len, p.heads, p.kv_heads, p.head_dim, q.dtype, lse == nullptr};
  const ForwardPlan* plan;
  {
    std::lock_guard lock(mutex);
    auto& slot = plans[signature];
    if (!slot) slot = std::make_unique<ForwardPlan>(config, p, q.dtype, lse == nullptr);
    plan = slot.get();
  }
  // Freed (stream-ordered) when this scope ends, after the launches are queued.
  const StreamWorkspace workspace(plan->workspace_bytes(), stream);
  plan->launch(q, k, v, out, lse ? static_cast<float*>(lse->data) : nullptr, workspace.get(), stream, packing);
}

void DilatedAttention::Impl::backward(const BackwardTensors& t, const TensorView& lse, Stream stream,
                                      const PackedSequences* packing) {
  const Problem p = validate_backward(config, t.q, t.k, t.v, t.dout, t.dq, t.dk, t.dv);
  validate(config, t.q, t.k, t.v, t.out, &lse);
  validate_backward_for_gpu(p, t.q, t.k, t.v, t.out, lse, t.dout, t.dq, t.dk, t.dv);
  const CUcontext context = driver::current_context();
  if (packing) check_packing(t.q, *packing);
  const Signature signature{context, p.batch, p.seq_len, p.heads, p.kv_heads, p.head_dim, t.q.dtype, false};
  const BackwardPlan* plan;
  {
    std::lock_guard lock(mutex);
    auto& slot = backward_plans[signature];
    if (!slot) slot = std::make_unique<BackwardPlan>(config, p, t.q.dtype);
    plan = slot.get();
  }
  const StreamWorkspace workspace(plan->workspace_bytes(), stream);
  plan->launch(t, workspace.get(), stream, packing);
}

}  // namespace dilatron
