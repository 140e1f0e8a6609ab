// Moving a pre-warmed cache between machines (for example to GPU nodes without NVRTC): one file holding
// entry files as they are on disk, and the tuning records that pick among them.
//   "DILATRON-CACHE-BUNDLE v3\n" | u64 entry count | per entry: u64 bytes, entry file bytes |
//   u64 bytes, tuning JSON (autotune/tuning_db.hpp; empty: none) | u64 XXH3-64 of the tuning JSON
// Entries carry their own checksums. v2 lacks the tuning checksum, v1 the tuning section; both are
// still read. Reading checks every entry and the tuning checksum before anything is installed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cache/entry.hpp"
#include "common/atomic_file.hpp"

namespace dilatron::cache {

// Larger files are refused before they are read (a bundle is read whole).
inline constexpr std::uint64_t kMaxBundleBytes = std::uint64_t(4) << 30;

struct Bundle {
  std::vector<Entry> entries;
  std::string tuning;  // JSON text, opaque here; empty when there is none
};

// Writes the bundle into `out`; the caller commits it (after checking the destination before any work).
void write_bundle(AtomicFile& out, const Bundle& bundle);

// Throws dilatron::Error naming every bad entry (or a truncated or foreign file).
Bundle read_bundle(const std::filesystem::path& file);

}  // namespace dilatron::cache
