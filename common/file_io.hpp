// Whole-file reads for the cache's entries, bundles and tuning database.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>

namespace dilatron {

// Reads a regular file of at most `max_bytes` (checked before anything is allocated; a FIFO, a device
// such as /dev/zero or a directory is refused, never read). Throws dilatron::Error naming the file and
// the reason.
std::string read_file(const std::filesystem::path& path,
                      std::uint64_t max_bytes = std::numeric_limits<std::uint64_t>::max());

}  // namespace dilatron
