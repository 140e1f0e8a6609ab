// The ring executor's kernels on one rank (runtime/ring/device_executor.cpp). Plain CUDA cores in fp32:
// the ring's correctness on device comes first, speed later.
// - ring_pack copies one part of a Block into the send buffer in plan.hpp's packed layout.
// - ring_attend: one warp per query row walks its keys with the online (max, sum) softmax in the exp2
//   domain, then folds the partial (O, LSE) into the fp32 accumulator with the overflow-safe LSE merge.
//   A query row belongs to exactly one warp of a launch, and launches run in stream order, so the
//   read-modify-write of the accumulator needs no atomics.
// The accumulator is cleared by clear_output<float> and written out by finish_output (merge.cuh).
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/index.cuh"
#include "dilatron/types.cuh"

namespace dilatron {
namespace ring_detail {

typedef long long i64;

template <int THREADS>
__device__ __forceinline__ i64 first_warp() {
  static_assert(THREADS % 32 == 0, "one warp per row");
  return blockIdx.x * static_cast<i64>(THREADS / 32) + threadIdx.x / 32;
}
template <int THREADS>
__device__ __forceinline__ i64 warp_stride() {
  return static_cast<i64>(gridDim.x) * (THREADS / 32);
}

template <class T>
__device__ __forceinline__ const T* at(const args::Tensor4& t, i64 b, i64 row, i64 head) {
  return static_cast<const T*>(t.data) + b * t.stride[0] + row * t.stride[1] + head * t.stride[2];
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) x += __shfl_xor_sync(0xffffffffu, x, mask);
  return x;
}

}  // namespace ring_detail

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) ring_pack(args::RingPackArgs a) {
  const long long items = a.batch * a.count * HEAD_DIM;
  for (long long i = blockIdx.x * static_cast<long long>(THREADS) + threadIdx.x; i < items;
       i += static_cast<long long>(gridDim.x) * THREADS) {
    const long long d = i % HEAD_DIM, j = i / HEAD_DIM % a.count, b = i / (HEAD_DIM * a.count);
    const long long row = a.first_row + j * a.r - a.rows_begin;
    T* packed = static_cast<T*>(a.packed) + (b * a.count + j) * 2 * HEAD_DIM + d;
    packed[0] = ring_detail::at<T>(a.k, b, row, a.kv_head)[d];
    packed[HEAD_DIM] = ring_detail::at<T>(a.v, b, row, a.kv_head)[d];
  }
}

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) ring_attend(args::RingAttendArgs a) {
  typedef long long i64;
  constexpr int kPerLane = (HEAD_DIM + 31) / 32;
  const int lane = threadIdx.x % 32;
  const i64 h = a.head_begin + blockIdx.y, b = blockIdx.z;
  const bool local = a.key_count < 0;
  // Received parts hold one kv head at stride 0; the shard's kv head follows the query head.
  const i64 kv_head = index::kv_head(h, a.heads, a.kv_heads);
  const i64 before = index::selected_before(a.q_begin, a.w, a.offset, a.r);
  const i64 queries = index::selected_in(a.q_begin, a.q_end, a.w, a.offset, a.r).count;
  for (i64 i = ring_detail::first_warp<THREADS>(); i < queries; i += ring_detail::warp_stride<THREADS>()) {
    const i64 row = index::nth_selected(before + i, a.w, a.offset, a.r), slot = row - a.rows_begin;
    const index::RowRun keys = local ? index::segment_keys(row, a.w, a.offset, a.r, a.rows_begin, a.rows_begin + a.rows)
                                     : index::RowRun{a.key_first, a.key_count};
    const i64 visible = index::visible_keys(row, keys.first, keys.count, a.r, a.causal != 0);
    if (visible == 0) continue;  // nothing to fold: the accumulator keeps what it has
    const i64 key_base = local ? keys.first - a.rows_begin : 0, key_step = local ? a.r : 1;

    float q[kPerLane], o[kPerLane];
    const T* q_row = ring_detail::at<T>(a.q, b, slot, h);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int d = lane + 32 * c;
      q[c] = d < HEAD_DIM ? to_float(q_row[d]) * a.scale_log2 : 0.f;
      o[c] = 0.f;
    }
    float max_score = -__int_as_float(0x7f800000), sum = 0.f;
    for (i64 j = 0; j < visible; ++j) {
      const i64 position = key_base + j * key_step;
      const T* k_row = ring_detail::at<T>(a.k, b, position, kv_head);
      const T* v_row = ring_detail::at<T>(a.v, b, position, kv_head);
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int d = lane + 32 * c;
        if (d < HEAD_DIM) dot += q[c] * to_float(k_row[d]);
      }
      const float score = ring_detail::warp_sum(dot);
      const float next_max = fmaxf(max_score, score);
      // exp2(-inf) = 0 on the first key: the empty running sums need no special case.
      const float rescale = exp2f(max_score - next_max), p = exp2f(score - next_max);
      sum = sum * rescale + p;
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int d = lane + 32 * c;
        o[c] = o[c] * rescale + (d < HEAD_DIM ? p * to_float(v_row[d]) : 0.f);
      }
      max_score = next_max;
    }

    const float lse = (max_score + log2f(sum)) * 0.6931471805599453f;  // back to the natural log
    const i64 lse_index = (b * a.heads + h) * a.rows + slot;
    const float previous = a.lse_acc[lse_index];
    const float hi = fmaxf(previous, lse), lo = fminf(previous, lse);
    const float merged = hi + log1pf(expf(lo - hi));  // hi is finite: this partial saw a key
    const float keep = expf(previous - merged), take = expf(lse - merged) / sum;  // keep = 0 from -inf
    float* acc = a.o_acc + ((b * a.rows + slot) * a.heads + h) * HEAD_DIM;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int d = lane + 32 * c;
      if (d < HEAD_DIM) acc[d] = acc[d] * keep + o[c] * take;
    }
    __syncwarp();  // every lane has read the old LSE before lane 0 replaces it
    if (lane == 0) a.lse_acc[lse_index] = merged;
  }
}

}  // namespace dilatron
