// The decode step of a DilatedKVCache (runtime/decode/): n new rows of every batch row attend, branch by
// branch, to the selected rows of their own segment up to themselves, which are the cache's block for
// that (branch, kv head, offset) (rows before the step) and the step's own rows. Flash-decoding: one new
// row has few queries and many keys, so the keys are split across CTAs to fill the GPU.
// - decode_partial, one launch per branch (W, R compile-time): CTA (split, head, b * queries + i) takes KEYS
//   keys of new row i of batch row b and writes one partial (max, sum, unnormalized O) in fp32. A lane
//   scores one key (the whole dot product, its row read in 16-byte pieces, q in shared memory), the
//   warp's 32 weights then scale the 32 V rows, read coalesced, each lane owning D / 32 output dims; the 4
//   warps' results meet in shared memory. CUDA cores, no MMA: a new row is one query.
// - decode_combine merges every split of every branch of a row (the longnet combine is this same LSE
//   merge) into O and LSE; head_groups' O is scaled by 1 / G (out_scale).
// - decode_append writes the new rows later rows can read into their blocks: those of the segment
//   holding the next position, at their selected index. It runs after both others have read the blocks,
//   and sets the batch row's position for the next step in the other position buffer (the host flips
//   between the two), so no kernel reads a position another is changing.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/index.cuh"
#include "dilatron/ptx.cuh"
#include "dilatron/types.cuh"

namespace dilatron {
namespace decode_detail {

typedef long long i64;

__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000); }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int width = 16; width > 0; width /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, width));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int width = 16; width > 0; width /= 2) x += __shfl_xor_sync(0xffffffffu, x, width);
  return x;
}

// Where a new row's keys of one branch are: `cached` block slots, then the step's selected rows of the
// segment from row `first_new` (every R-th) up to the query itself.
struct Keys {
  i64 count, cached, first_new;
};
template <long long W, long long R>
__device__ __forceinline__ Keys keys_of(i64 t, i64 position, i64 offset) {
  const i64 segment = t / W * W;
  const i64 cached = position > segment ? index::selected_count(position - segment, offset, R) : 0;
  const i64 local = (position > segment ? position : segment) - segment;
  const i64 first_new = segment + offset + (local <= offset ? 0 : (local - offset + R - 1) / R) * R;
  return {cached + (t - first_new) / R + 1, cached, first_new};
}

}  // namespace decode_detail

