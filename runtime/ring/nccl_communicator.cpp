#include "runtime/ring/nccl_communicator.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <deque>
#include <vector>

#include "common/log.hpp"
#include "runtime/driver.hpp"
#include "runtime/ring/device_sync.hpp"
#include "runtime/ring/nccl.hpp"

namespace dilatron::ring {
namespace {

std::vector<int> peers_of(std::span<const Message> messages) {
  std::vector<int> peers;
  for (const Message& m : messages) peers.push_back(m.peer);
  return peers;
}

}  // namespace

struct NcclCommunicator::Device {
  // A step on the way: its peers, for the errors, and an event recorded after its group.
  struct Pending {
    int step;
    std::vector<int> to, from;
    std::unique_ptr<Event> done;

    std::string describe() const {
      return fmt::format("ring step {} (sends to ranks [{}], receives from ranks [{}])", step, fmt::join(to, ", "),
                         fmt::join(from, ", "));
    }
  };

  Stream stream;
  Event upstream;  // where `wait_for` stood when a step was enqueued
  std::deque<Pending> pending;
  std::vector<std::unique_ptr<Event>> spare;  // events of completed steps, nobody waits on them any more
};

NcclCommunicator::NcclCommunicator(ncclComm_t comm, std::chrono::milliseconds timeout)
    : NcclCommunicator(comm, false, timeout) {}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, bool owned, std::chrono::milliseconds timeout)
    : comm_(comm), owned_(owned), timeout_(timeout) {
  if (!comm_) throw Error("NcclCommunicator: the NCCL communicator is null");
  DILATRON_NCCL(ncclCommCount(comm_, &size_));
  DILATRON_NCCL(ncclCommUserRank(comm_, &rank_));
  int nccl_device = -1;
  DILATRON_NCCL(ncclCommCuDevice(comm_, &nccl_device));
  context_ = driver::current_context();
  ContextScope scope(context_);
  CUdevice device = 0;
  DILATRON_CU(cuCtxGetDevice(&device));
  if (int(device) != nccl_device) {
    throw Error(fmt::format("the NCCL communicator of rank {} is on GPU {} but the current CUDA context is on GPU {}: "
                            "make a context of GPU {} current first",
                            rank_, nccl_device, int(device), nccl_device));
  }
  device_ = std::make_unique<Device>();
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(const ncclUniqueId& id, int rank, int size,
                                                           std::chrono::milliseconds timeout) {
  if (size < 1 || rank < 0 || rank >= size) {
    throw Error(fmt::format("NCCL rank {} of {}: needs 0 <= rank < size", rank, size));
  }
  const nccl::Api& api = nccl::api();
  driver::current_context();  // NCCL joins on the current context's device; make sure there is one
  ncclComm_t comm = nullptr;
  DILATRON_NCCL(ncclCommInitRank(&comm, size, id, rank));
  try {
    return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(comm, true, timeout));
  } catch (...) {
    api.ncclCommDestroy(comm);  // already failing; the first error is the one worth reporting
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  try {
    if (aborted_.empty()) wait();  // transfers still read and write the caller's buffers
  } catch (const std::exception& e) {
    log::write(log::Level::warn, "while closing the NCCL communicator: {}", e.what());
  }
  try {
    ContextScope scope(context_);
    device_.reset();
  } catch (...) {  // the context is gone: so are the stream and events
  }
  if (owned_ && aborted_.empty()) {
    if (const ncclResult_t r = nccl::api().ncclCommDestroy(comm_); r != ncclSuccess) {
      log::write(log::Level::warn, "ncclCommDestroy failed ({}): {}", int(r), nccl::api().ncclGetErrorString(r));
    }
  }
}

CUstream NcclCommunicator::stream() const noexcept { return device_->stream.get(); }

void NcclCommunicator::usable() const {
  if (!aborted_.empty()) {
    throw Error("the NCCL communicator was aborted after an earlier failure: " + aborted_, ErrorKind::cuda);
  }
}

void NcclCommunicator::abort_and_throw(const std::exception& cause) {
  aborted_ = cause.what();
  if (device_) device_->pending.clear();
  if (const ncclResult_t r = nccl::api().ncclCommAbort(comm_); r != ncclSuccess) {
    log::write(log::Level::warn, "ncclCommAbort failed ({}) after: {}", int(r), aborted_);
  }
  if (const auto* error = dynamic_cast<const Error*>(&cause)) throw *error;
  throw Error(aborted_, ErrorKind::cuda);
}

ncclResult_t NcclCommunicator::async_state() {
  ncclResult_t state = ncclSuccess;
  DILATRON_NCCL(ncclCommGetAsyncError(comm_, &state));
  nccl::check(state, "ncclCommGetAsyncError");
  return state;
}

void NcclCommunicator::check_async_error() { async_state(); }

void NcclCommunicator::reap() {
  check_async_error();
  Device& d = *device_;
  while (!d.pending.empty() && finished(d.pending.front().done->get())) {
    d.spare.push_back(std::move(d.pending.front().done));
    d.pending.pop_front();
  }
}

void NcclCommunicator::enqueue(int step, std::span<const Message> sends, std::span<const Message> receives,
                               CUstream wait_for) {
  usable();
  for (const auto& messages : {sends, receives}) {
    for (const Message& m : messages) {
      if (m.peer < 0 || m.peer >= size_ || m.peer == rank_) {
        throw Error(fmt::format("ring step {}: rank {} cannot exchange with rank {} (NCCL ranks 0..{}, never itself)",
                                step, rank_, m.peer, size_ - 1));
      }
    }
  }
  ContextScope scope(context_);
  Device& d = *device_;
  try {
    reap();
    const CUstream stream = d.stream.get();
    if (wait_for) {
      d.upstream.record(wait_for);
      stream_wait(stream, d.upstream.get());
    }
    const nccl::Api& api = nccl::api();
    DILATRON_NCCL(ncclGroupStart());
    try {
      // Zero-byte messages are skipped on both sides alike (sizes are equal by contract).
      for (const Message& m : sends) {
        if (!m.data.empty()) DILATRON_NCCL(ncclSend(m.data.data(), m.data.size(), ncclUint8, m.peer, comm_, stream));
      }
      for (const Message& m : receives) {
        if (!m.data.empty()) DILATRON_NCCL(ncclRecv(m.data.data(), m.data.size(), ncclUint8, m.peer, comm_, stream));
      }
    } catch (...) {
      api.ncclGroupEnd();  // close the group; the call that failed is the error to report
      throw;
    }
    const ncclResult_t ended = api.ncclGroupEnd();
    nccl::check(ended, "ncclGroupEnd()");
    // A non-blocking communicator queues the transfers in the background: the event below must come
    // after them on the stream.
    if (ended == ncclInProgress && !poll_until([&] { return async_state() != ncclInProgress; }, timeout_)) {
      throw Error(fmt::format("ring step {}: NCCL did not queue the step's transfers within {:g} s", step,
                              double(timeout_.count()) / 1000),
                  ErrorKind::cuda);
    }
    Device::Pending step_record{step, peers_of(sends), peers_of(receives), nullptr};
    if (d.spare.empty()) d.spare.push_back(std::make_unique<Event>());
    step_record.done = std::move(d.spare.back());
    d.spare.pop_back();
    step_record.done->record(stream);
    d.pending.push_back(std::move(step_record));
  } catch (const std::exception& e) {
    abort_and_throw(e);  // the peers would otherwise wait for this rank's half of the step
  }
}

void NcclCommunicator::make_wait(CUstream stream) {
  usable();
  ContextScope scope(context_);
  if (!device_->pending.empty()) stream_wait(stream, device_->pending.back().done->get());
}

void NcclCommunicator::wait() {
  usable();
  ContextScope scope(context_);
  Device& d = *device_;
  while (!d.pending.empty()) {
    const Device::Pending& oldest = d.pending.front();
    bool done = false;
    try {
      // The limit counts from the last progress: a long pass is fine as long as steps keep completing.
      done = poll_until(
          [&] {
            check_async_error();
            return finished(oldest.done->get());
          },
          timeout_);
    } catch (const Error& e) {
      abort_and_throw(Error(fmt::format("{} over NCCL failed: {}; the communicator was aborted", oldest.describe(),
                                        e.what()),
                            ErrorKind::cuda));
    }
    if (!done) {
      abort_and_throw(Error(fmt::format("{} over NCCL did not finish within {:g} s (a peer stopped or never reached "
                                        "this step); the communicator was aborted (ncclCommAbort). "
                                        "DILATRON_RING_TIMEOUT_S sets the limit",
                                        oldest.describe(), double(timeout_.count()) / 1000),
                            ErrorKind::cuda));
    }
    d.spare.push_back(std::move(d.pending.front().done));
    d.pending.pop_front();
  }
}

void NcclCommunicator::exchange(int step, std::span<const Message> sends, std::span<const Message> receives) {
  enqueue(step, sends, receives, nullptr);
  wait();
}

}  // namespace dilatron::ring
