// The one answer to "which kernels does this configuration need": the runtime builds its launch plan
// from it and `dilatron cache warm` pre-compiles it, so a warmed cache holds exactly what a run loads.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autotune/policy.hpp"
#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

struct Workload {
  Config config;
  DType dtype = DType::bf16;
  int head_dim = 128;
  std::string arch = "sm_90a";
  int ranks = 1;  // > 1: the ring's kernels too
  bool backward = false;  // required_kernels() lists the backward pass's kernels too
  // Attention tiles: the database's winner for this GPU and length (the runtime's plans), else the
  // heuristic.
  std::optional<TunedFor> tuned;
  // For `cache warm`: required_kernels() also lists every winner this database holds for the attention
  // kernels, whatever GPU and length it was tuned for.
  std::shared_ptr<const TuningDb> warm_winners;
};

// The forward pass's launches in order, tiles chosen by the policy:
// - longnet with several branches: the (O, LSE) of all branches meet in an fp32 accumulator and are
//   rounded to O once. A branch with r = 1 selects every row, so it runs first and writes the
//   accumulator (attention_partial); without one, clear_output<float> empties it. Every other branch
//   folds in (attention_partial_merge), then finish_output writes O.
// - one branch per row (longnet with one branch, head_groups): clear_output when some rows are not
//   selected, then attention_forward per branch writes O and LSE directly.
std::vector<codegen::KernelSpec> forward_kernels(const Workload& workload);

// The backward pass's launches in order: gradient_prepare (delta = dO . O), one attention_backward per
// branch (longnet) or group (head_groups) adding to fp32 dQ, dK and dV accumulators, and finish_output,
// which rounds each of the three to its tensor (one spec serves all three: heads are an argument).
std::vector<codegen::KernelSpec> backward_kernels(const Workload& workload);

// A ring rank's own rows (step 0) on the tiled forward kernels: attention_partial_merge per branch, each
// merging its (O, LSE) into the rank's fp32 accumulator, which the later steps merge into too. Head dims
// 64, 96, 128 and 256 (others attend on ring_attend).
std::vector<codegen::KernelSpec> ring_local_kernels(const Workload& workload);
constexpr bool tiled_ring_head_dim(int d) { return d == 64 || d == 96 || d == 128 || d == 256; }
// Its backward: attention_backward per branch into the rank's fp32 dQ, dK and dV (head dims 64, 96 and
// 128; others take ring_attend_backward).
std::vector<codegen::KernelSpec> ring_local_backward_kernels(const Workload& workload);
constexpr bool tiled_ring_backward_head_dim(int d) { return d == 64 || d == 96 || d == 128; }

// The GPU ring executor's kernels, whatever the plan (branch, offsets and rows are launch arguments):
// ring_pack, ring_attend, finish_output, and clear_output on its fp32 accumulator.
std::vector<codegen::KernelSpec> ring_kernels(DType dtype, int head_dim, const std::string& arch);

// The ring's backward adds: gradient_prepare (delta = dO . O), ring_attend_backward, and ring_unpack_add
// for the dK and dV that come back (fp32).
std::vector<codegen::KernelSpec> ring_backward_kernels(DType dtype, int head_dim, const std::string& arch);

// Distinct specs: the forward kernels, their tuned variants (warm_winners), the backward kernels
// (backward), then (ranks > 1) the ring's, and its backward's with `backward`. Throws dilatron::Error for a spec that cannot be built.
std::vector<codegen::KernelSpec> required_kernels(const Workload& workload);

}  // namespace dilatron::autotune
