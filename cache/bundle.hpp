// Moving a pre-warmed cache between machines (for example to GPU nodes without NVRTC): one file holding
// entry files as they are on disk, and the tuning records that pick among them.
//   "DILATRON-CACHE-BUNDLE v2\n" | u64 entry count | per entry: u64 bytes, entry file bytes |
//   u64 bytes, tuning JSON (autotune/tuning_db.hpp; empty: none)
// A v1 bundle is the same without the tuning section. Reading checks every entry before anything is
// installed.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "cache/entry.hpp"
#include "common/atomic_file.hpp"

namespace dilatron::cache {

struct Bundle {
  std::vector<Entry> entries;
  std::string tuning;  // JSON text, opaque here; empty when there is none
};

// Writes the bundle into `out`; the caller commits it (after checking the destination before any work).
void write_bundle(AtomicFile& out, const Bundle& bundle);

// Throws dilatron::Error naming every bad entry (or a truncated or foreign file).
Bundle read_bundle(const std::filesystem::path& file);

}  // namespace dilatron::cache
