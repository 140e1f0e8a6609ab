// Dilated attention forward, FlashAttention-2 style, for one branch (segment length W, dilation R).
//
// A CTA owns BLOCK_M consecutive *selected* rows of one segment for one (batch, head); each of its WARPS
// warps owns BLOCK_M / WARPS of them, 16 or 32 (two MMA row fragments: every K and V fragment read from
// shared memory then feeds two MMAs). Dilation is address arithmetic: selected row j of a segment is row
// seg_begin + offset + j * R, so tiles load with a row stride of R * stride_n and nothing is gathered or
// scattered through extra buffers. Keys stream through a STAGES-deep cp.async ring; S = Q K^T and
// O += P V run on mma.sync m16n8k16 with fp32 accumulation, ldmatrix feeding the fragments from
// XOR-swizzled shared memory; the softmax is online in the exp2 domain.
//
// The main loop is kept lean: every address a thread uses is computed once (a source pointer per tensor
// that walks tile to tile, shared offsets per lane that ldmatrix combines with immediates), masks are
// evaluated in 32 bits and only on edge tiles (a uniform branch), and exponentials are one FFMA and one
// ex2.approx each. Registers are the limit (255 at 128 threads): the policy pairs 32 rows per warp with
// 32-key tiles at D = 96 and 128, where 64-key tiles spill.
//
// Epilogues (args::AttentionEpilogue): O and LSE in the input dtype, or the fp32 accumulator and LSE
// written or merged with the LSE rule, for configurations of several branches that round only once and
// for a ring rank's own rows (a view starting at a.origin), which later steps merge into.
// PACKED_KEYS: a ring block received (args::AttentionArgs::block_keys). The queries are the rank's rows
// of one segment, the keys a packed run of another rank's rows of it, all visible (with causal masking
// only ranks after the keys receive them), read in place with a row stride of a.k.stride[1]; the
// result merges into the accumulator. Only where the keys come from and how many there are changes.
// Grid: x = segment * tiles_per_segment + query tile (PACKED_KEYS: the query tile of the block's
// segment), y = head - head_begin, z = batch element, or with a.cu_seqlens the packed batch's sequence.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/index.cuh"
#include "dilatron/ptx.cuh"
#include "dilatron/types.cuh"

namespace dilatron {
namespace attention_detail {

// Shared-memory layout of a [ROWS][HEAD_DIM] 16-bit tile: column blocks of 64 elements (128-byte rows),
// then one of 32 (64-byte rows) when HEAD_DIM % 64 == 32, each block row-major. A row's 16-byte chunks
// are XOR-swizzled by the row so the 8 rows one ldmatrix phase reads land in 8 different bank groups.
template <int ROWS, int HEAD_DIM>
struct TileLayout {
  static constexpr int kFullBlocks = HEAD_DIM / 64;
  static constexpr bool kHalfBlock = HEAD_DIM % 64 == 32;
  static constexpr unsigned kBytes = ROWS * HEAD_DIM * 2;
  static constexpr unsigned kHalfBase = kFullBlocks * ROWS * 128;
  static_assert(HEAD_DIM % 32 == 0 && HEAD_DIM >= 64, "head dims of whole 32-element column blocks");

  // Byte offset of the 16-byte chunk (row, chunk); chunk counts across the whole row.
  __device__ static constexpr unsigned offset(int row, int chunk) {
    return chunk < kFullBlocks * 8
               ? (chunk / 8) * ROWS * 128 + row * 128 + (((chunk % 8) ^ (row & 7)) << 4)
               : kHalfBase + row * 64 + (((chunk % 4) ^ ((row >> 1) & 3)) << 4);
  }
};

// ldmatrix addresses. A lane of an .x4 load names row `lane_row` and chunk `2 * pair + lane_chunk` of a
// fragment; fragments start at rows r0 that are multiples of 16 (past the lane's own row, which may
// include the warp's first row, itself a multiple of 16), so r0 changes neither the swizzle nor the chunk
// bits. In a full block, (2 * pair + lane_chunk) ^ (row & 7) = 2 * ((pair % 4) ^ y) + (lane_chunk ^
// (row & 1)) with y = (row & 7) / 2: the address is a per-lane base plus ((pair % 4) * 32 ^ 32 * y), and
// the rest is an immediate. The half block (64-byte rows, swizzle (row / 2) & 3) works alike with pairs
// 0 and 1. Two registers per operand and block kind, and the four sums of a tile are computed once.
template <int ROWS, int HEAD_DIM>
struct FragmentAddress {
  using Layout = TileLayout<ROWS, HEAD_DIM>;
  unsigned full, full_y, half, half_y;

