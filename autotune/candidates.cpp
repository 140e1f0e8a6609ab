#include "autotune/candidates.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace dilatron::autotune {
namespace {

// Shared memory of one SM; each resident CTA also takes 1 KiB of it for the system.
int shared_per_sm(int arch) {
  if (arch == 80 || arch == 87) return 164 * 1024;
  return arch >= 90 && arch < 120 ? 228 * 1024 : 100 * 1024;
}

int threads_per_sm(int arch) { return arch == 80 || arch == 87 || (arch >= 90 && arch < 120) ? 2048 : 1536; }

}  // namespace

std::string tiles_text(const codegen::Tiles& t) {
  return fmt::format("{}x{}x{}x{}", t.block_m, t.block_n, t.warps, t.stages);
}

codegen::Tiles parse_tiles(std::string_view text) {
  int values[4];
  std::string_view rest = text;
  for (int i = 0; i < 4; ++i) {
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), values[i]);
    const bool last = i == 3;
    if (ec != std::errc{} || values[i] < 1 || end == rest.data() ||
        (last ? end != rest.data() + rest.size() : end == rest.data() + rest.size() || *end != 'x')) {
      throw Error(fmt::format("tiles '{}': expected BLOCK_MxBLOCK_NxWARPSxSTAGES, e.g. 128x64x4x3", text));
    }
    rest = std::string_view(end + (last ? 0 : 1), std::size_t(rest.data() + rest.size() - end - (last ? 0 : 1)));
  }
  return {values[0], values[1], values[2], values[3]};
}

std::vector<codegen::Tiles> candidate_tiles() {
  std::vector<codegen::Tiles> out;
  for (int warps : {4, 8, 2}) {
    for (int rows : {32, 16}) {
      for (int block_n : {64, 32, 128}) {
        for (int stages : {3, 2}) out.push_back({rows * warps, block_n, warps, stages});
      }
    }
  }
  return out;
}

int ctas_per_sm(const codegen::KernelSpec& spec, int registers) {
  const int arch = codegen::arch_number(spec.arch);
  int ctas = std::min(32, threads_per_sm(arch) / (32 * spec.tiles.warps));
  if (spec.shared_bytes() > 0) ctas = std::min(ctas, shared_per_sm(arch) / (spec.shared_bytes() + 1024));
  if (registers > 0) {
    const int per_warp = (registers * 32 + 255) / 256 * 256;
    ctas = std::min(ctas, 65536 / per_warp / spec.tiles.warps);
  }
  return ctas;
}

std::string static_pruning(const codegen::KernelSpec& candidate) {
  try {
    candidate.validate();
  } catch (const Error& e) {
    const std::string what = e.what();
    const auto colon = what.find("): ");  // drop "invalid kernel spec (<label>)": the table names the candidate
    return colon == std::string::npos ? what : what.substr(colon + 3);
  }
  if (const int warps = ctas_per_sm(candidate) * candidate.tiles.warps; warps < kMinWarpsPerSm) {
    return fmt::format("{} warps per SM by shared memory ({} bytes per CTA): fewer than {}", warps,
                       candidate.shared_bytes(), kMinWarpsPerSm);
  }
  return {};
}

std::string ptxas_pruning(const codegen::KernelSpec& candidate, const codegen::PtxasReport& report) {
  if (std::string failure = codegen::ptxas_check_failure(report); !failure.empty()) return failure;
  if (const int warps = ctas_per_sm(candidate, report.registers) * candidate.tiles.warps; warps < kMinWarpsPerSm) {
    return fmt::format("{} warps per SM at {} registers: fewer than {}", warps, report.registers, kMinWarpsPerSm);
  }
  return {};
}

}  // namespace dilatron::autotune
