#include "codegen/kernel_spec.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <charconv>
#include <tuple>
#include <utility>

namespace dilatron::codegen {
namespace {

bool moves_rows(Op op) { return op == Op::pack_rows || op == Op::unpack_rows; }


[[noreturn]] void invalid(const KernelSpec& spec, const std::string& why) {
  throw Error(fmt::format("invalid kernel spec ({}): {}", spec.label(), why));
}

// The attention kernel's shape rules (templates/dilatron/attention.cuh states them as static_asserts).
void validate_attention_tiles(const KernelSpec& s, int arch_no) {
  const Tiles& t = s.tiles;
  const int threads = 32 * t.warps;
  if (s.head_dim != 64 && s.head_dim != 96 && s.head_dim != 128 && s.head_dim != 256) {
    invalid(s, fmt::format("head_dim {}: attention supports 64, 96, 128 and 256", s.head_dim));
  }
  if (t.warps < 2 || t.warps > 8) invalid(s, fmt::format("warps = {}: attention takes 2, 4 or 8", t.warps));
  if (t.block_m != 16 * t.warps && t.block_m != 32 * t.warps) {
    invalid(s, fmt::format("block_m {} with {} warps: each warp owns 16 or 32 query rows", t.block_m, t.warps));
  }
  if (t.block_n != 32 && t.block_n != 64 && t.block_n != 128) {
    invalid(s, fmt::format("block_n = {}: expected 32, 64 or 128", t.block_n));
  }
  // Each thread copies whole rows of 16-byte chunks, THREADS/8 rows apart (THREADS/4 in a 32-column tail).
  const int row_step = s.head_dim % 64 == 0 ? threads / 8 : threads / 4;
  if (t.block_m % row_step != 0 || t.block_n % row_step != 0) {
    invalid(s, fmt::format("tile {}x{} with {} threads: tile rows must be multiples of {} at head_dim {}", t.block_m,
                           t.block_n, threads, row_step, s.head_dim));
  }
  // The O and S accumulators of a thread: warp_rows * (head_dim + block_n) / 32 floats. Past 192 the
  // kernel cannot stay within 255 registers.
  if (t.warp_rows() * (s.head_dim + t.block_n) / 32 > 192) {
    invalid(s, fmt::format("{} rows per warp at head_dim {} and block_n {} need more registers than a thread has",
                           t.warp_rows(), s.head_dim, t.block_n));
  }
  if (t.stages != 2 && t.stages != 3) invalid(s, fmt::format("stages = {}: expected 2 or 3", t.stages));
  if (s.shared_bytes() > max_shared_bytes(arch_no)) {
    invalid(s, fmt::format("needs {} bytes of shared memory, more than {} offers", s.shared_bytes(), s.arch));
  }
}

// attention_backward's shape rules (templates/dilatron/attention_backward.cuh states them too).
void validate_backward_tiles(const KernelSpec& s, int arch_no) {
  const Tiles& t = s.tiles;
  if (s.head_dim != 64 && s.head_dim != 96 && s.head_dim != 128) {
    invalid(s, fmt::format("head_dim {}: the backward kernel supports 64, 96 and 128", s.head_dim));
  }
  if (t.warps != 2 && t.warps != 4 && t.warps != 8) invalid(s, fmt::format("warps = {}: backward takes 2, 4 or 8", t.warps));
  if (t.block_n != 16 * t.warps) {
    invalid(s, fmt::format("block_n {} with {} warps: each warp owns 16 key rows", t.block_n, t.warps));
  }
  if (t.block_m != 64 && t.block_m != 128) invalid(s, fmt::format("block_m = {}: query tiles of 64 or 128 rows", t.block_m));
  if (t.block_m % (8 * t.warps) != 0) {
    invalid(s, fmt::format("block_m {} with {} warps: tile rows must be multiples of {}", t.block_m, t.warps, 8 * t.warps));
  }
  if (t.stages != 2 && t.stages != 3) invalid(s, fmt::format("stages = {}: expected 2 or 3", t.stages));
  if (s.shared_bytes() > max_shared_bytes(arch_no)) {
    invalid(s, fmt::format("needs {} bytes of shared memory, more than {} offers", s.shared_bytes(), s.arch));
  }
}

}  // namespace

std::string_view to_string(Op op) noexcept {
  switch (op) {
    case Op::pack_rows: return "pack_rows";
    case Op::unpack_rows: return "unpack_rows";
    case Op::merge_partials: return "merge_partials";
    case Op::clear_output: return "clear_output";
    case Op::finish_output: return "finish_output";
    case Op::attention_forward: return "attention_forward";
    case Op::attention_partial: return "attention_partial";
    case Op::attention_partial_merge: return "attention_partial_merge";
    case Op::attention_block: return "attention_block";
    case Op::ring_pack: return "ring_pack";
    case Op::gradient_prepare: return "gradient_prepare";
    case Op::attention_block_backward: return "attention_block_backward";
    case Op::ring_unpack_add: return "ring_unpack_add";
    case Op::attention_backward: return "attention_backward";
    case Op::decode_partial: return "decode_partial";
    case Op::decode_combine: return "decode_combine";
    case Op::decode_append: return "decode_append";
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

bool is_attention(Op op) {
  return op == Op::attention_forward || op == Op::attention_partial || op == Op::attention_partial_merge ||
         op == Op::attention_block;
}

bool is_backward_attention(Op op) { return op == Op::attention_backward || op == Op::attention_block_backward; }

bool is_tiled_attention(Op op) { return is_attention(op) || is_backward_attention(op); }

bool is_block_attention(Op op) { return op == Op::attention_block || op == Op::attention_block_backward; }

bool is_decode_branch(Op op) { return op == Op::decode_partial; }

int max_shared_bytes(int arch) {
  if ((arch >= 90 && arch < 120) || arch == 80 || arch == 87) return arch < 90 ? 163 * 1024 : 227 * 1024;
  return 99 * 1024;  // sm_86, sm_89, sm_120 and unknown parts: the conservative figure
}

int KernelSpec::shared_bytes() const {
  const int element = int(dtype_size(dtype));
  if (is_backward_attention(op)) {
    // K and V tiles, dS^T, the Q and dO rings, and per stage the query tile's LSE and delta (fp32).
    return (2 * tiles.block_n + 2 * tiles.stages * tiles.block_m) * head_dim * element +
           tiles.block_n * tiles.block_m * element + tiles.stages * 2 * tiles.block_m * 4;
  }
  if (is_decode_branch(op)) return (5 * head_dim + 8) * 4;  // q, and per warp (max, sum) and O, in fp32
  if (!is_attention(op)) return 0;
  return (tiles.block_m + 2 * tiles.stages * tiles.block_n) * head_dim * element;
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

namespace {

// The next "name=value" field of a canonical string: its value, or an error naming what was expected.
std::string_view field(std::string_view& rest, std::string_view name) {
  const std::size_t end = rest.find(' ');
  const std::string_view token = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
  if (!token.starts_with(name) || token.size() < name.size() + 1 || token[name.size()] != '=') {
    throw Error(fmt::format("expected the field '{}=' where '{}' is", name, token));
  }
  return token.substr(name.size() + 1);
}

template <typename Int>
Int number(std::string_view digits, std::string_view name) {
  Int value{};
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) {
    throw Error(fmt::format("{} '{}' is not a number", name, digits));
  }
  return value;
}

// "A<separator>B" as two numbers.
template <typename Int>
std::pair<Int, Int> pair_of(std::string_view value, char separator, std::string_view name) {
  const std::size_t at = value.find(separator);
  if (at == std::string_view::npos) throw Error(fmt::format("{} '{}' needs the form A{}B", name, value, separator));
  return {number<Int>(value.substr(0, at), name), number<Int>(value.substr(at + 1), name)};
}

Op parse_op(std::string_view value) {
  for (int i = 0; i <= int(Op::decode_append); ++i) {
    if (to_string(Op(i)) == value) return Op(i);
  }
  throw Error(fmt::format("unknown op '{}'", value));
}

KernelSpec parse_fields(std::string_view rest) {
  KernelSpec spec;
  spec.op = parse_op(field(rest, "op"));
  spec.dtype = parse_dtype(field(rest, "dtype"));
  spec.head_dim = number<int>(field(rest, "d"), "d");
  for (std::string_view list = field(rest, "branches"); !list.empty();) {
    const std::size_t comma = list.find(',');
    const auto [w, r] = pair_of<std::int64_t>(list.substr(0, comma), ':', "branch");
    spec.branches.push_back({w, r});
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
  std::tie(spec.group, spec.groups) = pair_of<int>(field(rest, "group"), '/', "group");
  spec.mode = parse_mode(field(rest, "mode"));
  spec.causal = number<int>(field(rest, "causal"), "causal") != 0;
  std::tie(spec.tiles.block_m, spec.tiles.block_n) = pair_of<int>(field(rest, "tiles"), 'x', "tiles");
  spec.tiles.warps = number<int>(field(rest, "warps"), "warps");
  spec.tiles.stages = number<int>(field(rest, "stages"), "stages");
  spec.arch = std::string(field(rest, "arch"));
  return spec;
}

}  // namespace

KernelSpec KernelSpec::parse(std::string_view text) {
  try {
    if (!text.starts_with("v1 ")) throw Error("expected it to begin with 'v1 '");
    const KernelSpec spec = parse_fields(text.substr(3));
    // Whatever the reading let through (a trailing field, "causal=2", "d=064") fails the round trip.
    if (spec.canonical() != text) throw Error(fmt::format("it reads back as '{}'", spec.canonical()));
    return spec;
  } catch (const Error& e) {
    throw Error(fmt::format("kernel spec '{}': {}", text, e.what()));
  }
}

std::string KernelSpec::label() const {
  // Every field that changes the binary shows, so two cache entries never share a label.
  std::string text = fmt::format("{} {} d{}", to_string(op), to_string(dtype), head_dim);
  for (const BranchSpec& b : branches) text += fmt::format(" w{} r{}", b.w, b.r);
  if (mode == Mode::head_groups) text += fmt::format(" group {}/{}", group, groups);
  if (causal) text += " causal";
  if (is_tiled_attention(op)) {
    text += fmt::format(" tile {}x{} {}w {}s", tiles.block_m, tiles.block_n, tiles.warps, tiles.stages);
  } else if (is_decode_branch(op)) {
    text += fmt::format(" {} keys/CTA {}w", tiles.block_n, tiles.warps);
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
  if (dtype == DType::f64) invalid(*this, "GPU kernels take no float64 (the host reference does)");
  const bool decode = is_decode_branch(op) || op == Op::decode_combine || op == Op::decode_append;
  if (dtype == DType::f32 && (moves_rows(op) || is_tiled_attention(op) || op == Op::ring_pack ||
                              op == Op::finish_output || op == Op::gradient_prepare || decode)) {
    invalid(*this, "GPU kernels take f16 or bf16 inputs");
  }
  if (op == Op::ring_unpack_add && dtype != DType::f32) invalid(*this, "ring_unpack_add adds fp32 gradients: dtype f32");
  if (tiles.warps != 1 && tiles.warps != 2 && tiles.warps != 4 && tiles.warps != 8 && tiles.warps != 16) {
    invalid(*this, fmt::format("warps = {}: expected 1, 2, 4, 8 or 16", tiles.warps));
  }
  if (is_attention(op)) {
    validate_attention_tiles(*this, arch_no);
    if (op == Op::attention_partial && mode != Mode::longnet) {
      invalid(*this, "only longnet branches write the accumulator first: head_groups rows have one branch each");
    }
  } else if (is_backward_attention(op)) {
    validate_backward_tiles(*this, arch_no);
  } else if (is_decode_branch(op)) {
    if (tiles.block_m != 0 || tiles.stages != 0 || tiles.warps != 4 || tiles.block_n < 128 || tiles.block_n % 128 != 0) {
      invalid(*this, "decode_partial takes 4 warps and block_n keys per CTA, a multiple of 128 (no block_m or stages)");
    }
    if (head_dim % 32 != 0) invalid(*this, fmt::format("head_dim {}: decode_partial needs a multiple of 32", head_dim));
  } else if (tiles.block_m != 0 || tiles.block_n != 0 || tiles.stages != 0) {
    invalid(*this, "row-moving, merge and clear kernels take no block_m, block_n or stages");
  }
  if (causal && !is_tiled_attention(op)) invalid(*this, "causal does not apply to this op");
  if (causal && is_block_attention(op)) {
    invalid(*this, "a ring block's keys are all visible to the queries that receive it: never causal");
  }
  if (moves_rows(op) || is_tiled_attention(op) || is_decode_branch(op)) {
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
