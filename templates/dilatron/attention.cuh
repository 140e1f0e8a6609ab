// Dilated attention forward, FlashAttention-2 style, for one branch (segment length W, dilation R).
//
// A CTA owns BLOCK_M consecutive *selected* rows of one segment for one (batch, head); each of its
// BLOCK_M / 16 warps owns 16 of them. Dilation is address arithmetic: selected row j of a segment is
// row seg_begin + offset + j * R, so tiles load with a row stride of R * stride_n and nothing is gathered
// or scattered through extra buffers. Keys stream through a STAGES-deep cp.async ring; S = Q K^T and
// O += P V run on mma.sync m16n8k16 with fp32 accumulation, ldmatrix feeding the fragments from
// XOR-swizzled shared memory; the softmax is online in the exp2 domain.
//
// Epilogues: plain (O and LSE written; head_groups divides O by GROUPS) or MERGE (longnet branches after
// the first: the tile's (O_i, lse_i) folds into the (O, LSE) already there with the LSE merge rule).
// Grid: x = segment * tiles_per_segment + query tile, y = head - head_begin, z = batch.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/index.cuh"
#include "dilatron/ptx.cuh"
#include "dilatron/types.cuh"

namespace dilatron {
namespace attention_detail {

// Element offset of (row, 16-byte chunk) in a [rows][HEAD_DIM] tile: chunks are XOR-swizzled by the row
// so the 8 rows an ldmatrix reads hit 8 different bank groups.
template <int HEAD_DIM>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * HEAD_DIM + ((chunk ^ (row & 7)) << 3);
}

// Starts the copy of tile rows [j0, j0 + ROWS) (selected-row indices) into shared memory; rows at or
// past `count` are zero-filled.
template <class T, int ROWS, int HEAD_DIM, int THREADS>
__device__ __forceinline__ void load_tile(T* tile, const T* first, long long row_stride, long long j0,
                                          long long count) {
  constexpr int kChunks = HEAD_DIM / 8;
  for (int i = threadIdx.x; i < ROWS * kChunks; i += THREADS) {
    const int row = i / kChunks, chunk = i % kChunks;
    const bool valid = j0 + row < count;
    const T* source = first + (valid ? (j0 + row) * row_stride : 0) + chunk * 8;
    ptx::cp_async_16(ptx::shared_address(tile + swizzle<HEAD_DIM>(row, chunk)), source, valid);
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

__device__ __forceinline__ float negative_infinity() { return __int_as_float(0xff800000); }
constexpr float kLn2 = 0.693147180559945309f;

}  // namespace attention_detail

template <class T, int HEAD_DIM, int BLOCK_M, int BLOCK_N, int STAGES, bool CAUSAL, long long W, long long R,
          int MODE, int GROUP, int GROUPS, bool MERGE>
__global__ void __launch_bounds__(BLOCK_M * 2) attention_forward(args::AttentionArgs a) {
  using namespace attention_detail;
  const float neg_inf = negative_infinity();
  constexpr int kThreads = BLOCK_M * 2;  // 32 threads per 16 rows
  constexpr int kDimTiles = HEAD_DIM / 8, kKeyTiles = BLOCK_N / 8;
  static_assert(HEAD_DIM == 64 || HEAD_DIM == 128, "the swizzle needs at least 8 chunks per row");
  static_assert(BLOCK_M % 16 == 0 && BLOCK_N % 16 == 0 && STAGES >= 2, "tile shape");
  static_assert(!MERGE || MODE == index::kLongnet, "only longnet branches merge; head_groups rows have one branch");

  extern __shared__ __align__(128) unsigned char shared[];
  T* q_tile = reinterpret_cast<T*>(shared);
  T* k_ring = q_tile + BLOCK_M * HEAD_DIM;
  T* v_ring = k_ring + STAGES * BLOCK_N * HEAD_DIM;

  const long long b = blockIdx.z, h = a.head_begin + blockIdx.y;
  const long long offset = index::branch_offset(MODE, h, a.heads, GROUP, GROUPS, R);
  if (offset < 0) return;
  const index::QueryTile work = index::query_tile(blockIdx.x, a.seq_len, W, R, offset, BLOCK_M);
  if (!work.active) return;
  const long long count = work.count, q_first = work.q_first;

  // Selected row j of this segment is row first_row + j * R.
  const long long first_row = work.first_row, kvh = index::kv_head(h, a.heads, a.kv_heads);
  const T* q = static_cast<const T*>(a.q.data) + b * a.q.stride[0] + first_row * a.q.stride[1] + h * a.q.stride[2];
  const T* k = static_cast<const T*>(a.k.data) + b * a.k.stride[0] + first_row * a.k.stride[1] + kvh * a.k.stride[2];
  const T* v = static_cast<const T*>(a.v.data) + b * a.v.stride[0] + first_row * a.v.stride[1] + kvh * a.v.stride[2];
  const long long q_stride = a.q.stride[1] * R, k_stride = a.k.stride[1] * R, v_stride = a.v.stride[1] * R;
  const int key_tiles = static_cast<int>(index::ceil_div(index::key_end(count, q_first, BLOCK_M, CAUSAL), BLOCK_N));

  load_tile<T, BLOCK_M, HEAD_DIM, kThreads>(q_tile, q, q_stride, q_first, count);
  for (int p = 0; p < STAGES - 1; ++p) {  // always STAGES-1 groups, some empty, so the waits below count right
    if (p < key_tiles) {
      load_tile<T, BLOCK_N, HEAD_DIM, kThreads>(k_ring + p * BLOCK_N * HEAD_DIM, k, k_stride, p * BLOCK_N, count);
      load_tile<T, BLOCK_N, HEAD_DIM, kThreads>(v_ring + p * BLOCK_N * HEAD_DIM, v, v_stride, p * BLOCK_N, count);
    }
    ptx::cp_async_commit();
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / 4, t = lane % 4;
  const int row0 = warp * 16 + group;  // this thread's two rows in the tile: row0 and row0 + 8
  const long long q_index[2] = {q_first + row0, q_first + row0 + 8};
  float out[kDimTiles][4] = {};
  float row_max[2] = {neg_inf, neg_inf}, row_sum[2] = {0.f, 0.f};

  for (int tile = 0; tile < key_tiles; ++tile) {
    // STAGES-1+tile groups are committed; group `tile` (this tile; tile 0's also holds Q) has landed once at
    // most STAGES-2 are in flight. The barrier then publishes it to every warp and proves that all warps
    // are done with tile-1, whose stage the prefetch below refills: one barrier per tile.
    ptx::cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int ahead = tile + STAGES - 1;
    if (ahead < key_tiles) {
      const int stage = ahead % STAGES;
      load_tile<T, BLOCK_N, HEAD_DIM, kThreads>(k_ring + stage * BLOCK_N * HEAD_DIM, k, k_stride,
                                                static_cast<long long>(ahead) * BLOCK_N, count);
      load_tile<T, BLOCK_N, HEAD_DIM, kThreads>(v_ring + stage * BLOCK_N * HEAD_DIM, v, v_stride,
                                                static_cast<long long>(ahead) * BLOCK_N, count);
    }
    ptx::cp_async_commit();  // possibly empty: keeps one group per tile
    const T* k_tile = k_ring + (tile % STAGES) * BLOCK_N * HEAD_DIM;
    const T* v_tile = v_ring + (tile % STAGES) * BLOCK_N * HEAD_DIM;

    // S = Q K^T for this warp's 16 rows and the tile's BLOCK_N keys.
    float s[kKeyTiles][4] = {};
#pragma unroll 1
    for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
      unsigned qa[4];
      ptx::ldmatrix_x4(ptx::shared_address(q_tile + swizzle<HEAD_DIM>(warp * 16 + lane % 16, kk * 2 + lane / 16)), qa);
#pragma unroll
      for (int nt = 0; nt < BLOCK_N / 16; ++nt) {
        const int m = lane / 8;
        unsigned kb[4];
        ptx::ldmatrix_x4(ptx::shared_address(k_tile + swizzle<HEAD_DIM>(nt * 16 + (m / 2) * 8 + lane % 8, kk * 2 + m % 2)),
                         kb);
        ptx::mma_16816<T>(s[2 * nt], qa, kb[0], kb[1]);
        ptx::mma_16816<T>(s[2 * nt + 1], qa, kb[2], kb[3]);
      }
    }

    // Scores into the exp2 domain; mask keys past the segment's selected rows and, on diagonal tiles,
    // keys after the query.
    const long long k_first = static_cast<long long>(tile) * BLOCK_N;
    const bool edge = !index::key_tile_unmasked(k_first, BLOCK_N, q_first, count, CAUSAL);
#pragma unroll
    for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        s[nt][c] *= a.scale_log2;
        if (edge) {
          const long long key = k_first + nt * 8 + 2 * t + (c & 1);
          if (!index::key_visible(key, q_index[c / 2], count, CAUSAL)) s[nt][c] = neg_inf;
        }
      }
    }

    // Online softmax: new running max, rescale what is accumulated, exponentiate the tile.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float tile_max = neg_inf;
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      const float new_max = fmaxf(row_max[r], quad_max(tile_max));
      const float base = new_max == neg_inf ? 0.f : new_max;  // a row with no keys yet stays at zero, not NaN
      const float rescale = exp2f(row_max[r] - base);
      row_max[r] = new_max;
      float tile_sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kKeyTiles; ++nt) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - base);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - base);
        tile_sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      row_sum[r] = row_sum[r] * rescale + tile_sum;  // per-thread partial; the quad sums it at the end
