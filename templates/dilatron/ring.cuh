// The ring executor's kernels on one rank (runtime/ring/device_executor.cpp). Plain CUDA cores in fp32:
// the ring's correctness on device comes first, speed later.
// - ring_pack copies one part of a Block into the send buffer in plan.hpp's packed layout.
// - ring_attend: one warp per query row walks its keys with the online (max, sum) softmax in the exp2
//   domain, then folds the partial (O, LSE) into the fp32 accumulator with the overflow-safe LSE merge.
//   A query row belongs to exactly one warp of a launch, and launches run in stream order, so the
//   read-modify-write of the accumulator needs no atomics.
// The accumulator is cleared by clear_output<float> and written out by finish_output (merge.cuh).
// The backward pass (device_ring_backward):
// - ring_attend_backward: the same launches again, one warp per query row, against the final LSE and
//   delta = dO . O: dQ into the row's fp32 accumulator (owned by the warp, as above), dK and dV with
//   atomics (every query row of the segment, and every head of a kv head, reads the same keys).
// - ring_unpack_add: a block's fp32 dK and dV, returned by the rank that attended to it, added to the
//   owner's accumulators; a part's rows are distinct, and launches run in stream order.
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
__device__ __forceinline__ T* at(const args::Tensor4& t, i64 b, i64 row, i64 head) {
  return static_cast<T*>(t.data) + b * t.stride[0] + row * t.stride[1] + head * t.stride[2];
}

// Calls f(b, shard slot, the packed row's first element, d) for every element d of every row of one
// packed part, strided over the grid: ring_pack and ring_unpack_add walk a part alike.
template <int HEAD_DIM, int THREADS, class F>
__device__ __forceinline__ void for_each_packed(const args::RingPackArgs& a, F f) {
  const i64 items = a.batch * a.count * HEAD_DIM;
  for (i64 i = blockIdx.x * static_cast<i64>(THREADS) + threadIdx.x; i < items; i += static_cast<i64>(gridDim.x) * THREADS) {
    const i64 d = i % HEAD_DIM, j = i / HEAD_DIM % a.count, b = i / (HEAD_DIM * a.count);
    f(b, a.first_row + j * a.r - a.rows_begin, (b * a.count + j) * 2 * HEAD_DIM, d);
  }
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) x += __shfl_xor_sync(0xffffffffu, x, mask);
  return x;
}

// One query row of a ring_attend launch with at least one visible key: its head, kv head and shard slot,
// and its keys, key j at position key_base + j * key_step of a.k / a.v.
struct QueryRow {
  i64 b, h, kv_head, slot, visible, key_base, key_step;
};

// Calls f(QueryRow) for every query row of the launch that sees a key, one warp per row.
template <int THREADS, class F>
__device__ __forceinline__ void for_each_query_row(const args::RingAttendArgs& a, F f) {
  const i64 h = a.head_begin + blockIdx.y, b = blockIdx.z;
  const bool local = a.key_count < 0;
  // Received parts hold one kv head at stride 0; the shard's kv head follows the query head.
  const i64 kv_head = index::kv_head(h, a.heads, a.kv_heads);
  const i64 before = index::selected_before(a.q_begin, a.w, a.offset, a.r);
  const i64 queries = index::selected_in(a.q_begin, a.q_end, a.w, a.offset, a.r).count;
  for (i64 i = first_warp<THREADS>(); i < queries; i += warp_stride<THREADS>()) {
    const i64 row = index::nth_selected(before + i, a.w, a.offset, a.r);
    const index::RowRun keys = local ? index::segment_keys(row, a.w, a.offset, a.r, a.rows_begin, a.rows_begin + a.rows)
                                     : index::RowRun{a.key_first, a.key_count};
    const i64 visible = index::visible_keys(row, keys.first, keys.count, a.r, a.causal != 0);
    // Nothing to fold: the accumulator keeps what it has.
    if (visible > 0) {
      f(QueryRow{b, h, kv_head, row - a.rows_begin, visible, local ? keys.first - a.rows_begin : 0, local ? a.r : 1});
    }
  }
}

}  // namespace ring_detail

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) ring_pack(args::RingPackArgs a) {
  ring_detail::for_each_packed<HEAD_DIM, THREADS>(a, [&](long long b, long long slot, long long element, long long d) {
    T* packed = static_cast<T*>(a.packed) + element + d;
    packed[0] = ring_detail::at<const T>(a.k, b, slot, a.kv_head)[d];
    packed[HEAD_DIM] = ring_detail::at<const T>(a.v, b, slot, a.kv_head)[d];
  });
}

