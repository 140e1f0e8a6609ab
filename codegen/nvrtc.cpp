#include "codegen/nvrtc.hpp"

#include <dilatron/error.hpp>

#include <cstdlib>
#include <vector>

namespace dilatron::nvrtc {
namespace {

using Loaded = LoadedTable<Api>;

// The soname of the NVRTC this library was built against first, then the toolkit it was built with.
std::vector<std::string> candidates() {
  if (const char* path = std::getenv("DILATRON_NVRTC_LIBRARY"); path && *path) return {path};
  return {"libnvrtc.so." DILATRON_NVRTC_MAJOR, "libnvrtc.so", DILATRON_CUDA_LIBRARY_DIR "/libnvrtc.so." DILATRON_NVRTC_MAJOR};
}

const Loaded& loaded() {
  static const Loaded instance = load_table<Api>(
      {candidates(), "NVRTC",
       "set DILATRON_NVRTC_LIBRARY or use kernels pre-warmed with `dilatron cache warm`"},
      DILATRON_BIND_CALLS(DILATRON_NVRTC_CALLS));
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
