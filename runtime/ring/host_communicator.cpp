#include "runtime/ring/host_communicator.hpp"

#include <dilatron/error.hpp>

#include <fmt/format.h>

#include <cstring>

namespace dilatron::ring {

class HostCommunicator final : public Communicator {
 public:
  HostCommunicator(HostGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }
  void abort(const std::string& reason) override { group_.abort(reason); }

  void exchange(int step, std::span<const Message> sends, std::span<const Message> receives) override {
    for (const Message& m : sends) {
      check_peer(m.peer, step);
      group_.post({step, rank_, m.peer}, m.data);
    }
    for (const Message& m : receives) {
      check_peer(m.peer, step);
      const std::vector<std::byte> data = group_.take({step, m.peer, rank_});
      if (data.size() != m.data.size()) {
        throw Error(fmt::format("ring step {}: rank {} sent {} bytes to rank {}, which expected {}", step, m.peer,
                                data.size(), rank_, m.data.size()));
      }
      std::memcpy(m.data.data(), data.data(), data.size());
    }
  }

 private:
  void check_peer(int peer, int step) const {
    if (peer < 0 || peer >= group_.size() || peer == rank_) {
      throw Error(fmt::format("ring step {}: rank {} addressed rank {} (group of {})", step, rank_, peer, group_.size()));
    }
  }

  HostGroup& group_;
  int rank_;
};

HostGroup::HostGroup(int size, std::chrono::milliseconds timeout) : size_(size), timeout_(timeout) {
  if (size < 1) throw Error(fmt::format("a ring needs at least one rank, got {}", size));
}

std::unique_ptr<Communicator> HostGroup::rank(int rank) {
  if (rank < 0 || rank >= size_) throw Error(fmt::format("rank {} is outside a group of {}", rank, size_));
  return std::make_unique<HostCommunicator>(*this, rank);
}

void HostGroup::abort(const std::string& reason) {
  std::lock_guard lock(mutex_);
  if (aborted_.empty()) aborted_ = reason;
  arrived_.notify_all();
}

void HostGroup::post(const Key& key, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  mailbox_[key].emplace_back(data.begin(), data.end());
  arrived_.notify_all();
}

std::vector<std::byte> HostGroup::take(const Key& key) {
  const auto [step, source, destination] = key;
  std::unique_lock lock(mutex_);
  const bool ready = arrived_.wait_for(lock, timeout_, [&] { return mailbox_.count(key) || !aborted_.empty(); });
  if (!aborted_.empty()) throw Error(fmt::format("ring step {}: rank {} stopped: {}", step, destination, aborted_));
  if (!ready) {
    throw Error(fmt::format("ring step {}: rank {} received nothing from rank {} within {} s (a stalled or failed "
                            "peer; DILATRON_RING_TIMEOUT_S sets the limit)",
                            step, destination, source, double(timeout_.count()) / 1000));
  }
  auto it = mailbox_.find(key);
  std::vector<std::byte> data = std::move(it->second.front());
  it->second.pop_front();
  if (it->second.empty()) mailbox_.erase(it);
  return data;
}

}  // namespace dilatron::ring
