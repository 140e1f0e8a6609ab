#include "common/dynlib.hpp"

#include <dlfcn.h>
#include <link.h>

namespace dilatron {

DynamicLibrary::DynamicLibrary(const std::vector<std::string>& candidates) {
  for (const std::string& candidate : candidates) {
    // RTLD_NODELETE: NVRTC allocates an exception pool when loaded and frees it only at process exit;
    // unmapping it earlier turns that pool into a leak (LeakSanitizer reports it) and would dangle
    // anything it still holds.
    handle_ = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (handle_) {
      // The file the loader actually chose (a soname resolves through the search path), so `dilatron
      // info` shows which NVRTC or driver a run uses.
      link_map* map = nullptr;
      path_ = dlinfo(handle_, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && *map->l_name ? map->l_name : candidate;
      error_.clear();
      return;
    }
    const char* why = dlerror();
    error_ += (error_.empty() ? "" : "; ") + std::string(why ? why : candidate + ": not found");
  }
}

DynamicLibrary::~DynamicLibrary() {
  if (handle_) dlclose(handle_);
}

void* DynamicLibrary::symbol(const char* name) const noexcept { return handle_ ? dlsym(handle_, name) : nullptr; }

}  // namespace dilatron
