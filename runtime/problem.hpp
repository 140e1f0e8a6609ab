// Validation shared by the C++ API, the C ABI and the CLI: every error names the offending value, and
// nothing is computed or written until a call has passed it.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/dilatron.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dilatron {

// The sizes of one call, read off validated tensors.
struct Problem {
  std::int64_t batch, seq_len, heads, kv_heads, head_dim;
  double scale;  // resolved: the config's, or 1/sqrt(head_dim)
};

void validate_config(const Config& config);

// Checks the config and the tensors against each other: q [B,N,H,D], k and v [B,N,Hkv,D] sharing q's
// dtype, out [B,N,H,D] (any dtype), lse float32 [B,H,N,1]. Throws dilatron::Error.
Problem validate(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView* lse);

// validate() for a backward pass: dout and dq shaped like q, dk and dv like k (any dtype each). Throws
// dilatron::Error naming the tensor.
Problem validate_backward(const Config& config, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv);

// The layout the GPU kernels read and write: innermost stride 1, the others multiples of 8 elements,
// data 16-byte aligned. layout_problem says what is wrong (empty: nothing); check_layout throws
// dilatron::Error naming `name`.
std::string layout_problem(const TensorView& t);
void check_layout(const char* name, const TensorView& t);

// The checks a GPU forward adds to validate(): dtype, head dim, non-negative strides, layout, alignment,
// neither output (out, lse) overlapping an input or the other. Throws dilatron::Error.
void validate_for_gpu(const Problem& problem, const TensorView& q, const TensorView& k, const TensorView& v,
                      const TensorView& out, const TensorView* lse);

// validate_for_gpu less its dtype and head-dim rules, for kernels with rules of their own (the decode
// step): non-negative strides, the GPU layout of q, k, v and out, lse contiguous, and neither output
// overlapping an input or the other. Throws dilatron::Error.
void validate_gpu_layout(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                         const TensorView* lse);

// The checks a GPU backward adds to validate_backward(): the forward tensors as validate_for_gpu checks
// them (lse required, the forward's), head dim 64, 96 or 128, dout, dq, dk and dv in q's dtype with the
// GPU layout, and no gradient overlapping an input or another gradient. Throws dilatron::Error.
void validate_backward_for_gpu(const Problem& problem, const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& out, const TensorView& lse, const TensorView& dout,
                               const TensorView& dq, const TensorView& dk, const TensorView& dv);

// validate_backward_for_gpu for a backward that takes no O or LSE (the ring recomputes them): q, k and
// v as validate_for_gpu checks them, and the same checks of dout, dq, dk and dv.
void validate_gradients_for_gpu(const Problem& problem, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv);

// The host-side checks of a packed GPU call (the offsets themselves are device memory: the kernels guard
// them, index.cuh's sequence_rows): B = 1, 1 to kMaxPackedSequences sequences (grid z), max_seqlen in
// [0, total], cu_seqlens set and aligned. Throws dilatron::Error.
constexpr std::int64_t kMaxPackedSequences = 65535;
void validate_sequence_count(std::int64_t sequences);
void validate_packing(const TensorView& q, const PackedSequences& packing);
// Its first check: q has one batch element.
void validate_packed_batch(const TensorView& q);
// Every check of a packing whose offsets are host memory: B = 1, then the offsets (validate_cu_seqlens
// against q's rows), then validate_packing's.
void validate_host_packing(const TensorView& q, std::span<const std::int32_t> cu_seqlens);

// One branch as seen by one head: its segment length, dilation and the head's offset in it.
struct HeadBranch {
  std::int64_t w, r, offset;
  int index;  // the branch's position in the config
};

// The branches head h (of `heads`) takes part in: every branch in longnet mode, its group's branch in
// head_groups mode. The config must be valid.
std::vector<HeadBranch> head_branches(const Config& config, std::int64_t h, std::int64_t heads);

// What O is multiplied by after the branches combine: 1/G in head_groups mode (the average over the G
// branches), 1 in longnet mode.
double output_scale(const Config& config);

// Query-key pairs attended for one batch element over all heads (causal pairs counted once), in every
// branch or (branch >= 0) in that one. The FLOP count of a forward pass is 4 * D * B * attended_pairs.
std::int64_t attended_pairs(const Config& config, std::int64_t seq_len, std::int64_t heads, int branch = -1);
// The same summed over a packed batch's sequences (valid offsets).
std::int64_t attended_pairs(const Config& config, std::span<const std::int32_t> cu_seqlens, std::int64_t heads);

}  // namespace dilatron
