#include "autotune/policy.hpp"

#include <algorithm>

#include "autotune/candidates.hpp"
#include "common/log.hpp"

namespace dilatron::autotune {
namespace {

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
  const int ctas = std::min(2, ctas_per_sm(s));
  codegen::KernelSpec deeper = s;
  deeper.tiles.stages = 3;
  if (deeper.shared_bytes() <= codegen::max_shared_bytes(arch) && ctas_per_sm(deeper) >= ctas) s = deeper;
  return s.tiles;
}

// The backward kernel: 64 keys on 4 warps (16 each) against 64-query tiles, two stages, the shape whose
// dK and dV accumulators and per-tile S and dP fit the registers at D = 128; 32 keys on 2 warps where
// the shared memory of a 99 KiB part does not hold it.
codegen::Tiles backward_tiles(const codegen::KernelSpec& spec) {
  codegen::KernelSpec s = spec;
  s.tiles = {64, 64, 4, 2};
  if (s.shared_bytes() > codegen::max_shared_bytes(codegen::arch_number(spec.arch))) s.tiles = {64, 32, 2, 2};
  return s.tiles;
}

}  // namespace

codegen::Tiles default_tiles(const codegen::KernelSpec& spec) {
  if (codegen::is_attention(spec.op)) return attention_tiles(spec);
  if (codegen::is_backward_attention(spec.op)) return backward_tiles(spec);
  // 256 keys per CTA: the LongNet preset's longest key run (2731 at w = 32768, r = 12) makes 11 splits
  // per head, enough CTAs for one token of 16 heads to cover an H100's 132 SMs.
  if (codegen::is_decode_branch(spec.op)) return codegen::Tiles{0, 256, 4, 0};
  // Row moves, merges and clears are bandwidth-bound: 4 warps keep enough 16-byte accesses in flight on
  // every head dim, and more warps per block only shrink the grid.
  return codegen::Tiles{0, 0, 4, 0};
}

codegen::KernelSpec with_tiles(codegen::KernelSpec spec, const std::optional<TunedFor>& tuned) {
  spec.tiles = default_tiles(spec);
  if (!tuned || !tuned->db || !codegen::is_attention(spec.op)) return spec;
  const TuningRecord* record = tuned->db->find(tuning_key(spec, tuned->target, tuned->seq_len));
  if (!record) return spec;
  codegen::KernelSpec winner = spec;
  winner.tiles = record->winner;
  if (const std::string why = static_pruning(winner); !why.empty()) {
    // A hand-edited or damaged database: the heuristic still runs correctly.
    log::write(log::Level::warn, "ignoring the tuned tiles {} for {}: {}", tiles_text(winner.tiles), spec.label(), why);
    return spec;
  }
  return winner;
}

}  // namespace dilatron::autotune
