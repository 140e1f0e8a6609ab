#include "runtime/ring/nccl.hpp"

#include <dilatron/error.hpp>

#include <cstdlib>
#include <vector>

namespace dilatron::nccl {
namespace {

using Loaded = LoadedTable<Api>;

// NCCL's soname has been libnccl.so.2 for every release; the toolkit's folder catches an NCCL
// installed beside it but not on the loader's path.
std::vector<std::string> candidates() {
  if (const char* path = std::getenv("DILATRON_NCCL_LIBRARY"); path && *path) return {path};
  return {"libnccl.so.2", DILATRON_CUDA_LIBRARY_DIR "/libnccl.so.2"};
}

const Loaded& loaded() {
  static const Loaded instance =
      load_table<Api>({candidates(), "NCCL",
                       "install NCCL 2.13 or newer, set DILATRON_NCCL_LIBRARY to its libnccl.so.2, or run the ring "
                       "with the Local or Host transport"},
                      DILATRON_BIND_CALLS(DILATRON_NCCL_CALLS));
  return instance;
}

}  // namespace

const Api& api() { return loaded().usable(); }

Version decode_version(int code) noexcept {
  if (code >= 10000) return {code / 10000, code / 100 % 100, code % 100};
  return {code / 1000, code / 100 % 10, code % 100};
}

void check(ncclResult_t result, const char* call) {
  if (result == ncclSuccess || result == ncclInProgress) return;
  const Api& a = api();
  std::string message = a.ncclGetErrorString(result);
  // The last error says which peer or resource failed; the code alone says only "system error".
  if (const char* last = a.ncclGetLastError(nullptr); last && *last) message += std::string(" (") + last + ")";
  throw Error(call, int(result), message);
}

Status probe() noexcept {
  Status status;
  try {
    status.library = loaded().library;  // also when it lacks a function: the problem names which
    const Api& a = api();
    status.loaded = true;
    int code = 0;
    if (const ncclResult_t r = a.ncclGetVersion(&code); r != ncclSuccess) {
      status.problem = std::string("ncclGetVersion failed: ") + a.ncclGetErrorString(r);
    } else {
      status.version = decode_version(code);
    }
  } catch (const std::exception& e) {
    status.problem = e.what();
  }
  return status;
}

}  // namespace dilatron::nccl
