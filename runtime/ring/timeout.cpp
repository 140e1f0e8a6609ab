#include "runtime/ring/timeout.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace dilatron::ring {
namespace {

constexpr std::int64_t kMaxSeconds = 366LL * 24 * 3600;

[[noreturn]] void refuse(std::string_view text, std::string_view why) {
  throw Error(fmt::format("DILATRON_RING_TIMEOUT_S='{}': {}; expected seconds such as 300 or 2.5", text, why));
}

}  // namespace

std::chrono::milliseconds parse_ring_timeout(std::string_view text) {
  // Parsed by hand: strtod would take "1e3", " 5", "inf" and hexadecimal, and locales change its point.
  std::int64_t whole = 0, millis = 0;
  std::size_t i = 0, digits = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i, ++digits) {
    if (whole > kMaxSeconds) refuse(text, "more than a year");
    whole = whole * 10 + (text[i] - '0');
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    std::int64_t scale = 100;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i, ++digits, scale /= 10) millis += (text[i] - '0') * scale;
  }
  if (digits == 0 || i != text.size()) refuse(text, "not a plain decimal number");
  if (whole > kMaxSeconds) refuse(text, "more than a year");
  const std::chrono::milliseconds result{whole * 1000 + millis};
  if (result.count() < 1) refuse(text, "must be at least 0.001");
  return result;
}

std::chrono::milliseconds ring_timeout() {
  const char* text = std::getenv("DILATRON_RING_TIMEOUT_S");
  return text && *text ? parse_ring_timeout(text) : kDefaultRingTimeout;
}

bool poll_until(const std::function<bool()>& finished, std::chrono::milliseconds timeout,
                std::chrono::microseconds longest_pause) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + timeout;
  std::chrono::microseconds pause{0};
  for (;;) {
    if (finished()) return true;
    if (Clock::now() >= deadline) return false;
    if (pause.count() == 0) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::min<Clock::duration>(pause, deadline - Clock::now()));
    }
    pause = std::min(longest_pause, 2 * pause + std::chrono::microseconds(10));
  }
}

}  // namespace dilatron::ring
