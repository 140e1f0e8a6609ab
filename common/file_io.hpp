// Whole-file reads for the cache's entries and bundles.
#pragma once

#include <filesystem>
#include <string>

namespace dilatron {

// Throws dilatron::Error naming the file and the system's reason.
std::string read_file(const std::filesystem::path& path);

}  // namespace dilatron
