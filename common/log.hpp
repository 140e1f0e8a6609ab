// Diagnostics on stderr. Warnings always print; DILATRON_LOG=info or debug adds more.
#pragma once

#include <fmt/format.h>

#include <cstdio>

namespace dilatron::log {

enum class Level { warn = 0, info = 1, debug = 2 };

// Read once from DILATRON_LOG.
Level level() noexcept;

template <class... Args>
void write(Level at, fmt::format_string<Args...> format, Args&&... args) {
  if (at > level()) return;
  static constexpr const char* kNames[] = {"warning", "info", "debug"};
  fmt::print(stderr, "dilatron {}: {}\n", kNames[int(at)], fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace dilatron::log
