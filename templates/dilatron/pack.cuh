// pack_rows / unpack_rows: move the rows one branch selects between a full-sequence tensor and a dense
// buffer. The ring sends only packed rows; backward scatters packed gradients back. Grid: x walks the
// packed rows, y is the query head, z the batch. Rows move as 16-byte vectors.
#pragma once

#include "dilatron/args.cuh"
#include "dilatron/index.cuh"
#include "dilatron/types.cuh"

namespace dilatron {

// W, R: the branch; MODE, BRANCH, BRANCHES: how heads get offsets (index::branch_offset); PACK: gather
// into the buffer (true) or scatter out of it (false).
template <class T, int HEAD_DIM, long long W, long long R, int MODE, int BRANCH, int BRANCHES, bool PACK, int THREADS>
__global__ void __launch_bounds__(THREADS) move_rows(args::PackArgs a) {
  static_assert(HEAD_DIM * sizeof(T) % 16 == 0, "rows move as 16-byte vectors");
  constexpr int kVectorsPerRow = HEAD_DIM * sizeof(T) / 16;
  const long long h = blockIdx.y, b = blockIdx.z;
  const long long offset = index::branch_offset(MODE, h, a.heads, BRANCH, BRANCHES, R);
  if (offset < 0) return;
  const long long first = index::selected_before(a.row_begin, W, offset, R);
  const long long count = index::selected_before(a.row_end, W, offset, R) - first;
  const long long tensor_head = PACK ? index::kv_head(h, a.heads, a.kv_heads) : h;
  char* tensor = static_cast<char*>(a.tensor.data) +
                 (b * a.tensor.stride[0] + tensor_head * a.tensor.stride[2]) * static_cast<long long>(sizeof(T));
  char* packed = static_cast<char*>(a.packed) + (b * a.heads + h) * a.rows_per_head * HEAD_DIM * static_cast<long long>(sizeof(T));
  for (long long i = blockIdx.x * static_cast<long long>(THREADS) + threadIdx.x; i < count * kVectorsPerRow;
       i += static_cast<long long>(gridDim.x) * THREADS) {
    const long long j = i / kVectorsPerRow, v = i % kVectorsPerRow;
    const long long row = index::nth_selected(first + j, W, offset, R);
    uint4* full = reinterpret_cast<uint4*>(tensor + row * a.tensor.stride[1] * static_cast<long long>(sizeof(T))) + v;
    uint4* dense = reinterpret_cast<uint4*>(packed + j * HEAD_DIM * static_cast<long long>(sizeof(T))) + v;
    if (PACK) {
      *dense = *full;
    } else {
      *full = *dense;
    }
  }
}

}  // namespace dilatron