  __device__ FragmentAddress(unsigned base, int lane_row, int lane_chunk) {
    const int key = lane_row & 7, half_key = (lane_row >> 1) & 3;
    full = base + lane_row * 128 + ((lane_chunk ^ (key & 1)) << 4);
    full_y = (key >> 1) << 5;
    half = base + Layout::kHalfBase + lane_row * 64 + ((lane_chunk ^ (half_key & 1)) << 4);
    half_y = (half_key >> 1) << 5;
  }
  // The fragment at rows [r0, r0 + 16) and chunk pair `pair` (elements 16 * pair ...), plus `shift` bytes.
  __device__ __forceinline__ unsigned at(int r0, int pair, unsigned shift = 0) const {
    return pair < Layout::kFullBlocks * 4
               ? full + shift + ((pair % 4) * 32 ^ full_y) + (pair / 4) * ROWS * 128 + r0 * 128
               : half + shift + ((pair % 2) * 32 ^ half_y) + r0 * 64;
  }
};

// Copies tiles of ROWS consecutive selected rows into a TileLayout, one tile after another. Each thread
// owns one chunk column per block and every THREADS/8-th row (THREADS/4-th in the half block), so its
// source pointer is computed once and only advances; the shared offsets are immediates.
template <class T, int ROWS, int HEAD_DIM, int THREADS>
struct TileCopy {
  using Layout = TileLayout<ROWS, HEAD_DIM>;
  static constexpr int kFullStep = THREADS / 8, kHalfStep = THREADS / 4;
  static_assert(kFullStep % 8 == 0 && ROWS % kFullStep == 0 && (!Layout::kHalfBlock || ROWS % kHalfStep == 0),
                "every thread copies the same number of rows, 8 rows apart or a multiple of it");
  const T* full;  // this thread's next row, chunk threadIdx % 8 of block 0
  const T* half;  // this thread's next row in the half block, chunk threadIdx % 4

  __device__ TileCopy(const T* first, long long stride, long long first_row) {
    const int tid = threadIdx.x;
    full = first + (first_row + tid / 8) * stride + (tid % 8) * 8;
    half = first + (first_row + tid / 4) * stride + Layout::kFullBlocks * 64 + (tid % 4) * 8;
  }