#pragma unroll
      for (int dt = 0; dt < kDimTiles; ++dt) {
        out[dt][2 * r] *= rescale;
        out[dt][2 * r + 1] *= rescale;
      }
    }

    // O += P V: the score accumulators of two key tiles are exactly an A fragment.
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
      const unsigned pa[4] = {ptx::pack2<T>(s[2 * kk][0], s[2 * kk][1]), ptx::pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              ptx::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              ptx::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dt = 0; dt < HEAD_DIM / 16; ++dt) {
        const int m = lane / 8;
        unsigned vb[4];
        ptx::ldmatrix_x4_trans(
            ptx::shared_address(v_tile + swizzle<HEAD_DIM>(kk * 16 + (m % 2) * 8 + lane % 8, dt * 2 + m / 2)), vb);
        ptx::mma_16816<T>(out[2 * dt], pa, vb[0], vb[1]);
        ptx::mma_16816<T>(out[2 * dt + 1], pa, vb[2], vb[3]);
      }
    }
  }

  // Epilogue: normalize, then write or merge. Each row's D values are spread over one quad of lanes.
  constexpr float kOutScale = MODE == index::kHeadGroups ? 1.f / GROUPS : 1.f;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float sum = quad_sum(row_sum[r]);
    const bool valid = q_index[r] < count;
    const float lse = sum > 0.f ? (row_max[r] + log2f(sum)) * kLn2 : neg_inf;
    const long long row = first_row + q_index[r] * R;
    float* lse_slot = valid ? a.lse + (b * a.heads + h) * a.seq_len + row : nullptr;
    float keep = 0.f, take = sum > 0.f ? kOutScale / sum : 0.f, merged = lse;
    if (MERGE) {
      const float previous = valid ? *lse_slot : neg_inf;
      const float hi = fmaxf(previous, lse), lo = fminf(previous, lse);
      merged = hi == neg_inf ? hi : hi + log1pf(expf(lo - hi));
      keep = hi == neg_inf ? 0.f : expf(previous - merged);
      take = hi == neg_inf ? 0.f : expf(lse - merged) / sum;
      __syncwarp();  // every lane of the quad has read the old LSE before lane t == 0 replaces it
    }
    if (!valid) continue;
    T* o = static_cast<T*>(a.out.data) + b * a.out.stride[0] + row * a.out.stride[1] + h * a.out.stride[2] + 2 * t;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      unsigned* pair = reinterpret_cast<unsigned*>(o + dt * 8);
      float x = out[dt][2 * r] * take, y = out[dt][2 * r + 1] * take;
      if (MERGE) {
        float old_x, old_y;
        ptx::unpack2<T>(*pair, old_x, old_y);
        x += keep * old_x;
        y += keep * old_y;
      }
      *pair = ptx::pack2<T>(x, y);
    }
    if (t == 0) *lse_slot = merged;
  }
}

}  // namespace dilatron
