#include "codegen/nvrtc.hpp"

#include <dilatron/error.hpp>

#include <cstdlib>
#include <vector>

#include "common/dynlib.hpp"

namespace dilatron::nvrtc {
namespace {

using Loaded = LoadedTable<Api>;

// The soname of the NVRTC this library was built against first, then the toolkit it was built with.
std::vector<std::string> candidates() {
  if (const char* path = std::getenv("DILATRON_NVRTC_LIBRARY"); path && *path) return {path};
  return {"libnvrtc.so." DILATRON_NVRTC_MAJOR, "libnvrtc.so", DILATRON_CUDA_LIBRARY_DIR "/libnvrtc.so." DILATRON_NVRTC_MAJOR};
}

const Loaded& loaded() {
  static const Loaded instance = [] {
    Loaded result;
    static DynamicLibrary lib(candidates());
    if (!lib.loaded()) {
      result.error = "NVRTC could not be loaded (" + lib.error() +
                     "); set DILATRON_NVRTC_LIBRARY or use kernels pre-warmed with `dilatron cache warm`";
      return result;
    }
    result.library = lib.path();
    std::string missing;
#define DILATRON_NVRTC_BIND(name) ::dilatron::bind(lib, DILATRON_SYMBOL_NAME(name), result.api.name, missing);
    DILATRON_NVRTC_CALLS(DILATRON_NVRTC_BIND)
#undef DILATRON_NVRTC_BIND
    if (!missing.empty()) result.error = lib.path() + " lacks " + missing;
    return result;
  }();
  return instance;
}

}  // namespace

const Api& api() { return loaded().usable(); }

void check(nvrtcResult result, const char* call) {
  if (result == NVRTC_SUCCESS) return;
  throw Error(call, int(result), api().nvrtcGetErrorString(result));
}

Status probe() noexcept {
  Status status;
  try {
    const Api& a = api();
    status.loaded = true;
    status.library = loaded().library;
    if (nvrtcResult r = a.nvrtcVersion(&status.major, &status.minor); r != NVRTC_SUCCESS) {
      status.problem = std::string("nvrtcVersion failed: ") + a.nvrtcGetErrorString(r);
    }
  } catch (const std::exception& e) {
    status.problem = e.what();
  }
  return status;
}

}  // namespace dilatron::nvrtc