  // Starts the copy of the next tile into `tile`; its rows at or past `rows_left` (only when EDGE) become
  // zeros, so padded keys and values hold no stale data. `stride` (elements from one row to the next) is
  // passed in rather than kept: read from the kernel parameters it costs no register across the loop.
  template <bool EDGE>
  __device__ __forceinline__ void next(unsigned tile, int rows_left, long long stride) {
    const int tid = threadIdx.x;
    const long long row_step = stride * kFullStep;
    // Opaque to the optimizer: otherwise it keeps one pointer per copied row alive across the whole key
    // loop (a register pair each), where one pointer and a few adds per tile do.
    ptx::opaque(full);
    if (Layout::kHalfBlock) ptx::opaque(half);
    const unsigned to = tile + Layout::offset(tid / 8, tid % 8);
#pragma unroll
    for (int p = 0; p < ROWS / kFullStep; ++p) {
      const bool valid = !EDGE || tid / 8 + p * kFullStep < rows_left;
#pragma unroll
      for (int block = 0; block < Layout::kFullBlocks; ++block) {
        const unsigned at = to + p * kFullStep * 128 + block * ROWS * 128;
        if (valid) ptx::cp_async_16(at, full + block * 64, true);
        else ptx::st_shared_zero_16(at);
      }
      full += row_step;
    }
    if (Layout::kHalfBlock) {
      const unsigned to_half = tile + Layout::offset(tid / 4, Layout::kFullBlocks * 8 + tid % 4);
#pragma unroll
      for (int p = 0; p < ROWS / kHalfStep; ++p) {
        const unsigned at = to_half + p * kHalfStep * 64;
        if (!EDGE || tid / 4 + p * kHalfStep < rows_left) ptx::cp_async_16(at, half, true);
        else ptx::st_shared_zero_16(at);
        half += 2 * row_step;
      }
    }
  }
  __device__ __forceinline__ void next(unsigned tile, int rows_left, long long stride) {
    if (rows_left >= ROWS) next<false>(tile, ROWS, stride);
    else next<true>(tile, rows_left, stride);
  }
};

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

// (O, LSE) of one row folded into what is there: LSE = hi + log1p(exp(lo - hi)); returns the weights of
// the old and the new O (the new one still unnormalized: divided by `sum` here). Empty on both sides
// (hi = -inf) keeps O = 0 and LSE = -inf, with no NaN.
struct MergeWeights {
  float lse, keep, take;
};
__device__ __forceinline__ MergeWeights merge_weights(float previous, float lse, float sum) {
  const float merged = merge_lse(previous, lse);  // NaN in, NaN weights out
  if (merged == negative_infinity()) return {merged, 0.f, 0.f};
  return {merged, expf(previous - merged), expf(lse - merged) / sum};
}

}  // namespace attention_detail

template <class T, int HEAD_DIM, int BLOCK_M, int BLOCK_N, int WARPS, int STAGES, bool CAUSAL, long long W,
          long long R, int MODE, int GROUP, int GROUPS, int EPILOGUE, bool PACKED_KEYS>
__global__ void __launch_bounds__(WARPS * 32) attention_forward(args::AttentionArgs a) {
  using namespace attention_detail;
  constexpr int kThreads = WARPS * 32, kWarpRows = BLOCK_M / WARPS, kRowFrags = kWarpRows / 16;
  constexpr int kDimTiles = HEAD_DIM / 8, kKeyTiles = BLOCK_N / 8;
  using QLayout = TileLayout<BLOCK_M, HEAD_DIM>;
  using KVLayout = TileLayout<BLOCK_N, HEAD_DIM>;
  static_assert(kWarpRows == 16 || kWarpRows == 32, "a warp owns one or two 16-row MMA fragments");
  static_assert(BLOCK_N % 16 == 0 && STAGES >= 2, "tile shape");
  static_assert(!PACKED_KEYS || (!CAUSAL && EPILOGUE == args::kMergeAccumulator), "a block's keys are all visible");
  constexpr long long kKeyStep = PACKED_KEYS ? 1 : R;  // rows from one key to the next

  const unsigned q_tile = ptx::shared_address(ptx::dynamic_shared());
  const unsigned k_ring = q_tile + QLayout::kBytes;
  const unsigned v_ring = k_ring + STAGES * KVLayout::kBytes;

  // This CTA's (batch, head) and query tile. The epilogue locates them again from fresh reads of the block
  // index rather than keeping these 64-bit values alive through the key loop, which needs every register.
  // A packed batch's sequence z is a view of its own whose row 0 is the packing's row `begin`.
  const auto locate = [&](unsigned x, unsigned y, unsigned z) {
    const long long h = a.head_begin + y;
    const long long offset = index::branch_offset(MODE, h, a.heads, GROUP, GROUPS, R);
    const long long tile = PACKED_KEYS ? x + a.block_segment * index::query_tiles_per_segment(W, R, BLOCK_M) : x;
    const index::SequenceRows sequence = index::sequence_rows(a.cu_seqlens, z, a.seq_len);
    index::QueryTile work = offset < 0 ? index::QueryTile{false, 0, 0, 0}
                                       : index::query_tile(tile, sequence.length, W, R, offset, BLOCK_M, a.origin);
    work.first_row += sequence.begin;
    return work;
  };
  const long long b = a.cu_seqlens ? 0 : blockIdx.z, h = a.head_begin + blockIdx.y;
  const index::QueryTile work = locate(blockIdx.x, blockIdx.y, blockIdx.z);
  if (!work.active) return;
  const long long count = work.count, q_first = work.q_first;

  // Selected row j of this segment is row first_row + j * R; key j is row key_row + j * kKeyStep.
  const long long first_row = work.first_row, kvh = index::kv_head(h, a.heads, a.kv_heads);
  const long long key_row = PACKED_KEYS ? 0 : first_row, keys = PACKED_KEYS ? a.block_keys : count;
  const T* q = static_cast<const T*>(a.q.data) + b * a.q.stride[0] + first_row * a.q.stride[1] + h * a.q.stride[2];
  const T* k = static_cast<const T*>(a.k.data) + b * a.k.stride[0] + key_row * a.k.stride[1] + kvh * a.k.stride[2];
  const T* v = static_cast<const T*>(a.v.data) + b * a.v.stride[0] + key_row * a.v.stride[1] + kvh * a.v.stride[2];
  const int key_tiles = static_cast<int>(index::ceil_div(index::key_end(keys, q_first, BLOCK_M, CAUSAL), BLOCK_N));
  const int plain_tiles = static_cast<int>(index::unmasked_key_tiles(keys, q_first, BLOCK_N, CAUSAL));

  // Rows of the last key tile, in 32 bits like every count the loop keeps (the others are whole).
  const int last_rows = static_cast<int>(index::min64(keys - static_cast<long long>(key_tiles - 1) * BLOCK_N, BLOCK_N));
  const auto rows_of = [&](int tile) { return tile == key_tiles - 1 ? last_rows : BLOCK_N; };

  TileCopy<T, BLOCK_M, HEAD_DIM, kThreads>(q, a.q.stride[1] * R, q_first)
      .next(q_tile, static_cast<int>(index::min64(count - q_first, BLOCK_M)), a.q.stride[1] * R);
  TileCopy<T, BLOCK_N, HEAD_DIM, kThreads> k_copy(k, a.k.stride[1] * kKeyStep, 0), v_copy(v, a.v.stride[1] * kKeyStep, 0);
  for (int p = 0; p < STAGES - 1; ++p) {  // always STAGES-1 groups, some empty, so the waits below count right
    if (p < key_tiles) {
      k_copy.next(k_ring + p * KVLayout::kBytes, rows_of(p), a.k.stride[1] * kKeyStep);
      v_copy.next(v_ring + p * KVLayout::kBytes, rows_of(p), a.v.stride[1] * kKeyStep);
    }
    ptx::cp_async_commit();
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane / 4, t = lane % 4;
  // Q and V (transposed) fragments name rows lane % 16 and chunk lane / 16; K's rows (lane / 16) * 8 + lane % 8
  // and chunk (lane / 8) % 2 (ptx.cuh has the fragment layouts).
  const FragmentAddress<BLOCK_M, HEAD_DIM> q_at(q_tile, warp * kWarpRows + lane % 16, lane / 16);
  const FragmentAddress<BLOCK_N, HEAD_DIM> k_at(k_ring, (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
  const FragmentAddress<BLOCK_N, HEAD_DIM> v_at(v_ring, lane % 16, lane / 16);

  float out[kRowFrags][kDimTiles][4] = {};
  float row_max[kRowFrags][2], row_sum[kRowFrags][2];
#pragma unroll
  for (int f = 0; f < kRowFrags; ++f) {
    row_max[f][0] = row_max[f][1] = negative_infinity();  // in raw score units
    row_sum[f][0] = row_sum[f][1] = 0.f;
  }
  const float scale = a.scale_log2;

  const auto key_tile = [&](int tile, bool edge) {
    // STAGES-1+tile groups are committed; group `tile` (this tile; tile 0's also holds Q) has landed once at
    // most STAGES-2 are in flight. The barrier then publishes it to every warp and proves that all warps
    // are done with tile-1, whose stage the prefetch below refills: one barrier per tile.
    ptx::cp_async_wait<STAGES - 2>();
    __syncthreads();
    const int ahead = tile + STAGES - 1;
    if (ahead < key_tiles) {
      k_copy.next(k_ring + (ahead % STAGES) * KVLayout::kBytes, rows_of(ahead), a.k.stride[1] * kKeyStep);
      v_copy.next(v_ring + (ahead % STAGES) * KVLayout::kBytes, rows_of(ahead), a.v.stride[1] * kKeyStep);
    }
    ptx::cp_async_commit();  // possibly empty: keeps one group per tile
    const unsigned stage = (tile % STAGES) * KVLayout::kBytes;

    // S = Q K^T for this warp's rows and the tile's BLOCK_N keys.
    float s[kRowFrags][kKeyTiles][4] = {};
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
      unsigned qa[kRowFrags][4];
#pragma unroll
      for (int f = 0; f < kRowFrags; ++f) {
        ptx::ldmatrix_x4(q_at.at(f * 16, kk), qa[f]);
      }
#pragma unroll
      for (int nt = 0; nt < BLOCK_N / 16; ++nt) {
        unsigned kb[4];
        ptx::ldmatrix_x4(k_at.at(nt * 16, kk, stage), kb);
#pragma unroll
        for (int f = 0; f < kRowFrags; ++f) {
          ptx::mma_16816<T>(s[f][2 * nt], qa[f], kb[0], kb[1]);
          ptx::mma_16816<T>(s[f][2 * nt + 1], qa[f], kb[2], kb[3]);
        }
      }
    }

    if (edge) {
      // Keys past the segment's selected rows, and with causal keys after the query, get -inf. In 32 bits:
      // key `kt` of the tile is visible to warp row `qr` when kt < key_limit and kt <= qr + diagonal. With
      // causal the diagonal (the warp's first query - the tile's first key) of a masked tile lies in
      // (-BLOCK_M, BLOCK_M + BLOCK_N), so the difference of the truncated indices is exact.
      const int key_limit = rows_of(tile);
      const int diagonal = static_cast<int>(static_cast<unsigned>(q_first) + warp * kWarpRows - tile * BLOCK_N);
#pragma unroll
      for (int f = 0; f < kRowFrags; ++f) {
#pragma unroll
        for (int nt = 0; nt < kKeyTiles; ++nt) {
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int kt = nt * 8 + 2 * t + (c & 1), qr = f * 16 + group + 8 * (c / 2);
            if (kt >= key_limit || (CAUSAL && kt > qr + diagonal)) s[f][nt][c] = negative_infinity();
          }
        }
      }
    }

    // Online softmax: new running max, rescale what is accumulated, exponentiate the tile. The max stays
    // in raw score units, so each weight is one FFMA and one ex2: 2^(s * scale - max * scale).
#pragma unroll
    for (int f = 0; f < kRowFrags; ++f) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float tile_max = negative_infinity();
#pragma unroll
        for (int nt = 0; nt < kKeyTiles; ++nt) tile_max = fmaxf(tile_max, fmaxf(s[f][nt][2 * r], s[f][nt][2 * r + 1]));
        const float new_max = fmaxf(row_max[f][r], quad_max(tile_max));
        // A row with no visible key yet keeps zero weights instead of inf - inf = NaN.
        const float base = new_max == negative_infinity() ? 0.f : new_max * scale;
        const float rescale = ptx::ex2(row_max[f][r] * scale - base);
        row_max[f][r] = new_max;
        float tile_sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kKeyTiles; ++nt) {
          s[f][nt][2 * r] = ptx::ex2(fmaf(s[f][nt][2 * r], scale, -base));
          s[f][nt][2 * r + 1] = ptx::ex2(fmaf(s[f][nt][2 * r + 1], scale, -base));
          tile_sum += s[f][nt][2 * r] + s[f][nt][2 * r + 1];
        }
        row_sum[f][r] = row_sum[f][r] * rescale + tile_sum;  // per-thread partial; the quad sums it at the end
#pragma unroll
        for (int dt = 0; dt < kDimTiles; ++dt) {
          out[f][dt][2 * r] *= rescale;
          out[f][dt][2 * r + 1] *= rescale;
        }
      }
    }

