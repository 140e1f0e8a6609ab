// One redrawn line on stderr for long work ("run: 42%, 12 s, about 17 s left"), shown only when
// stdout and stderr are terminals and never with --quiet, so scripts and logs see nothing extra.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace dilatron::cli {

class ProgressLine {
 public:
  // Shown when `enabled` and both stdout and stderr are terminals.
  ProgressLine(std::string what, bool enabled);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Thread-safe; redraws at most ten times a second.
  void update(std::int64_t done, std::int64_t total);
  // Erases the line (also done on destruction).
  void finish();

 private:
  std::string what_;
  bool shown_;
  bool drawn_ = false;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace dilatron::cli