template <class T, int HEAD_DIM, int KEYS, long long W, long long R, int MODE, int GROUP, int GROUPS>
__global__ void __launch_bounds__(128) decode_partial(args::DecodeArgs a) {
  using namespace decode_detail;
  constexpr int kWarps = 4, kDims = HEAD_DIM / 32;  // output dims per lane
  static_assert(HEAD_DIM % 32 == 0 && KEYS % (32 * kWarps) == 0, "whole warps of keys and of dims");
  // Dynamic shared memory (KernelSpec::shared_bytes): q (scaled), then per warp (max, sum) and its O.
  float* const q_row = reinterpret_cast<float*>(ptx::dynamic_shared());
  float(*const warp_stats)[2] = reinterpret_cast<float(*)[2]>(q_row + HEAD_DIM);
  float(*const warp_out)[HEAD_DIM] = reinterpret_cast<float(*)[HEAD_DIM]>(q_row + HEAD_DIM + 2 * kWarps);

  const i64 z = blockIdx.z, b = z / a.queries, i = a.first_query + z % a.queries, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* const partial = a.partials + ((z * a.heads + h) * a.splits + a.split_base + blockIdx.x) * (2 + HEAD_DIM);
  const i64 position = a.positions[b], t = position + i;
  const i64 offset = index::branch_offset(MODE, h, a.heads, GROUP, GROUPS, R);
  const Keys keys = offset >= 0 && index::is_selected(t, W, offset, R) ? keys_of<W, R>(t, position, offset) : Keys{0, 0, 0};
  const i64 begin = static_cast<i64>(blockIdx.x) * KEYS, end = index::min64(begin + KEYS, keys.count);
  if (begin >= end) {  // no keys here: an empty partial, which the combine skips
    if (threadIdx.x == 0) partial[0] = negative_infinity(), partial[1] = 0.f;
    return;
  }

  const i64 g = index::kv_head(h, a.heads, a.kv_heads);
  const T* cached_k = reinterpret_cast<const T*>(static_cast<const char*>(a.cache) + b * a.row_bytes + a.blocks[g * R + offset]);
  const T* cached_v = cached_k + index::selected_count(W, offset, R) * HEAD_DIM;
  const T* new_k = static_cast<const T*>(a.k.data) + b * a.k.stride[0] + g * a.k.stride[2];
  const T* new_v = static_cast<const T*>(a.v.data) + b * a.v.stride[0] + g * a.v.stride[2];
  // Key j's row: a block slot, or a row of this step.
  const auto row_of = [&](const T* cached, const T* fresh, i64 stride, i64 j) {
    return j < keys.cached ? cached + j * HEAD_DIM : fresh + (keys.first_new + (j - keys.cached) * R - position) * stride;
  };

  const T* q = static_cast<const T*>(a.q.data) + b * a.q.stride[0] + i * a.q.stride[1] + h * a.q.stride[2];
  for (int d = threadIdx.x; d < HEAD_DIM; d += 32 * kWarps) q_row[d] = to_float(q[d]) * a.scale;
  __syncthreads();

  float m = negative_infinity(), l = 0.f, o[kDims] = {};
  for (i64 base = begin + warp * 32; base < end; base += 32 * kWarps) {
    const i64 j = base + lane;
    float s = negative_infinity();
    if (j < end) {  // the key's row in 16-byte pieces (rows are 16-byte aligned: cache blocks and GPU layouts)
      const uint4* key = reinterpret_cast<const uint4*>(row_of(cached_k, new_k, a.k.stride[1], j));
      s = 0.f;
#pragma unroll 4
      for (int c = 0; c < HEAD_DIM / 8; ++c) {
        const uint4 piece = key[c];
        const T* e = reinterpret_cast<const T*>(&piece);
#pragma unroll
        for (int x = 0; x < 8; ++x) s += q_row[8 * c + x] * to_float(e[x]);
      }
    }
    const float m_new = fmaxf(m, warp_max(s));  // finite: key `base` exists
    const float correction = expf(m - m_new), p = j < end ? expf(s - m_new) : 0.f;
    l = l * correction + warp_sum(p);
#pragma unroll
    for (int c = 0; c < kDims; ++c) o[c] *= correction;
    const int valid = static_cast<int>(index::min64(32, end - base));
    for (int k = 0; k < valid; ++k) {
      const float weight = __shfl_sync(0xffffffffu, p, k);
      const T* value = row_of(cached_v, new_v, a.v.stride[1], base + k);
#pragma unroll
      for (int c = 0; c < kDims; ++c) o[c] += weight * to_float(value[lane + 32 * c]);
    }
    m = m_new;
  }

  if (lane == 0) warp_stats[warp][0] = m, warp_stats[warp][1] = l;
#pragma unroll
  for (int c = 0; c < kDims; ++c) warp_out[warp][lane + 32 * c] = o[c];
  __syncthreads();
  float top = negative_infinity();
#pragma unroll
  for (int w = 0; w < kWarps; ++w) top = fmaxf(top, warp_stats[w][0]);
  float weight[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) weight[w] = warp_stats[w][0] == negative_infinity() ? 0.f : expf(warp_stats[w][0] - top);
  for (int d = threadIdx.x; d < HEAD_DIM; d += 32 * kWarps) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += weight[w] * warp_out[w][d];
    partial[2 + d] = sum;
  }
  if (threadIdx.x == 0) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sum += weight[w] * warp_stats[w][1];
    partial[0] = top, partial[1] = sum;
  }
}

