#include "codegen/kernel_spec.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <charconv>

namespace dilatron::codegen {
namespace {

bool moves_rows(Op op) { return op == Op::pack_rows || op == Op::unpack_rows; }


[[noreturn]] void invalid(const KernelSpec& spec, const std::string& why) {
  throw Error(fmt::format("invalid kernel spec ({}): {}", spec.label(), why));
}

}  // namespace

std::string_view to_string(Op op) noexcept {
  switch (op) {
    case Op::pack_rows: return "pack_rows";
    case Op::unpack_rows: return "unpack_rows";
    case Op::merge_partials: return "merge_partials";
    case Op::clear_output: return "clear_output";
    case Op::attention_forward: return "attention_forward";
    case Op::attention_forward_merge: return "attention_forward_merge";
    case Op::ring_pack: return "ring_pack";
    case Op::ring_attend: return "ring_attend";
    case Op::ring_finish: return "ring_finish";
  }
  return "?";
}

int arch_number(std::string_view arch) {
  std::string_view digits = arch;
  if (!digits.starts_with("sm_")) throw Error(fmt::format("arch '{}': expected sm_XY or sm_XYa, e.g. sm_90a", arch));
  digits.remove_prefix(3);
  if (digits.ends_with('a')) digits.remove_suffix(1);
  int number = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || number < 10) {
    throw Error(fmt::format("arch '{}': expected sm_XY or sm_XYa, e.g. sm_90a", arch));
  }
  return number;
}

bool is_attention(Op op) { return op == Op::attention_forward || op == Op::attention_forward_merge; }

bool is_ring(Op op) { return op == Op::ring_pack || op == Op::ring_attend || op == Op::ring_finish; }

int max_shared_bytes(int arch) {
  if ((arch >= 90 && arch < 120) || arch == 80 || arch == 87) return arch < 90 ? 163 * 1024 : 227 * 1024;
  return 99 * 1024;  // sm_86, sm_89, sm_120 and unknown parts: the conservative figure
}

int KernelSpec::shared_bytes() const {
  if (!is_attention(op)) return 0;
  return (tiles.block_m + 2 * tiles.stages * tiles.block_n) * head_dim * int(dtype_size(dtype));
}

std::string KernelSpec::canonical() const {
  std::string text = fmt::format("v1 op={} dtype={} d={} branches=", to_string(op), to_string(dtype), head_dim);
  for (std::size_t i = 0; i < branches.size(); ++i) {
    text += fmt::format("{}{}:{}", i ? "," : "", branches[i].w, branches[i].r);
  }
  text += fmt::format(" group={}/{} mode={} causal={} tiles={}x{} warps={} stages={} arch={}", group, groups,
                      dilatron::to_string(mode), causal ? 1 : 0, tiles.block_m, tiles.block_n, tiles.warps,
                      tiles.stages, arch);
  return text;
}

std::string KernelSpec::label() const {
  // Every field that changes the binary shows, so two cache entries never share a label.
  std::string text = fmt::format("{} {} d{}", to_string(op), to_string(dtype), head_dim);
  for (const BranchSpec& b : branches) text += fmt::format(" w{} r{}", b.w, b.r);
  if (mode == Mode::head_groups) text += fmt::format(" group {}/{}", group, groups);
  if (causal) text += " causal";
  if (is_attention(op)) {
    text += fmt::format(" tile {}x{} {}w {}s", tiles.block_m, tiles.block_n, tiles.warps, tiles.stages);
  } else {
    text += fmt::format(" {}w", tiles.warps);
  }
  return text + " " + arch;
}

void KernelSpec::validate() const {
  const int arch_no = arch_number(arch);
  if (arch_no < 80) invalid(*this, fmt::format("arch {} is older than sm_80 (no bf16, no cp.async)", arch));
  if (head_dim < 8 || head_dim > 512 || head_dim % 8 != 0) {
    invalid(*this, fmt::format("head_dim {} must be a multiple of 8 in [8, 512]", head_dim));
  }
  if (dtype == DType::f32 && (moves_rows(op) || is_attention(op) || is_ring(op))) invalid(*this, "GPU kernels take f16 or bf16 inputs");
  if (tiles.warps != 1 && tiles.warps != 2 && tiles.warps != 4 && tiles.warps != 8 && tiles.warps != 16) {
    invalid(*this, fmt::format("warps = {}: expected 1, 2, 4, 8 or 16", tiles.warps));
  }
  if (is_attention(op)) {
    if (head_dim != 64 && head_dim != 128) invalid(*this, fmt::format("head_dim {}: attention supports 64 and 128", head_dim));
    if (tiles.block_m != 16 * tiles.warps || tiles.warps > 8) {
      invalid(*this, fmt::format("block_m {} with {} warps: each warp owns 16 query rows (at most 8 warps)",
                                 tiles.block_m, tiles.warps));
    }
    if (tiles.block_n != 32 && tiles.block_n != 64 && tiles.block_n != 128) {
      invalid(*this, fmt::format("block_n = {}: expected 32, 64 or 128", tiles.block_n));
    }
    if (tiles.stages != 2 && tiles.stages != 3) invalid(*this, fmt::format("stages = {}: expected 2 or 3", tiles.stages));
    if (shared_bytes() > max_shared_bytes(arch_no)) {
      invalid(*this, fmt::format("needs {} bytes of shared memory, more than {} offers", shared_bytes(), arch));
    }
  } else if (tiles.block_m != 0 || tiles.block_n != 0 || tiles.stages != 0) {
    invalid(*this, "row-moving, merge and clear kernels take no block_m, block_n or stages");
  }
  if (causal && !is_attention(op)) invalid(*this, "causal does not apply to this op");
  if (moves_rows(op) || is_attention(op)) {
    if (branches.size() != 1) invalid(*this, "branch kernels serve exactly one branch");
    if (branches[0].w < 1 || branches[0].r < 1) invalid(*this, "segment length and dilation must be >= 1");
    const bool longnet = mode == Mode::longnet;
    if (longnet ? (group != 0 || groups != 1) : (groups < 1 || group < 0 || group >= groups)) {
      invalid(*this, fmt::format("group {}/{} does not fit mode {}", group, groups, dilatron::to_string(mode)));
    }
  } else if (!branches.empty() || group != 0 || groups != 1 || mode != Mode::longnet) {
    invalid(*this, fmt::format("{} takes no branches, groups or mode", to_string(op)));
  }
}

}  // namespace dilatron::codegen
