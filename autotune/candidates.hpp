// The autotuner's search space for one attention kernel, and the rules that drop a candidate before it
// is timed: first the kernel's own shape rules and occupancy from shared memory (no compile needed),
// then, once compiled, the ptxas report (spills, occupancy from registers).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "codegen/compiler.hpp"
#include "codegen/kernel_spec.hpp"

namespace dilatron::autotune {

// "128x64x4x3": block_m x block_n x warps x stages, the form of --tiles and the tuning database.
std::string tiles_text(const codegen::Tiles& tiles);
// Throws dilatron::Error for anything that is not four positive integers joined by 'x'.
codegen::Tiles parse_tiles(std::string_view text);

// Every attention shape worth asking about: 2, 4 or 8 warps of 16 or 32 query rows each, 32, 64 or
// 128 keys per step, 2 or 3 pipeline stages (36 in all), in a fixed order. Shapes the kernel refuses
// are included: static_pruning() says why.
std::vector<codegen::Tiles> candidate_tiles();

// CTAs of `spec` resident on one SM of its arch, by shared memory and, when registers > 0, by the
// register file (65536 per SM, allocated per warp in units of 256) and the thread limit.
int ctas_per_sm(const codegen::KernelSpec& spec, int registers = 0);

// An SM has four warp schedulers; fewer resident warps leave one idle for the whole kernel.
inline constexpr int kMinWarpsPerSm = 4;

// Why a candidate is not worth compiling (the kernel's shape rules, the arch's shared memory, fewer
// than kMinWarpsPerSm warps resident), or empty.
std::string static_pruning(const codegen::KernelSpec& candidate);

// Why a compiled candidate is not worth timing (spills or a stack frame: local memory on every access;
// registers that leave fewer than kMinWarpsPerSm warps resident), or empty.
std::string ptxas_pruning(const codegen::KernelSpec& candidate, const codegen::PtxasReport& report);

}  // namespace dilatron::autotune
