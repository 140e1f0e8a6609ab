#include "common/log.hpp"

#include <cstdlib>
#include <string_view>

namespace dilatron::log {

Level level() noexcept {
  static const Level value = [] {
    const char* text = std::getenv("DILATRON_LOG");
    const std::string_view v = text ? text : "";
    return v == "debug" ? Level::debug : v == "info" ? Level::info : Level::warn;
  }();
  return value;
}

}  // namespace dilatron::log
