#include "cache/cache_dir.hpp"

#include <dilatron/error.hpp>

#include <cstdlib>

namespace dilatron::cache {

std::filesystem::path default_cache_dir() {
  auto env = [](const char* name) -> const char* {
    const char* value = std::getenv(name);
    return value && *value ? value : nullptr;
  };
  if (const char* dir = env("DILATRON_CACHE_DIR")) return dir;
  if (const char* xdg = env("XDG_CACHE_HOME")) return std::filesystem::path(xdg) / "dilatron";
  if (const char* home = env("HOME")) return std::filesystem::path(home) / ".cache" / "dilatron";
  throw Error("no cache directory: set DILATRON_CACHE_DIR (neither XDG_CACHE_HOME nor HOME is set)");
}

}  // namespace dilatron::cache
