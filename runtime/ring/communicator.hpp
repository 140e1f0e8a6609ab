// The seam between the ring's schedule and the wire. An executor walks a RingPlan and hands each
// step's messages to a Communicator; Host (threads in one process, host memory), Local (P ranks on one
// GPU, device copies) and NCCL (real GPUs) implement it.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace dilatron::ring {

// One message: to `peer` (a send) or from `peer` (a receive). A receive's span is the buffer to fill;
// its size is known from the plan and must equal the size sent.
struct Message {
  int peer = 0;
  std::span<std::byte> data;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // All of this rank's sends and receives of one step, as one group: returns when every one has
  // completed. A failed transport or a peer that does not answer within the timeout throws
  // dilatron::Error naming the step and the peer; it never hangs.
  virtual void exchange(int step, std::span<const Message> sends, std::span<const Message> receives) = 0;
};

}  // namespace dilatron::ring