// One warp per new row and head, warps striding over them.
template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) decode_combine(args::DecodeCombineArgs a) {
  using namespace decode_detail;
  const int lane = threadIdx.x % 32;
  const i64 rows = a.batch * a.queries * a.heads;
  for (i64 row = blockIdx.x * static_cast<i64>(THREADS / 32) + threadIdx.x / 32; row < rows;
       row += static_cast<i64>(gridDim.x) * (THREADS / 32)) {
    const i64 h = row % a.heads, i = a.first_query + row / a.heads % a.queries, b = row / (a.heads * a.queries);
    const float* p = a.partials + row * a.splits * (2 + HEAD_DIM);
    float top = negative_infinity();
    for (i64 s = 0; s < a.splits; ++s) top = fmaxf(top, p[s * (2 + HEAD_DIM)]);
    float sum = 0.f;
    for (i64 s = 0; s < a.splits; ++s) {
      const float m = p[s * (2 + HEAD_DIM)];
      if (m != negative_infinity()) sum += expf(m - top) * p[s * (2 + HEAD_DIM) + 1];
    }
    T* out = static_cast<T*>(a.out.data) + b * a.out.stride[0] + i * a.out.stride[1] + h * a.out.stride[2];
    const float scale = sum > 0.f ? a.out_scale / sum : 0.f;  // a row no branch selects: O = 0
    for (int d = lane; d < HEAD_DIM; d += 32) {
      float o = 0.f;
      for (i64 s = 0; s < a.splits; ++s) {
        const float m = p[s * (2 + HEAD_DIM)];
        if (m != negative_infinity()) o += expf(m - top) * p[s * (2 + HEAD_DIM) + 2 + d];
      }
      out[d] = from_float<T>(o * scale);
    }
    if (a.lse && lane == 0) a.lse[(b * a.heads + h) * a.rows + i] = sum > 0.f ? top + logf(sum) : negative_infinity();
  }
}

// Element d of new row i of batch row b for block `e`, strided over the grid; then each batch row's
// next position.
template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) decode_append(args::DecodeAppendArgs a) {
  using decode_detail::i64;
  const i64 items = a.batch * a.rows * a.blocks * HEAD_DIM;
  for (i64 item = blockIdx.x * static_cast<i64>(THREADS) + threadIdx.x; item < items;
       item += static_cast<i64>(gridDim.x) * THREADS) {
    const i64 d = item % HEAD_DIM, e = item / HEAD_DIM % a.blocks, i = item / (HEAD_DIM * a.blocks) % a.rows,
              b = item / (HEAD_DIM * a.blocks * a.rows);
    const i64* block = a.table + 6 * e;  // w, r, offset, kv head, K and V byte offsets
    const i64 w = block[0], r = block[1], offset = block[2], position = a.positions[b], t = position + i;
    if (item % (HEAD_DIM * a.blocks * a.rows) == 0) a.next_positions[b] = position + a.rows;
    const i64 segment = (position + a.rows) / w * w;  // the segment holding the next position
    if (t < segment || !index::is_selected(t, w, offset, r)) continue;
    const i64 slot = (t - segment - offset) / r;
    char* row = static_cast<char*>(a.cache) + b * a.row_bytes;
    const i64 at = i * a.k.stride[1] + block[3] * a.k.stride[2] + b * a.k.stride[0] + d;
    reinterpret_cast<T*>(row + block[4])[slot * HEAD_DIM + d] = static_cast<const T*>(a.k.data)[at];
    reinterpret_cast<T*>(row + block[5])[slot * HEAD_DIM + d] =
        static_cast<const T*>(a.v.data)[i * a.v.stride[1] + block[3] * a.v.stride[2] + b * a.v.stride[0] + d];
  }
}

}  // namespace dilatron
