// Where compiled kernels live: DILATRON_CACHE_DIR, else $XDG_CACHE_HOME/dilatron, else ~/.cache/dilatron.
#pragma once

#include <filesystem>

namespace dilatron::cache {

std::filesystem::path default_cache_dir();

}  // namespace dilatron::cache
