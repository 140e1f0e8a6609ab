#include "runtime/stream_workspace.hpp"

#include <exception>

#include "common/log.hpp"
#include "runtime/driver.hpp"

namespace dilatron {

StreamWorkspace::StreamWorkspace(std::size_t bytes, CUstream stream) : bytes_(bytes), stream_(stream) {
  if (bytes == 0) return;
  driver::current_context();  // the null stream needs a current context
  DILATRON_CU(cuMemAllocAsync(&pointer_, bytes, stream));
}

StreamWorkspace::~StreamWorkspace() {
  // Stream-ordered: the memory returns to the pool only once the launches queued before this free have
  // run. A destructor cannot throw, so a failure (say, the stream was destroyed) is reported and the
  // bytes stay with the pool until the context goes.
  if (!pointer_) return;
  try {
    DILATRON_CU(cuMemFreeAsync(pointer_, stream_));
  } catch (const std::exception& e) {
    try {
      log::write(log::Level::warn, "{}", e.what());
    } catch (...) {  // stderr failing leaves nowhere to report to
    }
  }
}

}  // namespace dilatron
