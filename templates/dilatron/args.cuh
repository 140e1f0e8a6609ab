// Kernel parameter blocks. Every kernel takes one of these by value, so the host fills the same struct
// it passes to cuLaunchKernel and an explicit instantiation needs no long signature. Compiled by the
// host compiler and NVRTC alike: plain types, no headers.
#pragma once

namespace dilatron::args {

typedef long long i64;

// A 4-D tensor: element strides, innermost (D) contiguous.
struct Tensor4 {
  void* data;
  i64 stride[4];
};

// pack_rows / unpack_rows: the rows of [row_begin, row_end) that one branch selects for each query head,
// moved between a [B, N, heads_of_tensor, D] tensor and a packed [B, H, rows_per_head, D] buffer.
struct PackArgs {
  Tensor4 tensor;     // pack: K or V (kv heads); unpack: a [B, N, H, D] tensor
  void* packed;       // [B, H, rows_per_head, D], contiguous
  i64 batch, heads;   // H: query heads, which decide offsets
  i64 kv_heads;       // heads of `tensor` when packing (GQA); H when unpacking
  i64 row_begin, row_end;
  i64 rows_per_head;  // capacity of the packed buffer per (b, h)
};

// merge_partials: (out, lse) <- merge of (out, lse) and (other_out, other_lse), per row.
struct MergeArgs {
  Tensor4 out;             // [B, N, H, D], updated in place
  Tensor4 other_out;       // [B, N, H, D]
  float* lse;              // [B, H, N], updated in place
  const float* other_lse;  // [B, H, N]
  i64 batch, seq_len, heads;
};

// What an attention launch does with its result (a template argument of attention_forward):
// - kWriteOutput: O in the input dtype and LSE (a single branch, or head_groups' one branch per row);
// - kWriteAccumulator: the fp32 accumulator and LSE (the first of several branches; it covers every row);
// - kMergeAccumulator: folded into the fp32 accumulator and LSE already there (the other branches).
// finish_output then rounds the accumulator to O once.
enum AttentionEpilogue { kWriteOutput = 0, kWriteAccumulator = 1, kMergeAccumulator = 2 };

// attention_forward: one branch of dilated attention over [B, N, H, D] tensors (innermost stride 1,
// rows 16-byte aligned). LSE is float32 [B, H, N], contiguous; merging launches read it as well.
struct AttentionArgs {
  Tensor4 q, k, v, out;
  float* acc;  // fp32 [B, N, H, D], contiguous: the accumulator of multi-branch launches (null otherwise)
  float* lse;
  i64 batch, seq_len, heads, kv_heads;
  i64 head_begin;    // first query head of this launch (grid y walks heads from here)
  float scale_log2;  // softmax scale * log2(e): scores go straight to the exp2 domain
  i64 origin;        // the sequence row of the tensors' row 0: 0, or a ring rank's first row (index.cuh)
  // A ring block (attention_forward's PACKED_KEYS): the queries are the view's rows of one segment, the
  // `block_segment`-th counted from the view's first, and the keys the `block_keys` rows of a received
  // block, every one visible; k and v address key j as row j. Unused otherwise.
  i64 block_segment, block_keys;
  // A packed batch: B = 1 and seq_len the packing's rows; grid z walks its sequences (index.cuh,
  // sequence_rows). Null otherwise.
  const int* cu_seqlens;
};

// gradient_prepare: delta[b, h, n] = dO . O per row, the backward pass's only use of O.
struct GradientPrepareArgs {
  Tensor4 out, dout;  // [B, N, H, D]
  float* delta;       // [B, H, N], contiguous
  i64 batch, seq_len, heads;
};

// attention_backward: one branch's gradients added to fp32 accumulators (then rounded by finish_output).
struct AttentionBackwardArgs {
  Tensor4 q, k, v, dout;
  const float* lse;    // [B, H, N], the forward pass's final LSE (natural log)
  const float* delta;  // [B, H, N], from gradient_prepare
  float* dq_acc;       // [B, N, H, D], contiguous
  float* dk_acc;       // [B, N, Hkv, D], contiguous
  float* dv_acc;       // [B, N, Hkv, D], contiguous
  i64 batch, seq_len, heads, kv_heads;
  i64 head_begin;
  float scale_log2;  // softmax scale * log2(e)
  float scale;       // softmax scale
  i64 origin;        // as AttentionArgs::origin
  // As AttentionArgs (attention_backward's PACKED_KEYS): dk_acc and dv_acc then address key j's dK and
  // dV row at (b * block_keys + j) * 2 * D, the block's fp32 partial in its packed layout.
  i64 block_segment, block_keys;
  const int* cu_seqlens;  // as AttentionArgs::cu_seqlens
};

// The ring's kernels (ring.cuh) on one rank's shard of rows [rows_begin, rows_begin + rows).

// ring_pack: one part of a Block (runtime/ring/plan.hpp) into the send buffer: for each batch element,
// for each selected row first_row + j * r (j < count), the K row of kv head `kv_head`, then its V row.
// ring_unpack_add, the backward's return leg, reads the same layout in fp32 (a block's dK and dV back
// from a peer) and adds it into k and v, the owner's fp32 dK and dV accumulators. The tiled kernels
// attend a received block in place (AttentionArgs::block_keys).
struct RingPackArgs {
  Tensor4 k, v;  // the shard [B, rows, Hkv, D]
  void* packed;  // the part's first element in the send buffer
  i64 batch, rows_begin, kv_head, first_row, count, r;
};

// finish_output: out = O_acc * out_scale in the output dtype, and lse = LSE_acc when lse is not null
// (the ring's last step, and the forward pass after several branches accumulated in fp32).
struct FinishArgs {
  Tensor4 out;  // [B, rows, H, D]
  Tensor4 lse;  // [B, H, rows] (strides of dims 0-2; a rank's slice of a whole [B, H, N] works), data null for none
  const float* o_acc;
  const float* lse_acc;
  i64 batch, rows, heads;
  float out_scale;
};

// The decode step of a DilatedKVCache on the device (decode.cuh; runtime/decode/): B batch rows of n new
// rows each, batch row b at positions[b] + 0 .. n - 1.
// The cache: B rows of row_bytes each, per (branch, kv head, offset) a block of K slots then V slots
// (runtime/decode/cache_layout.hpp).
struct DecodeArgs {
  Tensor4 q, k, v;             // [B, n, H, D] and [B, n, Hkv, D]: the new rows
  const void* cache;
  const i64* blocks;           // decode_partial: this branch's K byte offsets, [kv head * R + offset] (-1: none)
  const i64* positions;        // [B]: rows each batch row had before this step
  float* partials;             // [B * queries * H][splits][2 + D]: (max, sum, unnormalized O) per split
  i64 batch, heads, kv_heads;
  i64 first_query, queries;    // the launch's new rows: first_query .. + queries of the step's n
  i64 row_bytes;
  i64 split_base, splits;      // this branch's first split and the splits of all branches
  float scale;                 // softmax scale (natural log domain)
};

// decode_combine: every split of every branch of a new row merged into O (times out_scale) and LSE.
struct DecodeCombineArgs {
  const float* partials;
  Tensor4 out;  // [B, n, H, D]
  float* lse;   // [B, H, n], or null
  i64 batch, rows, heads, splits;  // rows: the step's n
  i64 first_query, queries;        // as DecodeArgs
  float out_scale;
};

// decode_append: the new rows every later row can read, into their blocks. A block's entry in `table`:
// {w, r, offset, kv head, K byte offset, V byte offset}.
struct DecodeAppendArgs {
  Tensor4 k, v;  // [B, n, Hkv, D]
  void* cache;
  const i64* table;
  const i64* positions;  // [B] before this step
  i64* next_positions;   // [B] after it: positions + n (the other of the cache's two position buffers)
  i64 batch, rows, blocks, row_bytes;
};

}  // namespace dilatron::args
