// Lazily opened shared libraries (libcuda, libnvrtc, libnccl): one binary runs on machines with and
// without them, and only the calls that need one fail, naming what is missing.
#pragma once

#include <dilatron/error.hpp>

#include <string>
#include <vector>

// A function's symbol after macro expansion (cuda.h maps cuMemAlloc to cuMemAlloc_v2, for example).
#define DILATRON_SYMBOL_NAME(name) DILATRON_SYMBOL_NAME_TEXT(name)
#define DILATRON_SYMBOL_NAME_TEXT(name) #name

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

// Points `function` at symbol `name` of `lib`; a missing symbol leaves it null and, if it is the first,
// its name in `missing`.
template <class Function>
void bind(const DynamicLibrary& lib, const char* name, Function& function, std::string& missing) {
  function = reinterpret_cast<Function>(lib.symbol(name));
  if (!function && missing.empty()) missing = name;
}

// A table of a library's functions, opened once; `error` says why it is unusable.
template <class Table>
struct LoadedTable {
  Table api{};
  std::string library, error;

  // Throws dilatron::Error (ErrorKind::cuda) carrying `error`.
  const Table& usable() const {
    if (!error.empty()) throw Error(error, ErrorKind::cuda);
    return api;
  }
};

}  // namespace dilatron
