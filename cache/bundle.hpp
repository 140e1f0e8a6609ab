// Moving a pre-warmed cache between machines (for example to GPU nodes without NVRTC): one file holding
// entry files as they are on disk. Import checks every entry before installing any.
//   "DILATRON-CACHE-BUNDLE v1\n" | u64 entry count | per entry: u64 bytes, entry file bytes
#pragma once

#include <cstddef>
#include <filesystem>

#include "cache/disk_cache.hpp"

namespace dilatron::cache {

struct ExportResult {
  std::size_t exported = 0, skipped_bad = 0;
};
// Writes atomically; bad entries are skipped (and counted), never shipped.
ExportResult export_bundle(const DiskCache& cache, const std::filesystem::path& file);

struct ImportResult {
  std::size_t imported = 0;
  std::size_t foreign = 0;  // built by another library/NVRTC build: kept, but this build will not load them
};
// Throws dilatron::Error naming every bad entry, and then installs nothing.
ImportResult import_bundle(DiskCache& cache, const std::filesystem::path& file);

}  // namespace dilatron::cache
