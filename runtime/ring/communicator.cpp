#include "runtime/ring/communicator.hpp"

#include "runtime/driver.hpp"

namespace dilatron::ring {

// A blocking transport: its sends must hold their data, and the buffers it receives into must be free,
// before exchange() starts.
void Communicator::enqueue(int step, std::span<const Message> sends, std::span<const Message> receives,
                           dilatron::Stream wait_for) {
  if (wait_for) DILATRON_CU(cuStreamSynchronize(wait_for));
  exchange(step, sends, receives);
}

}  // namespace dilatron::ring
