// The Local transport: P logical ranks in one process on one GPU, for proving the ring's schedule with
// real kernels where NCCL cannot (it refuses two ranks on one device). Each rank has its own stream;
// a message is a device-to-device copy that the receiver queues on its stream after the sender's
// `ready` event, and the sender's stream waits for the copy's event before anything may reuse its
// buffer. Ranks call exchange() from their own threads, one thread per rank, as with NCCL.
#pragma once

#include <cuda.h>

#include <chrono>
#include <memory>
#include <vector>

#include "runtime/ring/communicator.hpp"
#include "runtime/ring/rendezvous.hpp"
#include "runtime/ring/timeout.hpp"

namespace dilatron::ring {

class LocalCommunicator final : public Communicator {
 public:
  // `size` ranks sharing one rendezvous, in the current context (the current device's primary one
  // when there is none). A rank that does not answer within `timeout` fails the whole group.
  static std::vector<std::unique_ptr<LocalCommunicator>> group(int size,
                                                               std::chrono::milliseconds timeout = ring_timeout());
  ~LocalCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return rendezvous_->size(); }
  // Message spans are device memory of the group's context. The send buffers must hold their data when
  // it is called: written by this rank's stream() or already synchronised. Returns when this rank's
  // copies in and out have completed.
  void exchange(int step, std::span<const Message> sends, std::span<const Message> receives) override;

  // The stream this rank's copies run on.
  CUstream stream() const noexcept;

 private:
  struct Device;
  LocalCommunicator(std::shared_ptr<Rendezvous> rendezvous, int rank, CUcontext context);

  std::shared_ptr<Rendezvous> rendezvous_;
  int rank_;
  CUcontext context_;
  std::unique_ptr<Device> device_;
};

}  // namespace dilatron::ring
