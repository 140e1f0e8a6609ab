#include "autotune/policy.hpp"

namespace dilatron::autotune {

codegen::KernelSpec with_tiles(codegen::KernelSpec spec) {
  if (codegen::is_attention(spec.op)) {
    // FlashAttention-2's shapes for mma.sync: 4 warps x 16 query rows, 64 keys per step. D = 64 leaves
    // room for a third stage in shared memory; D = 128 keeps two (80 KiB, two CTAs per SM on sm_90).
    spec.tiles = spec.head_dim == 64 ? codegen::Tiles{64, 64, 4, 3} : codegen::Tiles{64, 64, 4, 2};
  } else {
    // Row moves, merges and clears are bandwidth-bound: 4 warps keep enough 16-byte accesses in
    // flight on every head dim, and more warps per block only shrink the grid.
    spec.tiles = codegen::Tiles{0, 0, 4, 0};
  }
  return spec;
}

}  // namespace dilatron::autotune
