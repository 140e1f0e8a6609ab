// Lazily opened shared libraries (libcuda, libnvrtc, libnccl): one binary runs on machines with and
// without them, and only the calls that need one fail, naming what is missing.
#pragma once

#include <dilatron/error.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

// A function's symbol after macro expansion (cuda.h maps cuMemAlloc to cuMemAlloc_v2, for example).
#define DILATRON_SYMBOL_NAME(name) DILATRON_SYMBOL_NAME_TEXT(name)
#define DILATRON_SYMBOL_NAME_TEXT(name) #name

// A table of functions is a struct built from an X-macro list, X(name) per function:
//   struct Api { MY_CALLS(DILATRON_TABLE_MEMBER) };
// and is filled by load_table(info, DILATRON_BIND_CALLS(MY_CALLS)). Member and symbol both take the
// expanded name, so the pointer's type and the symbol it is bound to agree.
#define DILATRON_TABLE_MEMBER(name) decltype(&::name) name = nullptr;
#define DILATRON_BIND_ONE(name) ::dilatron::bind(lib, DILATRON_SYMBOL_NAME(name), table.name, missing);
#define DILATRON_BIND_CALLS(CALLS) \
  [](const ::dilatron::DynamicLibrary& lib, auto& table, std::string& missing) { CALLS(DILATRON_BIND_ONE) }

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
  const std::string& path() const noexcept { return path_; }  // the file that opened, resolved by the loader
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

// A table of a library's functions; `error` says why it is unusable.
template <class Table>
struct LoadedTable {
  Table api{};
  std::string library, error;
  std::shared_ptr<const DynamicLibrary> handle;  // keeps the bound functions valid

  // Throws dilatron::Error (ErrorKind::cuda) carrying `error`.
  const Table& usable() const {
    if (!error.empty()) throw Error(error, ErrorKind::cuda);
    return api;
  }
};

// How a library is found and named in errors.
struct LibraryInfo {
  std::vector<std::string> candidates;  // tried in order
  std::string name;                     // e.g. "NVRTC"
  std::string remedy;                   // what to do when no candidate opens
};

// Opens the first candidate that loads and binds every function of the table. Never throws: a missing
// library or symbol is recorded in `error` (the first missing symbol named), and usable() reports it.
template <class Table, class BindAll>
LoadedTable<Table> load_table(const LibraryInfo& info, BindAll bind_all) {
  LoadedTable<Table> result;
  auto lib = std::make_shared<const DynamicLibrary>(info.candidates);
  if (!lib->loaded()) {
    result.error = info.name + " could not be loaded (" + lib->error() + "); " + info.remedy;
    return result;
  }
  result.library = lib->path();
  std::string missing;
  bind_all(*lib, result.api, missing);
  if (!missing.empty()) result.error = info.name + " in " + lib->path() + " lacks " + missing + " (too old?)";
  result.handle = std::move(lib);
  return result;
}

}  // namespace dilatron
