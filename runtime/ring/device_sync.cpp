#include "runtime/ring/device_sync.hpp"

#include "common/log.hpp"
#include "runtime/driver.hpp"

namespace dilatron::ring {
namespace {

// Destructors cannot throw; a failure there is reported and the object is gone either way.
void warn_unless_success(CUresult result, const char* call) noexcept {
  try {
    driver::check(result, call);
  } catch (const std::exception& e) {
    try {
      log::write(log::Level::warn, "{}", e.what());
    } catch (...) {  // stderr failing leaves nowhere to report to
    }
  }
}

}  // namespace

ContextScope::ContextScope(CUcontext context) { DILATRON_CU(cuCtxPushCurrent(context)); }

ContextScope::~ContextScope() {
  CUcontext popped = nullptr;
  warn_unless_success(driver::api().cuCtxPopCurrent(&popped), "cuCtxPopCurrent");
}

Stream::Stream() { DILATRON_CU(cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING)); }

// Work still queued on the stream completes; the driver releases the stream afterwards.
Stream::~Stream() { warn_unless_success(driver::api().cuStreamDestroy(stream_), "cuStreamDestroy"); }

Event::Event() { DILATRON_CU(cuEventCreate(&event_, CU_EVENT_DISABLE_TIMING)); }

Event::~Event() { warn_unless_success(driver::api().cuEventDestroy(event_), "cuEventDestroy"); }

void Event::record(CUstream stream) { DILATRON_CU(cuEventRecord(event_, stream)); }

namespace {

bool finished_result(CUresult result, const char* call) {
  if (result == CUDA_ERROR_NOT_READY) return false;
  driver::check(result, call);
  return true;
}

}  // namespace

bool finished(CUstream stream) { return finished_result(driver::api().cuStreamQuery(stream), "cuStreamQuery"); }

bool finished(CUevent event) { return finished_result(driver::api().cuEventQuery(event), "cuEventQuery"); }

void stream_wait(CUstream stream, CUevent event) { DILATRON_CU(cuStreamWaitEvent(stream, event, 0)); }

Drain::~Drain() { driver::api().cuStreamSynchronize(stream); }

}  // namespace dilatron::ring
