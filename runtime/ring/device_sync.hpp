// The driver objects the GPU transports order their copies with: a stream and an event owned by a
// value, the caller's context made current for a scope, and non-blocking completion queries (the
// watchdog polls them instead of blocking in the driver, so a stalled peer cannot hang a rank).
#pragma once

#include <cuda.h>

namespace dilatron::ring {

// Ranks run on threads the executor owns, which have no current context; each call into a transport
// pushes the one its communicator was created in and pops it again, leaving the thread as it was.
class ContextScope {
 public:
  explicit ContextScope(CUcontext context);
  ~ContextScope();
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;
};

// A non-blocking stream in the current context: it never synchronises with the legacy default stream,
// so a transfer does not wait for unrelated work of the process.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  CUstream get() const noexcept { return stream_; }

 private:
  CUstream stream_ = nullptr;
};

// An event without timing (the cheapest kind to record and wait on).
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  CUevent get() const noexcept { return event_; }
  void record(CUstream stream);

 private:
  CUevent event_ = nullptr;
};

// True when all work the stream (or the work the event captured) holds has finished, false while it
// runs; throws dilatron::Error when that work failed.
bool finished(CUstream stream);
bool finished(CUevent event);

// `stream` waits, on the GPU, for the work `event` captured when it was last recorded.
void stream_wait(CUstream stream, CUevent event);

// Drains the stream before the buffers it may still read are freed, on every way out: declare it after
// them. Unchecked: a destructor cannot throw, and on the way out through an error that error is the
// one to report.
struct Drain {
  CUstream stream;
  ~Drain();
};

}  // namespace dilatron::ring