template <int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) ring_unpack_add(args::RingPackArgs a) {
  ring_detail::for_each_packed<HEAD_DIM, THREADS>(a, [&](long long b, long long slot, long long element, long long d) {
    const float* returned = static_cast<const float*>(a.packed) + element + d;
    ring_detail::at<float>(a.k, b, slot, a.kv_head)[d] += returned[0];
    ring_detail::at<float>(a.v, b, slot, a.kv_head)[d] += returned[HEAD_DIM];
  });
}

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) ring_attend(args::RingAttendArgs a) {
  typedef long long i64;
  constexpr int kPerLane = (HEAD_DIM + 31) / 32;
  const int lane = threadIdx.x % 32;
  ring_detail::for_each_query_row<THREADS>(a, [&](const ring_detail::QueryRow& query) {
    const i64 b = query.b, h = query.h, kv_head = query.kv_head, slot = query.slot;
    float q[kPerLane], o[kPerLane];
    const T* q_row = ring_detail::at<const T>(a.q, b, slot, h);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int d = lane + 32 * c;
      q[c] = d < HEAD_DIM ? to_float(q_row[d]) * a.scale_log2 : 0.f;
      o[c] = 0.f;
    }
    float max_score = -__int_as_float(0x7f800000), sum = 0.f;
    for (i64 j = 0; j < query.visible; ++j) {
      const i64 position = query.key_base + j * query.key_step;
      const T* k_row = ring_detail::at<const T>(a.k, b, position, kv_head);
      const T* v_row = ring_detail::at<const T>(a.v, b, position, kv_head);
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
    const float merged = merge_lse(previous, lse);  // this partial saw a key: -inf only from previous
    const float keep = expf(previous - merged), take = expf(lse - merged) / sum;  // keep = 0 from -inf
    float* acc = a.o_acc + ((b * a.rows + slot) * a.heads + h) * HEAD_DIM;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int d = lane + 32 * c;
      if (d < HEAD_DIM) acc[d] = acc[d] * keep + o[c] * take;
    }
    __syncwarp();  // every lane has read the old LSE before lane 0 replaces it
    if (lane == 0) a.lse_acc[lse_index] = merged;
  });
}

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) ring_attend_backward(args::RingAttendBackwardArgs g) {
  typedef long long i64;
  constexpr int kPerLane = (HEAD_DIM + 31) / 32;
  const args::RingAttendArgs& a = g.attend;
  const int lane = threadIdx.x % 32;
  ring_detail::for_each_query_row<THREADS>(a, [&](const ring_detail::QueryRow& query) {
    const i64 b = query.b, h = query.h, kv_head = query.kv_head, slot = query.slot;
    const i64 stat = (b * a.heads + h) * a.rows + slot;
    const float lse_log2 = a.lse_acc[stat] * 1.4426950408889634f, delta = g.delta[stat];

    float q[kPerLane], dout[kPerLane], dq[kPerLane];
    const T* q_row = ring_detail::at<const T>(a.q, b, slot, h);
    const T* dout_row = ring_detail::at<const T>(g.dout, b, slot, h);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int d = lane + 32 * c;
      q[c] = d < HEAD_DIM ? to_float(q_row[d]) : 0.f;
      dout[c] = d < HEAD_DIM ? to_float(dout_row[d]) * g.out_scale : 0.f;
      dq[c] = 0.f;
    }
    for (i64 j = 0; j < query.visible; ++j) {
      const i64 position = query.key_base + j * query.key_step;
      const T* k_row = ring_detail::at<const T>(a.k, b, position, kv_head);
      const T* v_row = ring_detail::at<const T>(a.v, b, position, kv_head);
      float key[kPerLane], dot = 0.f, dp = 0.f;
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int d = lane + 32 * c;
        key[c] = d < HEAD_DIM ? to_float(k_row[d]) : 0.f;
        dot += q[c] * key[c];
        dp += d < HEAD_DIM ? dout[c] * to_float(v_row[d]) : 0.f;
      }
      const float p = exp2f(ring_detail::warp_sum(dot) * a.scale_log2 - lse_log2);
      const float ds = p * (ring_detail::warp_sum(dp) - delta) * g.scale;
      float* dk_row = ring_detail::at<float>(g.dk, b, position, kv_head);
      float* dv_row = ring_detail::at<float>(g.dv, b, position, kv_head);
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int d = lane + 32 * c;
        if (d >= HEAD_DIM) continue;
        dq[c] += ds * key[c];
        atomicAdd(dk_row + d, ds * q[c]);
        atomicAdd(dv_row + d, p * dout[c]);
      }
    }
    float* acc = g.dq_acc + ((b * a.rows + slot) * a.heads + h) * HEAD_DIM;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int d = lane + 32 * c;
      if (d < HEAD_DIM) acc[d] += dq[c];
    }
  });
}

}  // namespace dilatron
