// KernelSpec: everything that changes a kernel's code, as a plain value. Its canonical string names the
// kernel in the cache, in logs and in `dilatron cache ls`. Sizes that do not change the code (B, N, H)
// are kernel arguments and never appear here.
#pragma once

#include <dilatron/config.hpp>
#include <dilatron/tensor.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dilatron::codegen {

enum class Op {
  pack_rows,                // gather one branch's selected rows into a dense buffer
  unpack_rows,              // scatter them back
  merge_partials,           // fold a second (O, LSE) partial result into the first
  clear_output,             // O = 0, LSE = -inf, before launches that merge into them
  finish_output,            // an fp32 accumulator rounded to O (and LSE copied): after several branches or ring steps
  attention_forward,        // one branch's attention, writing O and LSE
  attention_partial,        // one branch's attention into the fp32 accumulator and LSE (the first of several)
  attention_partial_merge,  // one branch's attention folded into the fp32 accumulator and LSE already there
  attention_block,          // the ring: a rank's queries of one segment to a received block, folded in likewise
  ring_pack,                // the ring: one part of a block into the send buffer
  gradient_prepare,         // backward: delta = dO . O per row
  attention_backward,       // backward: one branch's dQ, dK, dV added to fp32 accumulators
  attention_block_backward, // the ring's backward: attention_block's dQ, and the block's dK, dV into its partial
  ring_unpack_add,          // the ring's backward: a block's fp32 dK, dV from a peer added to the owner's
  decode_partial,           // decoding: one branch's keys of new rows, split across CTAs, into fp32 partials
  decode_combine,           // decoding: every partial of a new row merged into O and LSE
  decode_append,            // decoding: the new rows later rows can read, into the KV cache's blocks
};

std::string_view to_string(Op op) noexcept;

struct BranchSpec {
  std::int64_t w, r;
  bool operator==(const BranchSpec&) const = default;
};

// Launch shape. Row-moving kernels use only `warps`; attention kernels use all four, with block_m =
// 16 * warps or 32 * warps (each warp owns one or two 16-row MMA fragments of query rows). The backward
// kernel's CTA owns block_n = 16 * warps key rows and streams query tiles of block_m rows.
struct Tiles {
  int block_m = 0, block_n = 0, warps = 4, stages = 0;
  int warp_rows() const { return warps > 0 ? block_m / warps : 0; }
  bool operator==(const Tiles&) const = default;
};

struct KernelSpec {
  Op op = Op::merge_partials;
  DType dtype = DType::bf16;
  int head_dim = 128;
  std::vector<BranchSpec> branches;  // pack/unpack/attention: the one branch; merge/clear/ring: empty
  // Branch kernels in head_groups mode: the group (= branch index) served and the number of groups,
  // which decide which heads take part. longnet offsets need neither: always 0 and 1 there.
  int group = 0, groups = 1;
  bool causal = false;
  Mode mode = Mode::longnet;
  Tiles tiles;
  std::string arch = "sm_90a";  // sm_XY or sm_XYa

  // Stable text form: field order and spelling never change without a cache format bump.
  std::string canonical() const;
  // The spec whose canonical() is exactly `text` (as `dilatron cache ls --specs` prints it); throws
  // dilatron::Error naming the first field that does not read back. Not validated: call validate().
  static KernelSpec parse(std::string_view text);
  // A human name showing every field that changes the binary, e.g.
  // "attention_forward bf16 d128 w2048 r1 causal tile 64x64 4w 2s sm_90a" (w: warps, s: stages).
  std::string label() const;
  // Dynamic shared memory a launch needs (0 for kernels with none).
  int shared_bytes() const;
  // Throws dilatron::Error naming the field. Fields an op ignores must hold their defaults, so one
  // kernel has exactly one spec (and one cache entry).
  void validate() const;

  bool operator==(const KernelSpec&) const = default;
};

// "sm_90a" -> 90; throws dilatron::Error for anything that is not sm_<digits>[a].
int arch_number(std::string_view arch);

// Shared memory one block may use on an arch (sm_80/87: 163 KiB, sm_90-sm_11x: 227 KiB, else 99 KiB).
int max_shared_bytes(int arch_number);

// The forward attention kernels (attention_forward, the two partial ops and attention_block).
bool is_attention(Op op);
// The backward pass's attention kernels, attention_backward and attention_block_backward (tiles and
// shared memory like the attention kernels, their own rules).
bool is_backward_attention(Op op);
// Either kind: the kernels of one branch that take tiles and may be causal.
bool is_tiled_attention(Op op);
// The ring's attention on a received block (attention_block and its backward): never causal.
bool is_block_attention(Op op);
// The decode step's branch kernel: one branch, keys per CTA in tiles.block_n, 4 warps.
bool is_decode_branch(Op op);

}  // namespace dilatron::codegen
