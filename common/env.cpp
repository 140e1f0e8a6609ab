#include "common/env.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <limits>

namespace dilatron::env {

std::string_view text(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::uint64_t parse_count(const char* name, std::string_view value, std::uint64_t min, std::uint64_t max,
                          bool suffixes) {
  const std::string_view expected = suffixes ? "a byte count such as 1073741824 or 1G" : "a whole number";
  auto refuse = [&](std::string_view why) -> std::uint64_t {
    throw Error(fmt::format("{}='{}': {}; expected {} from {} to {}", name, value, why, expected, min, max));
  };
  std::size_t i = 0;
  std::uint64_t number = 0;
  for (; i < value.size() && value[i] >= '0' && value[i] <= '9'; ++i) {
    const std::uint64_t digit = std::uint64_t(value[i] - '0');
    if (number > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return refuse("too large");
    number = number * 10 + digit;
  }
  if (i == 0) return refuse("not a number");
  int shift = 0;
  if (suffixes && i + 1 == value.size()) {
    shift = value[i] == 'K' ? 10 : value[i] == 'M' ? 20 : value[i] == 'G' ? 30 : -1;
    if (shift < 0) return refuse("unknown unit");
    ++i;
  }
  if (i != value.size()) return refuse("unexpected text after the number");
  if (shift > 0 && number > (std::numeric_limits<std::uint64_t>::max() >> shift)) return refuse("too large");
  number <<= shift;
  if (number < min || number > max) return refuse("out of range");
  return number;
}

bool parse_switch(const char* name, std::string_view value) {
  if (value.empty() || value == "0") return false;
  if (value == "1") return true;
  throw Error(fmt::format("{}='{}': expected 1 (on) or 0 (off)", name, value));
}

namespace {
std::atomic<bool> emulator_selected{false};
}

// Choosing the emulated device reads its switch too, so a bad value fails before any work.
void select_emulated_device() {
  emulator_profile();
  emulator_selected = true;
}

bool emulated_device() {
  if (emulator_selected) return true;
  static const bool emulated = [] {
    const std::string_view value = text("DILATRON_DEVICE");
    if (value.empty() || value == "gpu") return false;
    if (value != "emulator") {
      throw Error(fmt::format("DILATRON_DEVICE='{}': expected gpu (the default) or emulator", value));
    }
    emulator_profile();  // its switch is checked as the device is chosen
    return true;
  }();
  return emulated;
}

bool emulator_profile() {
  static const bool on = parse_switch("DILATRON_EMULATOR_PROFILE", text("DILATRON_EMULATOR_PROFILE"));
  return on;
}

}  // namespace dilatron::env
