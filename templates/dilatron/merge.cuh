// merge_partials: fold a second partial attention result into the first, row by row:
// LSE = max + log1p(exp(min - max)), O = exp(lse_a - LSE) O_a + exp(lse_b - LSE) O_b. A row with no keys
// on either side (lse = -inf) stays O = 0, LSE = -inf, with no NaN. One warp per (b, n, h) row.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/types.cuh"

namespace dilatron {

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) merge_partials(args::MergeArgs a) {
  static_assert(THREADS % 32 == 0, "one warp per row");
  const long long rows = a.batch * a.seq_len * a.heads;
  const long long row = blockIdx.x * static_cast<long long>(THREADS / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const long long h = row % a.heads, n = row / a.heads % a.seq_len, b = row / (a.heads * a.seq_len);
  const long long lse_index = (b * a.heads + h) * a.seq_len + n;
  const float lse_a = a.lse[lse_index], lse_b = a.other_lse[lse_index];
  const float hi = fmaxf(lse_a, lse_b), lo = fminf(lse_a, lse_b);
  const bool empty = hi == -__int_as_float(0x7f800000);
  const float merged = empty ? hi : hi + log1pf(expf(lo - hi));
  const float weight_a = empty ? 0.f : expf(lse_a - merged), weight_b = empty ? 0.f : expf(lse_b - merged);
  T* out = static_cast<T*>(a.out.data) + b * a.out.stride[0] + n * a.out.stride[1] + h * a.out.stride[2];
  const T* other = static_cast<const T*>(a.other_out.data) + b * a.other_out.stride[0] + n * a.other_out.stride[1] +
                   h * a.other_out.stride[2];
  for (int d = lane; d < HEAD_DIM; d += 32) {
    out[d] = from_float<T>(weight_a * to_float(out[d]) + weight_b * to_float(other[d]));
  }
  __syncwarp();  // every lane has read lse before lane 0 overwrites it
  if (lane == 0) a.lse[lse_index] = merged;
}

// clear_output: O = 0 and LSE = -inf on every row, before branch launches that merge into them (rows no
// branch selects keep these values). One warp per (b, n, h) row; MergeArgs' other_* fields are unused.
template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) clear_output(args::MergeArgs a) {
  static_assert(THREADS % 32 == 0, "one warp per row");
  const long long rows = a.batch * a.seq_len * a.heads;
  const long long row = blockIdx.x * static_cast<long long>(THREADS / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const long long h = row % a.heads, n = row / a.heads % a.seq_len, b = row / (a.heads * a.seq_len);
  T* out = static_cast<T*>(a.out.data) + b * a.out.stride[0] + n * a.out.stride[1] + h * a.out.stride[2];
  for (int d = lane; d < HEAD_DIM; d += 32) out[d] = from_float<T>(0.f);
  if (lane == 0) a.lse[(b * a.heads + h) * a.seq_len + n] = -__int_as_float(0x7f800000);
}

}  // namespace dilatron
