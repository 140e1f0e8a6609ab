// Where the ranks of one process meet: the Local transport's matching of sends to receives by (step,
// sender, receiver), kept apart from the device copy so it runs, and is tested, with host memory and
// threads. Ranks call exchange() from their own threads, as NCCL ranks do.
//
// A message goes through four states: posted by its sender (with a `ready` token the copy must wait
// for), taken by its receiver, delivered (the receiver's copy is queued and has given a token the
// sender must wait for before reusing its buffer), acknowledged by the sender. A rank leaves exchange()
// only when all of its messages are acknowledged, so tokens may be reused in its next step: nobody
// waits on them any more.
#pragma once

#include <dilatron/error.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "runtime/ring/communicator.hpp"

namespace dilatron::ring {

class Rendezvous {
 public:
  using Token = void*;  // opaque here; the device layer passes CUevents
  struct Hooks {
    // On the receiver's thread, once both sides of a message are there: moves `from` into `to` (equal
    // sizes) after `ready`, and returns what the sender waits for before reusing `from`.
    std::function<Token(std::span<const std::byte> from, std::span<std::byte> to, Token ready)> deliver;
    // On the sender's thread, once per message it sent, with deliver's token.
    std::function<void(Token delivered)> delivered;
  };

  Rendezvous(int size, std::chrono::milliseconds timeout);

  int size() const noexcept { return size_; }
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }

  // One rank's step: posts `sends` and fills `receives`; returns when every one of them is delivered
  // and acknowledged. Throws dilatron::Error, and fails the group so no other rank waits in vain, for
  // a bad message (a peer out of range or itself, sizes that differ), a
  // peer that does not answer within the timeout (the error names the step, the peer and the limit),
  // or a hook that throws. After a failure every waiting and later exchange throws its reason.
  void exchange(int rank, int step, std::span<const Message> sends, std::span<const Message> receives, Token ready,
                const Hooks& hooks);

  // Breaks the group with `why` (the first reason is kept). A transport failure is ErrorKind::cuda; a
  // bad message or size (a broken schedule) is ErrorKind::invalid.
  void fail(const std::string& why, ErrorKind kind = ErrorKind::cuda);

 private:
  enum class State { posted, taking, delivered, acknowledged };
  struct Slot {
    int step, sender, receiver;
    std::span<const std::byte> data;
    Token ready = nullptr, receipt = nullptr;
    State state = State::posted;
  };
  // Both sides hold a message's slot; the board lists those not yet taken, oldest first, so a sender
  // that starts the next pass (step numbers repeat) is never confused with the last one.
  using Held = std::vector<std::shared_ptr<Slot>>;
  using Lock = std::unique_lock<std::mutex>;
  using Clock = std::chrono::steady_clock;

  void check_messages(int rank, int step, std::span<const Message> sends, std::span<const Message> receives);
  void receive_all(Lock& lock, int rank, int step, std::span<const Message> receives, const Hooks& hooks,
                   Clock::time_point deadline, Held& taken);
  void acknowledge_sends(Lock& lock, int rank, int step, const Held& sent, const Hooks& hooks,
                         Clock::time_point deadline);
  // Returns once `done` holds; throws the group's failure, failing it with `late()` at the deadline.
  void wait_for(Lock& lock, Clock::time_point deadline, const std::function<bool()>& done,
                const std::function<std::string()>& late);
  // With the mutex held: keeps the first reason, wakes every rank and throws the reason kept.
  [[noreturn]] void fail_and_throw(const std::string& why, ErrorKind kind = ErrorKind::cuda);
  // After a failure: takes this rank's untaken messages off the board and returns only when no
  // receiver is still copying out of its buffers.
  void withdraw(Lock& lock, const Held& sent);
  std::string limit() const;

  const int size_;
  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable changed_;
  Held board_;
  std::string failure_;
  ErrorKind failure_kind_ = ErrorKind::cuda;
};

}  // namespace dilatron::ring
