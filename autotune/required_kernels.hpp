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
  bool decode = false;    // and the decode step's (a DilatedKVCache on the GPU)
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

// The GPU ring executor's kernels, whatever the plan (rows, segments and blocks are launch arguments),
// in this order: ring_pack, finish_output and clear_output on its fp32 accumulator; then per branch
// attention_partial_merge (a rank's own rows, step 0) and per branch attention_block (a received block),
// both folding into that accumulator.
std::vector<codegen::KernelSpec> ring_kernels(const Workload& workload);

// The ring's backward, in this order: gradient_prepare (delta = dO . O) and ring_unpack_add for the dK
// and dV that come back (fp32); then per branch attention_backward (step 0) and per branch
// attention_block_backward (a received block's dQ, and its dK and dV into the block's partial).
std::vector<codegen::KernelSpec> ring_backward_kernels(const Workload& workload);

// A DilatedKVCache's decode step on the GPU, in this order: decode_partial per branch (each new row's
// keys split across CTAs), decode_combine, decode_append.
std::vector<codegen::KernelSpec> decode_kernels(const Workload& workload);

// Distinct specs: the forward kernels, their tuned variants (warm_winners), the backward kernels
// (backward), then (ranks > 1) the ring's, and its backward's with `backward`, then (decode) the
// decode step's. Throws dilatron::Error for a spec that cannot be built.
std::vector<codegen::KernelSpec> required_kernels(const Workload& workload);

}  // namespace dilatron::autotune