    // O += P V: the score accumulators of two key tiles are exactly an A fragment.
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
      unsigned pa[kRowFrags][4];
#pragma unroll
      for (int f = 0; f < kRowFrags; ++f) {
        pa[f][0] = ptx::pack2<T>(s[f][2 * kk][0], s[f][2 * kk][1]);
        pa[f][1] = ptx::pack2<T>(s[f][2 * kk][2], s[f][2 * kk][3]);
        pa[f][2] = ptx::pack2<T>(s[f][2 * kk + 1][0], s[f][2 * kk + 1][1]);
        pa[f][3] = ptx::pack2<T>(s[f][2 * kk + 1][2], s[f][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dt = 0; dt < HEAD_DIM / 16; ++dt) {
        unsigned vb[4];
        ptx::ldmatrix_x4_trans(v_at.at(kk * 16, dt, stage), vb);
#pragma unroll
        for (int f = 0; f < kRowFrags; ++f) {
          ptx::mma_16816<T>(out[f][2 * dt], pa[f], vb[0], vb[1]);
          ptx::mma_16816<T>(out[f][2 * dt + 1], pa[f], vb[2], vb[3]);
        }
      }
    }
  };
  for (int tile = 0; tile < key_tiles; ++tile) key_tile(tile, tile >= plain_tiles);

