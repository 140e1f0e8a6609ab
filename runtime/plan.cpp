#include "runtime/plan.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "autotune/required_kernels.hpp"
#include "cache/kernel_cache.hpp"
#include "runtime/driver.hpp"
#include "runtime/modules.hpp"
#include "templates/dilatron/args.cuh"
#include "templates/dilatron/index.cuh"

namespace dilatron {
namespace {

args::Tensor4 tensor4(const TensorView& t) {
  return {t.data, {t.strides[0], t.strides[1], t.strides[2], t.strides[3]}};
}

// Row-wise kernels stride over rows, so their grid is capped; attention grids are exact.
constexpr long long kMaxRowBlocks = 1 << 20;

unsigned checked_grid(long long blocks, long long limit, const char* what, const codegen::KernelSpec& spec) {
  if (blocks > limit) {
    throw Error(fmt::format("{}: {} {} exceed the launch limit of {}", spec.label(), blocks, what, limit));
  }
  return unsigned(blocks);
}

// The bytes a view can touch: [data, data + extent).
std::pair<std::uintptr_t, std::uintptr_t> byte_range(const TensorView& t) {
  std::int64_t last = 0;
  for (int d = 0; d < 4; ++d) last += (t.shape[d] - 1) * t.strides[d];
  const auto begin = reinterpret_cast<std::uintptr_t>(t.data);
  return {begin, begin + std::uintptr_t(last + 1) * dtype_size(t.dtype)};
}

bool overlap(const TensorView& a, const TensorView& b) {
  const auto [a0, a1] = byte_range(a);
  const auto [b0, b1] = byte_range(b);
  return a0 < b1 && b0 < a1;
}

void check_layout(const char* name, const TensorView& t) {
  if (t.strides[3] != 1) throw Error(fmt::format("{}: the GPU path needs the innermost (D) stride to be 1, got {}", name, t.strides[3]));
  for (int d = 0; d < 3; ++d) {
    if (t.strides[d] % 8 != 0) {
      throw Error(fmt::format("{}: stride[{}] = {} is not a multiple of 8 elements (16 bytes)", name, d, t.strides[d]));
    }
  }
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0) throw Error(fmt::format("{}: data is not 16-byte aligned", name));
}

}  // namespace

void validate_for_gpu(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TensorView* lse) {
  if (q.dtype != DType::f16 && q.dtype != DType::bf16) {
    throw Error(fmt::format("the GPU path takes float16 or bfloat16 q/k/v, got {}", to_string(q.dtype)));
  }
  if (out.dtype != q.dtype) throw Error(fmt::format("out is {} but q is {}: they must match on the GPU", to_string(out.dtype), to_string(q.dtype)));
  if (p.head_dim != 64 && p.head_dim != 128) throw Error(fmt::format("head dim {} is not supported by the GPU kernels (64 or 128)", p.head_dim));
  check_layout("q", q);
  check_layout("k", k);
  check_layout("v", v);
  check_layout("out", out);
  for (const auto& [name, input] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
    // Branches write O while later CTAs and launches still read Q, K and V.
    if (overlap(out, *input)) throw Error(fmt::format("out overlaps {}: the GPU forward cannot run in place", name));
  }
  if (lse && lse->strides != TensorView::contiguous(nullptr, DType::f32, lse->shape).strides) {
    throw Error("lse must be contiguous [B,H,N] on the GPU");
  }
}

ForwardPlan::ForwardPlan(const Config& config, const Problem& problem, DType dtype, bool needs_lse_workspace)
    : problem_(problem) {
  autotune::Workload workload{config, dtype, int(problem.head_dim), driver::current_arch(), 1};
  for (codegen::KernelSpec& spec : autotune::forward_kernels(workload)) {
    const auto entry = cache::KernelCache::global().get(spec).entry;
    Launch l{spec, ModuleRegistry::global().function(*entry), {1, 1, 1}, unsigned(spec.tiles.warps * 32),
             unsigned(spec.shared_bytes()), 0};
    if (l.shared_bytes > 48 * 1024) {
      DILATRON_CU(cuFuncSetAttribute(l.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(l.shared_bytes)));
    }
    if (codegen::is_attention(spec.op)) {
      const long long tiles = index::query_tile_count(problem.seq_len, spec.branches[0].w, spec.branches[0].r,
                                                      spec.tiles.block_m);
      long long heads = problem.heads;
      if (spec.mode == Mode::head_groups) {
        l.head_begin = index::head_group_begin(spec.group, problem.heads, spec.groups);
        heads = index::head_group_begin(spec.group + 1, problem.heads, spec.groups) - l.head_begin;
      }
      l.grid[0] = checked_grid(tiles, std::numeric_limits<int>::max(), "query tiles", spec);
      l.grid[1] = checked_grid(heads, 65535, "heads", spec);
      l.grid[2] = checked_grid(problem.batch, 65535, "batch elements", spec);
    } else {  // clear_output: warps stride over (b, n, h) rows
      const long long rows = problem.batch * problem.seq_len * problem.heads;
      l.grid[0] = unsigned(std::min(index::ceil_div(rows, spec.tiles.warps), kMaxRowBlocks));
    }
    launches_.push_back(std::move(l));
  }
  if (needs_lse_workspace) {
    workspace_ = std::make_unique<DeviceBuffer>(std::size_t(problem.batch * problem.heads * problem.seq_len) * sizeof(float));
  }
}

void ForwardPlan::launch(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         float* lse, CUstream stream) const {
  const Problem& p = problem_;
  for (const Launch& l : launches_) {
    args::AttentionArgs attention{tensor4(q), tensor4(k), tensor4(v), tensor4(out), lse, p.batch, p.seq_len, p.heads,
                                  p.kv_heads, l.head_begin, float(p.scale * 1.4426950408889634)};
    args::MergeArgs clear{tensor4(out), tensor4(out), lse, lse, p.batch, p.seq_len, p.heads};
    void* params[] = {codegen::is_attention(l.spec.op) ? static_cast<void*>(&attention) : static_cast<void*>(&clear)};
    DILATRON_CU(cuLaunchKernel(l.function, l.grid[0], l.grid[1], l.grid[2], l.threads, 1, 1, l.shared_bytes, stream,
                               params, nullptr));
  }
}

}  // namespace dilatron
