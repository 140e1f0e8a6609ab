#include "codegen/jit_dump.hpp"

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/atomic_file.hpp"
#include "common/log.hpp"

namespace dilatron::codegen {

std::string dump_stem(std::string_view label, std::string_view compiled_text) {
  std::string stem;
  for (const char c : label) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
    stem += safe ? c : '-';
  }
  return fmt::format("{}-{:08x}", stem, std::uint32_t(XXH3_64bits(compiled_text.data(), compiled_text.size())));
}

void write_dump(const std::filesystem::path& dir, const KernelDump& dump) noexcept {
  std::string problem;
  try {
    std::filesystem::create_directories(dir);
    const std::string_view cubin(dump.cubin.data(), dump.cubin.size());
    for (const auto& [suffix, bytes] :
         {std::pair<const char*, std::string_view>{".cu", dump.source}, {".log", dump.log}, {".ptx", dump.ptx},
          {".ptxas", dump.ptxas}, {".cubin", cubin}}) {
      if (bytes.empty()) continue;
      AtomicFile file(dir / (dump.stem + suffix));
      file.write(bytes.data(), bytes.size());
      file.commit();
    }
  } catch (const std::exception& e) {
    problem = e.what();
  }
  if (problem.empty()) return;
  try {
    log::write(log::Level::warn, "DILATRON_JIT_DUMP: could not write the dump of {} into {}: {}", dump.stem,
               dir.string(), problem);
  } catch (...) {  // stderr failing leaves nowhere to report to
  }
}

}  // namespace dilatron::codegen