  // Epilogue: normalize, then write or fold in. Each row's D values are spread over one quad of lanes.
  {
    const index::QueryTile tile = locate(ptx::block_index<0>(), ptx::block_index<1>(), ptx::block_index<2>());
    const long long b = a.cu_seqlens ? 0 : ptx::block_index<2>(), h = a.head_begin + ptx::block_index<1>();
    constexpr float kOutScale = MODE == index::kHeadGroups ? 1.f / GROUPS : 1.f;
#pragma unroll
    for (int f = 0; f < kRowFrags; ++f) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float sum = quad_sum(row_sum[f][r]);
        const long long qi = tile.q_first + warp * kWarpRows + f * 16 + group + 8 * r;
        const bool valid = qi < tile.count;
        // sum is 0 for a row that saw no key, NaN for one that saw a NaN score (then so is its LSE).
        const float lse = sum == 0.f ? negative_infinity() : (row_max[f][r] * a.scale_log2 + log2f(sum)) * kLn2;
        const long long row = tile.first_row + qi * R;
        float* lse_slot = valid ? a.lse + (b * a.heads + h) * a.seq_len + row : nullptr;
        MergeWeights m{lse, 0.f, sum == 0.f ? 0.f : kOutScale / sum};
        if (EPILOGUE == args::kMergeAccumulator) {
          m = merge_weights(valid ? *lse_slot : negative_infinity(), lse, sum);
          __syncwarp();  // every lane of the quad has read the old LSE before lane t == 0 replaces it
        }
        if (!valid) continue;
        if (EPILOGUE == args::kWriteOutput) {
          T* o = static_cast<T*>(a.out.data) + b * a.out.stride[0] + row * a.out.stride[1] + h * a.out.stride[2] + 2 * t;
#pragma unroll
          for (int dt = 0; dt < kDimTiles; ++dt) {
            *reinterpret_cast<unsigned*>(o + dt * 8) =
                ptx::pack2<T>(out[f][dt][2 * r] * m.take, out[f][dt][2 * r + 1] * m.take);
          }
        } else {
          float* o = a.acc + ((b * a.seq_len + row) * a.heads + h) * HEAD_DIM + 2 * t;
#pragma unroll
          for (int dt = 0; dt < kDimTiles; ++dt) {
            float2* pair = reinterpret_cast<float2*>(o + dt * 8);
            float2 x = make_float2(out[f][dt][2 * r] * m.take, out[f][dt][2 * r + 1] * m.take);
            if (EPILOGUE == args::kMergeAccumulator) {
              const float2 old = *pair;
              x.x += m.keep * old.x;
              x.y += m.keep * old.y;
            }
            *pair = x;
          }
        }
        if (t == 0) *lse_slot = m.lse;
      }
    }
  }
}

}  // namespace dilatron
