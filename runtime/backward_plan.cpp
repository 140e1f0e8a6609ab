#include "runtime/backward_plan.hpp"

#include <tuple>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/stream_workspace.hpp"

namespace dilatron {
BackwardPlan::BackwardPlan(const Config& config, const Problem& p, DType dtype) : problem_(p) {
  autotune::Workload workload;
  workload.config = config;
  workload.dtype = dtype;
  workload.head_dim = int(p.head_dim);
  workload.arch = driver::current_arch();
  for (const codegen::KernelSpec& spec : autotune::backward_kernels(workload)) {
    launches_.push_back(prepare_launch(spec, *cache::KernelCache::global().get(spec).entry, p));
  }
  const auto floats = [](std::int64_t n) { return workspace_region(std::size_t(n) * sizeof(float)); };
  dq_offset_ = floats(p.batch * p.heads * p.seq_len);
  dk_offset_ = dq_offset_ + floats(p.batch * p.seq_len * p.heads * p.head_dim);
  dv_offset_ = dk_offset_ + floats(p.batch * p.seq_len * p.kv_heads * p.head_dim);
  workspace_bytes_ = dv_offset_ + floats(p.batch * p.seq_len * p.kv_heads * p.head_dim);
}

void BackwardPlan::launch(const BackwardTensors& t, void* workspace, CUstream stream,
                          const PackedSequences* packing) const {
  const Problem& p = problem_;
  char* base = static_cast<char*>(workspace);
  float* delta = reinterpret_cast<float*>(base);
  float *dq = reinterpret_cast<float*>(base + dq_offset_), *dk = reinterpret_cast<float*>(base + dk_offset_),
        *dv = reinterpret_cast<float*>(base + dv_offset_);
  DILATRON_CU(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(dq), 0, workspace_bytes_ - dq_offset_, stream));
  const float scale = float(p.scale);
  for (const Launch& l : launches_) {
    if (l.spec.op == codegen::Op::gradient_prepare) {
      args::GradientPrepareArgs a{tensor4(t.out), tensor4(t.dout), delta, p.batch, p.seq_len, p.heads};
      enqueue(l, &a, stream);
    } else if (l.spec.op == codegen::Op::attention_backward) {
      args::AttentionBackwardArgs a{tensor4(t.q), tensor4(t.k), tensor4(t.v), tensor4(t.dout), t.lse, delta, dq, dk, dv,
                                    p.batch, p.seq_len, p.heads, p.kv_heads, l.head_begin,
                                    float(p.scale * 1.4426950408889634), scale, 0, 0, 0,
                                    packing ? packing->cu_seqlens : nullptr};
      if (packing) enqueue(l, packed_grid(l, p, *packing), &a, stream);
      else enqueue(l, &a, stream);
    } else {  // finish_output: each accumulator rounded to its gradient
      for (const auto& [to, from, heads] : {std::tuple{&t.dq, dq, p.heads}, std::tuple{&t.dk, dk, p.kv_heads},
                                            std::tuple{&t.dv, dv, p.kv_heads}}) {
        args::FinishArgs a{tensor4(*to), {nullptr, {0, 0, 0, 0}}, from, nullptr, p.batch, p.seq_len, heads, 1.f};
        enqueue(l, &a, stream);
      }
    }
  }
}

}  // namespace dilatron
