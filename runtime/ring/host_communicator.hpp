// P ranks as threads of one process, exchanging host memory: the transport the CPU tests and
// `dilatron run --ranks P --device cpu` use, so the ring's schedule runs on any machine.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/ring/communicator.hpp"

namespace dilatron::ring {

// The shared mailbox of one group. Sends are buffered (a sender never waits for its receiver); a
// receive waits for its message until the timeout. Several messages between one pair in one step are
// matched in the order they were posted, as NCCL matches them. abort() wakes every waiting rank with the reason,
// so one rank's failure ends the others' waits at once instead of at the timeout.
class HostGroup {
 public:
  HostGroup(int size, std::chrono::milliseconds timeout);
  int size() const noexcept { return size_; }
  // The communicator of one rank; valid while the group lives. Its abort() aborts the group.
  std::unique_ptr<Communicator> rank(int rank);
  void abort(const std::string& reason);

 private:
  friend class HostCommunicator;
  using Key = std::tuple<int, int, int>;  // step, source, destination
  void post(const Key& key, std::span<const std::byte> data);
  std::vector<std::byte> take(const Key& key);

  int size_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::map<Key, std::deque<std::vector<std::byte>>> mailbox_;
  std::string aborted_;
};

}  // namespace dilatron::ring
