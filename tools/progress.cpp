#include "tools/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

namespace dilatron::cli {

ProgressLine::ProgressLine(std::string what, bool enabled)
    : what_(std::move(what)),
      shown_(enabled && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO)),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::update(std::int64_t done, std::int64_t total) {
  if (!shown_ || total <= 0) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (now - last_ < std::chrono::milliseconds(100) && done < total) return;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count(), fraction = double(done) / double(total);
  std::string eta;
  if (fraction > 0.02 && done < total) eta = fmt::format(", about {:.0f} s left", elapsed * (1 - fraction) / fraction);
  fmt::print(stderr, "\r\033[K{}: {:.0f}%, {:.0f} s{}", what_, 100 * fraction, elapsed, eta);
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressLine::finish() {
  std::lock_guard lock(mutex_);
  if (drawn_) fmt::print(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace dilatron::cli
