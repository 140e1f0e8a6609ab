// Dilated attention backward, FlashAttention-2 style, for one branch (segment length W, dilation R).
//
// gradient_prepare: delta = dO . O per (b, n, h) row, in fp32 (one warp per row). With the final O and
// LSE of the forward pass this is all the backward needs from it (docs/SEMANTICS.md, "Gradients":
// dO . O of the stored O equals dO' . O before head_groups' division by G).
//
// attention_backward: a CTA owns BLOCK_N = 16 * WARPS consecutive *selected* key rows of one segment for
// one (batch, head); warp w owns 16 of them. K and V of those rows stay in shared memory while the
// segment's query tiles (BLOCK_M selected rows each, and with causal only those at or after the keys)
// stream through a STAGES-deep cp.async ring together with their dO, LSE and delta. Per query tile,
// 16 queries at a time (so that only the dK and dV accumulators, 16 x D per warp, stay live across the
// tile), all on mma.sync m16n8k16 with fp32 accumulation:
//   S^T = K Q^T, P^T = exp2(S^T * scale_log2 - LSE * log2 e)     (keys x queries)
//   dV += P^T dO'                                               (P^T, packed, is an A fragment)
//   dP^T = V dO'^T, dS^T = P^T (dP^T - delta) * scale
//   dK += dS^T Q
// then dQ += dS K: dS^T goes through shared memory (ldmatrix .trans reads it back as dS), each warp
// multiplies a 16-query slice by the CTA's keys and adds it to the fp32 dQ accumulator with red.add.
// After the last query tile dK and dV are added to their fp32 accumulators the same way, so the heads
// sharing a kv head (GQA) and the branches that select a row all sum there. dO' = dO / G in head_groups
// mode (O was divided by G), dO otherwise. Dilation is address arithmetic as in the forward kernel.
// PACKED_KEYS: a ring block received, as attention_forward's: the keys are the block's packed rows, all
// visible to the rank's queries of the block's segment, and dK and dV go to the block's fp32 partial in
// the same packed layout (args::AttentionBackwardArgs), which travels back to the keys' owner.
// Grid: x = segment * key tiles per segment + key tile (PACKED_KEYS: the block's key tile), y = head -
// head_begin, z = batch element, or with a.cu_seqlens the packed batch's sequence (as the forward's).
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/attention.cuh"
#include "dilatron/index.cuh"
#include "dilatron/ptx.cuh"
#include "dilatron/types.cuh"

