#include "common/log.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace dilatron::log {

Level level() noexcept {
  static const Level value = [] {
    const char* text = std::getenv("DILATRON_LOG");
    const std::string_view v = text ? text : "";
    if (v == "debug") return Level::debug;
    if (v == "info") return Level::info;
    if (!v.empty() && v != "warn") {
      // A misspelt level would otherwise silently show less than asked for.
      std::fprintf(stderr, "dilatron warning: DILATRON_LOG=%.*s: expected warn, info or debug; using warn\n",
                   int(std::min<std::size_t>(v.size(), 64)), v.data());
    }
    return Level::warn;
  }();
  return value;
}

}  // namespace dilatron::log
