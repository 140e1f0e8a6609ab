// The ring executor's data movement on one rank (runtime/ring/device_executor.cpp); the attention of
// its steps runs on the tiled kernels (attention.cuh, attention_backward.cuh: PACKED_KEYS reads a
// received block in place).
// - ring_pack copies one part of a Block into the send buffer in plan.hpp's packed layout.
// - ring_unpack_add: a block's fp32 dK and dV, returned by the rank that attended to it, added to the
//   owner's accumulators; a part's rows are distinct, and launches run in stream order.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/types.cuh"

namespace dilatron {
namespace ring_detail {

typedef long long i64;

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

}  // namespace dilatron