namespace dilatron {

template <class T, int HEAD_DIM, int THREADS>
__global__ void __launch_bounds__(THREADS) gradient_prepare(args::GradientPrepareArgs a) {
  const int lane = threadIdx.x % 32;
  const long long rows = a.batch * a.seq_len * a.heads;
  for (long long i = blockIdx.x * static_cast<long long>(THREADS / 32) + threadIdx.x / 32; i < rows;
       i += static_cast<long long>(gridDim.x) * (THREADS / 32)) {
    const long long h = i % a.heads, n = i / a.heads % a.seq_len, b = i / (a.heads * a.seq_len);
    const T* o = static_cast<const T*>(a.out.data) + b * a.out.stride[0] + n * a.out.stride[1] + h * a.out.stride[2];
    const T* g = static_cast<const T*>(a.dout.data) + b * a.dout.stride[0] + n * a.dout.stride[1] + h * a.dout.stride[2];
    float sum = 0.f;
    for (int d = lane; d < HEAD_DIM; d += 32) sum += to_float(o[d]) * to_float(g[d]);
#pragma unroll
    for (int width = 16; width > 0; width /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, width);
    if (lane == 0) a.delta[(b * a.heads + h) * a.seq_len + n] = sum;
  }
}

template <class T, int HEAD_DIM, int BLOCK_M, int BLOCK_N, int WARPS, int STAGES, bool CAUSAL, long long W,
          long long R, int MODE, int GROUP, int GROUPS, bool PACKED_KEYS>
__global__ void __launch_bounds__(WARPS * 32, 1) attention_backward(args::AttentionBackwardArgs a) {
  using namespace attention_detail;
  constexpr int kThreads = WARPS * 32, kDimTiles = HEAD_DIM / 8;
  using KVLayout = TileLayout<BLOCK_N, HEAD_DIM>;
  using QLayout = TileLayout<BLOCK_M, HEAD_DIM>;
  using DSLayout = TileLayout<BLOCK_N, BLOCK_M>;  // dS^T: keys x queries
  static_assert(BLOCK_N == 16 * WARPS, "a warp owns 16 key rows");
  static_assert(BLOCK_M % 64 == 0 && STAGES >= 2, "query tiles of whole 64-column blocks of dS");
  static_assert(!PACKED_KEYS || !CAUSAL, "a block's keys are all visible");
  constexpr long long kKeyStep = PACKED_KEYS ? 1 : R;  // rows from one key to the next
  constexpr float kOutScale = MODE == index::kHeadGroups ? 1.f / GROUPS : 1.f;
  constexpr float kLog2e = 1.4426950408889634f;

  unsigned char* const shared = ptx::dynamic_shared();
  const unsigned k_tile = ptx::shared_address(shared);
  const unsigned v_tile = k_tile + KVLayout::kBytes;
  const unsigned ds_tile = v_tile + KVLayout::kBytes;
  const unsigned q_ring = ds_tile + DSLayout::kBytes;
  const unsigned do_ring = q_ring + STAGES * QLayout::kBytes;
  float* const stats = reinterpret_cast<float*>(shared + (do_ring - k_tile) + STAGES * QLayout::kBytes);
  // stats: per stage BLOCK_M values of LSE * log2(e), then BLOCK_M of delta.

  const index::SequenceRows sequence = index::sequence_rows(a.cu_seqlens, blockIdx.z, a.seq_len);
  // b as the kernel parameter and block index give it, which the compiler can rematerialize.
  const long long b = a.cu_seqlens ? 0 : blockIdx.z, h = a.head_begin + blockIdx.y;
  const long long offset = index::branch_offset(MODE, h, a.heads, GROUP, GROUPS, R);
  if (offset < 0) return;
  // The queries: the segment's selected rows (first_row + i * R, i < count). The keys: the same rows, or
  // with PACKED_KEYS the block's (row j of k and v, j < keys); this CTA's start at selected index k_first.
  // A packed batch's sequence is a view of its own whose row 0 is the packing's row sequence.begin.
  const index::QueryTile queries =
      PACKED_KEYS ? index::query_tile(a.block_segment * index::query_tiles_per_segment(W, R, BLOCK_M), a.seq_len, W, R,
                                      offset, BLOCK_M, a.origin)
                  : index::query_tile(blockIdx.x, sequence.length, W, R, offset, BLOCK_N, a.origin);
  const long long count = queries.count, first_row = queries.first_row + sequence.begin;
  const long long keys = PACKED_KEYS ? a.block_keys : count, key_row = PACKED_KEYS ? 0 : first_row;
  const long long k_first = PACKED_KEYS ? static_cast<long long>(blockIdx.x) * BLOCK_N : queries.q_first;
  if (!queries.active || k_first >= keys) return;
  const long long kvh = index::kv_head(h, a.heads, a.kv_heads);

  const T* q = static_cast<const T*>(a.q.data) + b * a.q.stride[0] + first_row * a.q.stride[1] + h * a.q.stride[2];
  const T* dout =
      static_cast<const T*>(a.dout.data) + b * a.dout.stride[0] + first_row * a.dout.stride[1] + h * a.dout.stride[2];
  const T* k = static_cast<const T*>(a.k.data) + b * a.k.stride[0] + key_row * a.k.stride[1] + kvh * a.k.stride[2];
  const T* v = static_cast<const T*>(a.v.data) + b * a.v.stride[0] + key_row * a.v.stride[1] + kvh * a.v.stride[2];
  const float* lse = a.lse + (b * a.heads + h) * a.seq_len;
  const float* delta = a.delta + (b * a.heads + h) * a.seq_len;

  // Query tiles: the segment's, from the first that can see these keys with causal.
  const int first_tile = CAUSAL ? static_cast<int>(k_first / BLOCK_M) : 0;
  const int query_tiles = static_cast<int>(index::ceil_div(count, BLOCK_M));
  const int key_rows = static_cast<int>(index::min64(keys - k_first, BLOCK_N));
  const auto rows_of = [&](int tile) { return static_cast<int>(index::min64(count - static_cast<long long>(tile) * BLOCK_M, BLOCK_M)); };

  TileCopy<T, BLOCK_N, HEAD_DIM, kThreads>(k, a.k.stride[1] * kKeyStep, k_first).next(k_tile, key_rows, a.k.stride[1] * kKeyStep);
  TileCopy<T, BLOCK_N, HEAD_DIM, kThreads>(v, a.v.stride[1] * kKeyStep, k_first).next(v_tile, key_rows, a.v.stride[1] * kKeyStep);
  TileCopy<T, BLOCK_M, HEAD_DIM, kThreads> q_copy(q, a.q.stride[1] * R, static_cast<long long>(first_tile) * BLOCK_M);
  TileCopy<T, BLOCK_M, HEAD_DIM, kThreads> do_copy(dout, a.dout.stride[1] * R, static_cast<long long>(first_tile) * BLOCK_M);
  // The statistics of a query tile go in with plain stores; the barriers of the tiles before it publish them.
  const auto load_stats = [&](int tile, int stage) {
    for (int i = threadIdx.x; i < BLOCK_M; i += kThreads) {
      const long long qi = static_cast<long long>(tile) * BLOCK_M + i;
      const bool valid = qi < count;
      stats[stage * 2 * BLOCK_M + i] = valid ? lse[first_row + qi * R] * kLog2e : 0.f;
      stats[stage * 2 * BLOCK_M + BLOCK_M + i] = valid ? delta[first_row + qi * R] : 0.f;
    }
  };
  for (int p = 0; p < STAGES - 1; ++p) {  // always STAGES-1 groups (the first also holds K and V)
    const int tile = first_tile + p;
    if (tile < query_tiles) {
      q_copy.next(q_ring + p * QLayout::kBytes, rows_of(tile), a.q.stride[1] * R);
      do_copy.next(do_ring + p * QLayout::kBytes, rows_of(tile), a.dout.stride[1] * R);
      load_stats(tile, p);
    }
    ptx::cp_async_commit();
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / 4, t = lane % 4;
  // A operands of 16 key rows (K, V: rows lane % 16, chunk lane / 16); B operands of query rows (Q, dO:
  // rows (lane / 16) * 8 + lane % 8, chunk (lane / 8) % 2); B operands over queries, transposed (dO, Q:
  // rows lane % 16, chunk lane / 16); dS read back as an A operand over keys, transposed (same lanes as
  // a B operand); K as a B operand over keys, transposed.
  // V sits KVLayout::kBytes after K and the dO ring kDoRing after the Q ring, in the same layouts: one
  // address pair serves both (registers are the limit here).
  constexpr unsigned kV = KVLayout::kBytes, kDoRing = STAGES * QLayout::kBytes;
  const FragmentAddress<BLOCK_N, HEAD_DIM> kv_a(k_tile, warp * 16 + lane % 16, lane / 16);
  const FragmentAddress<BLOCK_M, HEAD_DIM> qdo_b(q_ring, (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
  const FragmentAddress<BLOCK_M, HEAD_DIM> qdo_bt(q_ring, lane % 16, lane / 16);
  const FragmentAddress<BLOCK_N, BLOCK_M> ds_at(ds_tile, (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
  const FragmentAddress<BLOCK_N, HEAD_DIM> k_bt(k_tile, lane % 16, lane / 16);

  float dk[kDimTiles][4] = {}, dv[kDimTiles][4] = {};
  const float scale_log2 = a.scale_log2, scale = a.scale;
  // This thread's key rows (fragment rows group and group + 8 of the warp's 16), as selected indices.
  const int key0 = static_cast<int>(k_first) + warp * 16 + group;

  for (int tile = first_tile; tile < query_tiles; ++tile) {
    const int local = tile - first_tile;
    ptx::cp_async_wait<STAGES - 2>();
    __syncthreads();  // this tile's Q, dO and statistics are in; every warp is done with tile - 1 and its dS
    const int ahead = tile + STAGES - 1;
    if (ahead < query_tiles) {
      const int stage = (local + STAGES - 1) % STAGES;
      q_copy.next(q_ring + stage * QLayout::kBytes, rows_of(ahead), a.q.stride[1] * R);
      do_copy.next(do_ring + stage * QLayout::kBytes, rows_of(ahead), a.dout.stride[1] * R);
      load_stats(ahead, stage);
    }
    ptx::cp_async_commit();
    const int stage = local % STAGES;
    const unsigned shift = stage * QLayout::kBytes;
    const float* lse2 = stats + stage * 2 * BLOCK_M;
    const float* dlt = lse2 + BLOCK_M;
    const int q0 = tile * BLOCK_M;  // selected index of the tile's first query

    // 16 queries at a time, so only the dK and dV accumulators stay live across the tile: S^T, P^T, dP^T
    // and dS^T of one slice are a few registers (K and V fragments are read again per slice instead).
    // Not unrolled: overlapping two slices' work, ptxas spilled at D = 128.
    const bool edge = q0 + BLOCK_M > count || k_first + BLOCK_N > keys || (CAUSAL && q0 < k_first + BLOCK_N - 1);
#pragma unroll 1
    for (int kk = 0; kk < BLOCK_M / 16; ++kk) {
      // S^T = K Q^T for the warp's 16 keys and the slice's 16 queries.
      float s[2][4] = {};
#pragma unroll
      for (int dk16 = 0; dk16 < HEAD_DIM / 16; ++dk16) {
        unsigned ka[4], qb[4];
        ptx::ldmatrix_x4(kv_a.at(0, dk16), ka);
        ptx::ldmatrix_x4(qdo_b.at(kk * 16, dk16, shift), qb);
        ptx::mma_16816<T>(s[0], ka, qb[0], qb[1]);
        ptx::mma_16816<T>(s[1], ka, qb[2], qb[3]);
      }
      // P^T as 16-bit pairs, which the MMAs take as an A fragment over queries. Pairs a query cannot
      // attend (past the segment, past the keys' rows, or with causal a key after the query) get P = 0.
      float w[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int qt = kk * 16 + n * 8 + 2 * t + (c & 1), key = key0 + 8 * (c / 2), query = q0 + qt;
          const bool visible = !edge || (query < count && key < keys && (!CAUSAL || key <= query));
          w[n][c] = visible ? ptx::ex2(fmaf(s[n][c], scale_log2, -lse2[qt])) : 0.f;
        }
      }
      const unsigned pa[4] = {ptx::pack2<T>(w[0][0], w[0][1]), ptx::pack2<T>(w[0][2], w[0][3]),
                              ptx::pack2<T>(w[1][0], w[1][1]), ptx::pack2<T>(w[1][2], w[1][3])};
      // dV += P^T dO (dO' = dO * kOutScale is applied once, when dV is written), and dP^T = V dO^T.
      float dp[2][4] = {};
#pragma unroll
      for (int dt = 0; dt < HEAD_DIM / 16; ++dt) {
        unsigned gb[4], va[4], gn[4];
        ptx::ldmatrix_x4_trans(qdo_bt.at(kk * 16, dt, shift + kDoRing), gb);
        ptx::mma_16816<T>(dv[2 * dt], pa, gb[0], gb[1]);
        ptx::mma_16816<T>(dv[2 * dt + 1], pa, gb[2], gb[3]);
        ptx::ldmatrix_x4(kv_a.at(0, dt, kV), va);
        ptx::ldmatrix_x4(qdo_b.at(kk * 16, dt, shift + kDoRing), gn);
        ptx::mma_16816<T>(dp[0], va, gn[0], gn[1]);
        ptx::mma_16816<T>(dp[1], va, gn[2], gn[3]);
      }
      // dS^T = P^T (dP^T * kOutScale - delta) * scale.
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          dp[n][c] = w[n][c] * (dp[n][c] * kOutScale - dlt[kk * 16 + n * 8 + 2 * t + (c & 1)]) * scale;
        }
      }
      const unsigned da[4] = {ptx::pack2<T>(dp[0][0], dp[0][1]), ptx::pack2<T>(dp[0][2], dp[0][3]),
                              ptx::pack2<T>(dp[1][0], dp[1][1]), ptx::pack2<T>(dp[1][2], dp[1][3])};
      // dS^T to shared memory for dQ (rows: the warp's keys; columns: the queries), and dK += dS^T Q.
      ptx::st_shared_32(ds_tile + DSLayout::offset(warp * 16 + group, 2 * kk) + 4 * t, da[0]);
      ptx::st_shared_32(ds_tile + DSLayout::offset(warp * 16 + group + 8, 2 * kk) + 4 * t, da[1]);
      ptx::st_shared_32(ds_tile + DSLayout::offset(warp * 16 + group, 2 * kk + 1) + 4 * t, da[2]);
      ptx::st_shared_32(ds_tile + DSLayout::offset(warp * 16 + group + 8, 2 * kk + 1) + 4 * t, da[3]);
#pragma unroll
      for (int dt = 0; dt < HEAD_DIM / 16; ++dt) {
        unsigned qb[4];
        ptx::ldmatrix_x4_trans(qdo_bt.at(kk * 16, dt, shift), qb);
        ptx::mma_16816<T>(dk[2 * dt], da, qb[0], qb[1]);
        ptx::mma_16816<T>(dk[2 * dt + 1], da, qb[2], qb[3]);
      }
    }
    __syncthreads();  // dS^T complete

    // dQ += dS K, 16 queries per warp at a time and 64 dims at a time, added to the fp32 accumulator.
#pragma unroll
    for (int qf = warp; qf < BLOCK_M / 16; qf += WARPS) {
#pragma unroll
      for (int chunk = 0; chunk < (HEAD_DIM + 63) / 64; ++chunk) {
        constexpr int kChunkTiles = 8;
        float dq[kChunkTiles][4] = {};
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
          unsigned sa[4];
          ptx::ldmatrix_x4_trans(ds_at.at(kk * 16, qf), sa);
#pragma unroll
          for (int dt = 0; dt < kChunkTiles / 2; ++dt) {
            if (chunk * 64 + dt * 16 >= HEAD_DIM) continue;
            unsigned kb[4];
            ptx::ldmatrix_x4_trans(k_bt.at(kk * 16, chunk * 4 + dt), kb);
            ptx::mma_16816<T>(dq[2 * dt], sa, kb[0], kb[1]);
            ptx::mma_16816<T>(dq[2 * dt + 1], sa, kb[2], kb[3]);
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const long long qi = q0 + qf * 16 + group + 8 * r;
          if (qi >= count) continue;
          float* out = a.dq_acc + ((b * a.seq_len + first_row + qi * R) * a.heads + h) * HEAD_DIM + chunk * 64 + 2 * t;
#pragma unroll
          for (int dt = 0; dt < kChunkTiles; ++dt) {
            if (chunk * 64 + dt * 8 >= HEAD_DIM) continue;
            ptx::red_add(out + dt * 8, dq[dt][2 * r]);
            ptx::red_add(out + dt * 8 + 1, dq[dt][2 * r + 1]);
          }
        }
      }
    }
  }
  ptx::cp_async_wait<0>();

  // dK and dV of the warp's key rows into their fp32 accumulators.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const long long ki = key0 + 8 * r;
    if (ki >= keys) continue;
    const long long at = PACKED_KEYS ? (b * keys + ki) * 2 * HEAD_DIM + 2 * t
                                     : ((b * a.seq_len + key_row + ki * R) * a.kv_heads + kvh) * HEAD_DIM + 2 * t;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
      ptx::red_add(a.dk_acc + at + dt * 8, dk[dt][2 * r]);
      ptx::red_add(a.dk_acc + at + dt * 8 + 1, dk[dt][2 * r + 1]);
      ptx::red_add(a.dv_acc + at + dt * 8, dv[dt][2 * r] * kOutScale);
      ptx::red_add(a.dv_acc + at + dt * 8 + 1, dv[dt][2 * r + 1] * kOutScale);
    }
  }
}

}  // namespace dilatron
