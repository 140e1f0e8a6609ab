// Row-wise kernels over (O, LSE) pairs, one warp per (b, n, h) row at a time (warps stride over rows):
// - merge_partials folds a second partial attention result into the first:
//   LSE = max + log1p(exp(min - max)), O = exp(lse_a - LSE) O_a + exp(lse_b - LSE) O_b. A row with no keys
//   on either side (lse = -inf) stays O = 0, LSE = -inf, with no NaN.
// - clear_output sets O = 0 and LSE = -inf, before branch launches that merge into them (rows no branch
//   selects keep these values); MergeArgs' other_* fields are unused.
// - finish_output rounds an fp32 accumulator [B, rows, H, D] to O (times out_scale) and copies LSE when
//   asked: the one rounding of results accumulated over several branches or ring steps.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/ptx.cuh"
#include "dilatron/types.cuh"

namespace dilatron {
namespace merge_detail {

// One (b, n, h) row. Warps stride over rows, so any number of rows fits a capped grid.
struct WarpRow {
  int lane;
  long long b, n, h, lse_index;
};

template <int THREADS>
__device__ __forceinline__ long long first_row() {
  static_assert(THREADS % 32 == 0, "one warp per row");
  return blockIdx.x * static_cast<long long>(THREADS / 32) + threadIdx.x / 32;
}
template <int THREADS>
__device__ __forceinline__ long long row_stride() {
  return static_cast<long long>(gridDim.x) * (THREADS / 32);
}
__device__ __forceinline__ long long row_count(const args::MergeArgs& a) { return a.batch * a.seq_len * a.heads; }

__device__ __forceinline__ WarpRow warp_row(const args::MergeArgs& a, long long row) {
  const long long h = row % a.heads, n = row / a.heads % a.seq_len, b = row / (a.heads * a.seq_len);
  return {static_cast<int>(threadIdx.x % 32), b, n, h, (b * a.heads + h) * a.seq_len + n};
}

template <class T>
__device__ __forceinline__ T* row_pointer(const args::Tensor4& t, const WarpRow& r) {
  return static_cast<T*>(t.data) + r.b * t.stride[0] + r.n * t.stride[1] + r.h * t.stride[2];
}

}  // namespace merge_detail

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) merge_partials(args::MergeArgs a) {
  for (long long row = merge_detail::first_row<THREADS>(); row < merge_detail::row_count(a);
       row += merge_detail::row_stride<THREADS>()) {
    const merge_detail::WarpRow r = merge_detail::warp_row(a, row);
    const float lse_a = a.lse[r.lse_index], lse_b = a.other_lse[r.lse_index];
    const float merged = merge_lse(lse_a, lse_b);
    const bool empty = merged == -__int_as_float(0x7f800000);
    const float weight_a = empty ? 0.f : expf(lse_a - merged), weight_b = empty ? 0.f : expf(lse_b - merged);
    T* out = merge_detail::row_pointer<T>(a.out, r);
    const T* other = merge_detail::row_pointer<T>(a.other_out, r);
    for (int d = r.lane; d < HEAD_DIM; d += 32) {
      out[d] = from_float<T>(weight_a * to_float(out[d]) + weight_b * to_float(other[d]));
    }
    __syncwarp();  // every lane has read lse before lane 0 overwrites it
    if (r.lane == 0) a.lse[r.lse_index] = merged;
  }
}

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) clear_output(args::MergeArgs a) {
  for (long long row = merge_detail::first_row<THREADS>(); row < merge_detail::row_count(a);
       row += merge_detail::row_stride<THREADS>()) {
    const merge_detail::WarpRow r = merge_detail::warp_row(a, row);
    T* out = merge_detail::row_pointer<T>(a.out, r);
    for (int d = r.lane; d < HEAD_DIM; d += 32) out[d] = from_float<T>(0.f);
    if (r.lane == 0) a.lse[r.lse_index] = -__int_as_float(0x7f800000);
  }
}

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) finish_output(args::FinishArgs a) {
  static_assert(HEAD_DIM % 4 == 0, "four values per access");
  const int lane = threadIdx.x % 32;
  const long long rows = a.batch * a.rows * a.heads;
  for (long long i = merge_detail::first_row<THREADS>(); i < rows; i += merge_detail::row_stride<THREADS>()) {
    const long long h = i % a.heads, n = i / a.heads % a.rows, b = i / (a.heads * a.rows);
    const float* acc = a.o_acc + i * HEAD_DIM;  // [B, rows, H, D]: i is (b, n, h) in that order
    T* out = static_cast<T*>(a.out.data) + b * a.out.stride[0] + n * a.out.stride[1] + h * a.out.stride[2];
    // Four values per lane and access: 16-byte loads, 8-byte stores (rows are 16-byte aligned).
    for (int d = 4 * lane; d < HEAD_DIM; d += 128) {
      const float4 x = *reinterpret_cast<const float4*>(acc + d);
      *reinterpret_cast<uint2*>(out + d) = make_uint2(ptx::pack2<T>(x.x * a.out_scale, x.y * a.out_scale),
                                                      ptx::pack2<T>(x.z * a.out_scale, x.w * a.out_scale));
    }
    if (a.lse.data && lane == 0) {
      static_cast<float*>(a.lse.data)[b * a.lse.stride[0] + h * a.lse.stride[1] + n * a.lse.stride[2]] =
          a.lse_acc[(b * a.heads + h) * a.rows + n];
    }
  }
}

}  // namespace dilatron
