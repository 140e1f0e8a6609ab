#include "autotune/policy.hpp"

#include <algorithm>

namespace dilatron::autotune {
namespace {

// Shared memory of one SM, of which each resident CTA also takes 1 KiB for the system.
int shared_per_sm(int arch) {
  if (arch == 80 || arch == 87) return 164 * 1024;
  return arch >= 90 && arch < 120 ? 228 * 1024 : 100 * 1024;
}

// Per head dim, shapes for mma.sync on 4 warps: 32 query rows per warp (every K/V fragment feeds two
// MMAs) while the O accumulator leaves room for the scores, 16 at D = 256; 64 keys per step, 32 at D = 96
// and 128, where 64 spill registers (bench/NOTES.md). Then the deepest cp.async pipeline (2 or 3 stages)
// that keeps as many CTAs per SM as two stages do, at most two (what 128 threads at up to 255 registers
// allow).
codegen::Tiles attention_tiles(const codegen::KernelSpec& spec) {
  const int arch = codegen::arch_number(spec.arch);
  codegen::KernelSpec s = spec;
  s.tiles = {spec.head_dim <= 128 ? 128 : 64, spec.head_dim == 64 || spec.head_dim == 256 ? 64 : 32, 4, 2};
  if (s.shared_bytes() > codegen::max_shared_bytes(arch)) s.tiles.block_n = 32;  // D = 256 on 99 KiB parts
  const auto resident = [&](const codegen::KernelSpec& k) { return shared_per_sm(arch) / (k.shared_bytes() + 1024); };
  const int ctas = std::min(2, resident(s));
  codegen::KernelSpec deeper = s;
  deeper.tiles.stages = 3;
  if (deeper.shared_bytes() <= codegen::max_shared_bytes(arch) && resident(deeper) >= ctas) s = deeper;
  return s.tiles;
}

}  // namespace

codegen::KernelSpec with_tiles(codegen::KernelSpec spec) {
  if (codegen::is_attention(spec.op)) {
    spec.tiles = attention_tiles(spec);
  } else {
    // Row moves, merges and clears are bandwidth-bound: 4 warps keep enough 16-byte accesses in
    // flight on every head dim, and more warps per block only shrink the grid.
    spec.tiles = codegen::Tiles{0, 0, 4, 0};
  }
  return spec;
}

}  // namespace dilatron::autotune
