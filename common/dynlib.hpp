// Lazily opened shared libraries (libcuda, libnvrtc, libnccl): one binary runs on machines with and
// without them, and only the calls that need one fail, naming what is missing.
#pragma once

#include <string>
#include <vector>

namespace dilatron {

class DynamicLibrary {
 public:
  // Tries each candidate in order (sonames or absolute paths). On failure, handle() is null and
  // error() lists what every candidate answered.
  explicit DynamicLibrary(const std::vector<std::string>& candidates);
  ~DynamicLibrary();
  DynamicLibrary(const DynamicLibrary&) = delete;
  DynamicLibrary& operator=(const DynamicLibrary&) = delete;

  bool loaded() const noexcept { return handle_ != nullptr; }
  const std::string& error() const noexcept { return error_; }
  const std::string& path() const noexcept { return path_; }  // the candidate that opened
  // Null when absent; the caller decides whether that is fatal.
  void* symbol(const char* name) const noexcept;

 private:
  void* handle_ = nullptr;
  std::string path_, error_;
};

}  // namespace dilatron
