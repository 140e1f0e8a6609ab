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

// attention_forward: one branch of dilated attention over [B, N, H, D] tensors (innermost stride 1,
// rows 16-byte aligned). LSE is float32 [B, H, N], contiguous; merging launches read it as well.
struct AttentionArgs {
  Tensor4 q, k, v, out;
  float* lse;
  i64 batch, seq_len, heads, kv_heads;
  i64 head_begin;    // first query head of this launch (grid y walks heads from here)
  float scale_log2;  // softmax scale * log2(e): scores go straight to the exp2 domain
};

}  // namespace dilatron::args
