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
};

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
  const Problem p = validate(impl_->config, q, k, v, out, lse);
  validate_for_gpu(p, q, k, v, out, lse);
  const Impl::Signature signature{driver::current_context(), p.batch, p.seq_len, p.heads, p.kv_heads, p.head_dim, q.dtype,
                                  lse == nullptr};
  const ForwardPlan* plan;
  {
    std::lock_guard lock(impl_->mutex);
    auto& slot = impl_->plans[signature];
    if (!slot) slot = std::make_unique<ForwardPlan>(impl_->config, p, q.dtype, lse == nullptr);
    plan = slot.get();
  }
  // Freed (stream-ordered) when this scope ends, after the launches are queued.
  const StreamWorkspace workspace(plan->workspace_bytes(), stream);
  plan->launch(q, k, v, out, lse ? static_cast<float*>(lse->data) : nullptr, workspace.get(), stream);
}

void DilatedAttention::backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                                const TensorView& lse, const TensorView& dout, const TensorView& dq,
                                const TensorView& dk, const TensorView& dv, Stream stream) {
  const Problem p = validate_backward(impl_->config, q, k, v, dout, dq, dk, dv);
  validate(impl_->config, q, k, v, out, &lse);
  validate_backward_for_gpu(p, q, k, v, out, lse, dout, dq, dk, dv);
  const Impl::Signature signature{driver::current_context(), p.batch, p.seq_len, p.heads, p.kv_heads, p.head_dim, q.dtype,
                                  false};
  const BackwardPlan* plan;
  {
    std::lock_guard lock(impl_->mutex);
    auto& slot = impl_->backward_plans[signature];
    if (!slot) slot = std::make_unique<BackwardPlan>(impl_->config, p, q.dtype);
    plan = slot.get();
  }
  const StreamWorkspace workspace(plan->workspace_bytes(), stream);
  plan->launch({q, k, v, out, dout, dq, dk, dv, static_cast<const float*>(lse.data)}, workspace.get(), stream);
}

}  // namespace dilatron
