// The NCCL transport: real GPUs, one rank per device. A step's sends and receives go into one
// ncclGroupStart/ncclGroupEnd (ungrouped point-to-point calls between two ranks that both send first
// deadlock) on a stream of the communicator's own, and a watchdog waits for them: it polls the stream
// and ncclCommGetAsyncError, and when a step makes no progress for the timeout it aborts the
// communicator (ncclCommAbort) and throws an error naming the step and the peers. Never a hang.
//
// Two ways to run a step, both of the Communicator contract:
//   exchange(step, sends, receives)  blocking. The send buffers must hold their data when it is called.
//   enqueue(step, sends, receives, wait_for), then make_wait(compute) and, in the end, wait()
//                                    for overlapping compute and transfer (not blocking here). enqueue queues the step
//                                    behind the work `wait_for` holds at that moment (the kernels that
//                                    pack its send buffers and the ones still reading the receive
//                                    buffers it reuses: pass the compute stream) and returns at once.
//                                    make_wait(compute) makes a stream wait, on the GPU, for every step
//                                    enqueued so far, before kernels read what arrived. wait() blocks
//                                    under the watchdog until all of them completed; the watchdog runs
//                                    only in wait() and exchange(), so call it at least once per pass.
// Like an ncclComm_t, one communicator is used by one thread at a time.
#pragma once

#include <cuda.h>
#include <nccl.h>

#include <chrono>
#include <memory>

#include "runtime/ring/communicator.hpp"
#include "runtime/ring/timeout.hpp"

namespace dilatron::ring {

class NcclCommunicator final : public Communicator {
 public:
  // Over the caller's communicator, which stays the caller's: it is never destroyed here. But a
  // timeout or an NCCL failure aborts it (ncclCommAbort frees it), after which the caller must neither
  // use nor destroy it. The current context (the current device's primary one when there is none)
  // must be on the communicator's device.
  explicit NcclCommunicator(ncclComm_t comm, std::chrono::milliseconds timeout = ring_timeout());
  // Joins the clique `id` as `rank` of `size` (ncclCommInitRank) on the current context's device, and
  // owns the communicator.
  static std::unique_ptr<NcclCommunicator> create(const ncclUniqueId& id, int rank, int size,
                                                  std::chrono::milliseconds timeout = ring_timeout());
  // Waits for the steps still queued (under the watchdog), then destroys what it owns.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Message spans are device memory on the communicator's device.
  void exchange(int step, std::span<const Message> sends, std::span<const Message> receives) override;

  void enqueue(int step, std::span<const Message> sends, std::span<const Message> receives, CUstream wait_for) override;
  void make_wait(CUstream stream) override;
  void wait() override;

  CUstream stream() const noexcept;
  ncclComm_t comm() const noexcept { return comm_; }

 private:
  struct Device;
  NcclCommunicator(ncclComm_t comm, bool owned, std::chrono::milliseconds timeout);
  void usable() const;
  // Completed steps leave the queue; throws (after aborting) on an asynchronous NCCL error.
  void reap();
  // ncclSuccess or ncclInProgress; throws for an asynchronous NCCL error.
  ncclResult_t async_state();
  void check_async_error();
  [[noreturn]] void abort_and_throw(const std::exception& cause);

  ncclComm_t comm_;
  bool owned_;
  std::chrono::milliseconds timeout_;
  int rank_ = 0, size_ = 0;
  CUcontext context_ = nullptr;
  std::string aborted_;  // why the communicator was aborted; empty while it works
  std::unique_ptr<Device> device_;
};

}  // namespace dilatron::ring
